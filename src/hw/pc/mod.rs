//! The `pc` machine's chipset (i440FX host bridge, PIIX3 ISA bridge, PIIX4 power management
//! function) and the platform devices firmware talks to: fw_cfg, the CMOS RTC, system
//! control port A (0x92), the debug console port.

pub mod apm;
pub mod chipset;
pub mod debugcon;
pub mod fw_cfg;
pub mod i440fx;
pub mod pam;
pub mod piix3;
pub mod piix4_pm;
pub mod port92;
pub mod rtc;
pub mod rtc_clock;

/// QEMU's subsystem ids on every PCI function it creates (Red Hat, QEMU).
pub const QEMU_SUBSYSTEM_VENDOR: u16 = 0x1af4;
pub const QEMU_SUBSYSTEM: u16 = 0x1100;
pub const INTEL_VENDOR: u16 = 0x8086;
