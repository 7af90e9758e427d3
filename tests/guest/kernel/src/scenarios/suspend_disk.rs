//! `suspend-disk`: the guest enters ACPI S4 as an OS does after saving its memory to disk:
//! the sleep type from the DSDT's `\_S4`, SLP_EN in the PM1a control block from the FADT.
//! The machine turns off (QEMU: SUSPEND_DISK, then SHUTDOWN).

use crate::console::Dec;
use crate::port::{inw, outw};
use crate::start_info::StartInfo;
use crate::{acpi, kprintln, pit};

const PM1_CNT_SLP_EN: u16 = 1 << 13;

pub fn run(info: &StartInfo) {
    let Some(fadt) = acpi::find_rsdp(info)
        .and_then(|(rsdp, _)| acpi::find_table(rsdp, b"FACP"))
        .map(acpi::fadt)
    else {
        kprintln!("suspend-disk: no FADT");
        return;
    };
    let Some(s4) = acpi::sleep_type(fadt.dsdt, b"_S4_") else {
        kprintln!("suspend-disk: the DSDT has no \\_S4");
        return;
    };
    kprintln!("suspend-disk: dsdt \\_S4 slp_typ ", Dec(u64::from(s4)));
    let control = fadt.pm1a_control as u16;
    outw(
        control,
        (inw(control) & !(7 << 10)) | (u16::from(s4) << 10) | PM1_CNT_SLP_EN,
    );
    pit::delay_ms(2000);
    kprintln!("suspend-disk: S4 did not turn the machine off");
}
