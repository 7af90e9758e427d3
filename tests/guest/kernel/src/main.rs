//! vmscope's test kernel: a PVH kernel that runs one scenario, chosen by the first word of
//! its command line, prints the results on COM1 and powers off. The same image boots on
//! QEMU 7.2 and on vmscope; the tests compare the two serial outputs line by line, so every
//! line printed must be deterministic for a given machine configuration.

#![no_std]
#![no_main]

mod acpi;
mod ata;
mod boot;
mod console;
mod interrupts;
mod ioapic;
mod lapic;
mod mem;
mod pci;
mod phys;
mod pic;
mod pit;
mod port;
mod power;
mod scenarios;
mod serial;
mod smp;
mod start_info;

use console::{Hex, Words};
use start_info::StartInfo;

#[no_mangle]
pub extern "C" fn kernel_main(start_info_paddr: u32) -> ! {
    serial::init();
    // End whatever line firmware left unfinished, so the first kernel line starts a line.
    serial::write_bytes(b"\r\n");
    let Some(info) = StartInfo::read(u64::from(start_info_paddr)) else {
        kprintln!(
            "kernel: no hvm_start_info at ",
            Hex(u64::from(start_info_paddr), 1)
        );
        power::poweroff();
    };
    let cmdline = info.cmdline();
    let scenario = cmdline.scenario();
    kprintln!("kernel: scenario ", scenario);
    match scenarios::find(scenario) {
        Some(run) => run(&info),
        None => kprintln!("kernel: unknown scenario; known: ", Words(scenarios::NAMES)),
    }
    kprintln!("kernel: done");
    power::poweroff()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // Only the location: formatting the message would pull in core::fmt.
    match info.location() {
        Some(loc) => kprintln!(
            "kernel: panic at ",
            loc.file(),
            ":",
            console::Dec(u64::from(loc.line()))
        ),
        None => kprintln!("kernel: panic"),
    }
    power::poweroff()
}

/// Referenced by the precompiled `core` even with panic=abort; never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
