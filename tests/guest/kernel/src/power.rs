//! Leaving the machine: ACPI soft-off and the i8042 CPU reset.

use crate::port::{outb, outw};

/// PM1a control block of the PIIX4 PM function as SeaBIOS programs it on QEMU's `pc`
/// machine (PM base 0x600); vmscope decodes the same port.
const PM1A_CNT: u16 = 0x604;
/// SLP_EN with SLP_TYP 0, the S5 type in QEMU's DSDT.
const PM1_CNT_SLEEP_S5: u16 = 0x2000;

/// How long the machine may take to act on a poweroff or reset request (QEMU completes it
/// asynchronously in its main loop, so the CPU runs on for a moment).
const GRACE_MS: u64 = 2000;

pub fn poweroff() -> ! {
    outw(PM1A_CNT, PM1_CNT_SLEEP_S5);
    crate::pit::delay_ms(GRACE_MS);
    crate::kprintln!("kernel: poweroff through port 0x604 did not stop the machine");
    halt_forever()
}

/// Pulses the reset line through the keyboard controller.
pub fn reset() -> ! {
    outb(0x64, 0xfe);
    crate::pit::delay_ms(GRACE_MS);
    crate::kprintln!("kernel: reset through the i8042 did not reset the machine");
    halt_forever()
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: masking interrupts and halting affects only this CPU's control flow.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
