//! `smp`: the processors the MADT lists, and how many of them actually run: every enabled AP
//! is started with INIT-SIPI-SIPI and must report in.

use crate::console::Dec;
use crate::smp::MAX_CPUS;
use crate::start_info::StartInfo;
use crate::{acpi, kprintln, lapic, smp};

pub fn run(info: &StartInfo) {
    let Some((rsdp, _)) = acpi::find_rsdp(info) else {
        kprintln!("smp: no ACPI RSDP");
        return;
    };
    let Some(madt) = acpi::find_table(rsdp, b"APIC") else {
        kprintln!("smp: no MADT");
        return;
    };
    lapic::init_boot_cpu();
    let bsp = lapic::id();

    let mut cpus = 0u64;
    let mut ap_ids = [0u32; MAX_CPUS];
    let mut aps = 0;
    acpi::for_each_madt_cpu(madt, |cpu| {
        kprintln!(
            "smp: madt cpu uid ",
            Dec(u64::from(cpu.uid)),
            " apic ",
            Dec(u64::from(cpu.apic_id)),
            if cpu.enabled { " enabled" } else { " disabled" }
        );
        if cpu.enabled {
            cpus += 1;
            if cpu.apic_id != bsp && aps < MAX_CPUS {
                ap_ids[aps] = cpu.apic_id;
                aps += 1;
            }
        }
    });

    if let Err(why) = smp::install_trampoline(info) {
        kprintln!("smp: cannot start APs: ", why);
        return;
    }
    let mut failed = [0u32; MAX_CPUS];
    let mut failures = 0;
    for &id in &ap_ids[..aps] {
        if !smp::start_ap(id) {
            failed[failures] = id;
            failures += 1;
        }
    }

    let mut online = [0u32; MAX_CPUS];
    let n = smp::online_ids(&mut online);
    let online = &mut online[..n];
    online.sort_unstable();
    kprintln!(
        "smp: madt ",
        Dec(cpus),
        " cpus, ",
        Dec(1 + n as u64),
        " online"
    );
    kprintln!("smp: bsp apic ", Dec(u64::from(bsp)));
    for &id in online.iter() {
        kprintln!("smp: ap apic ", Dec(u64::from(id)), " online");
    }
    for &id in &failed[..failures] {
        kprintln!("smp: ap apic ", Dec(u64::from(id)), " did not start");
    }
}
