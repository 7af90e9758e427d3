//! The i440FX PCI host bridge (00:00.0): QEMU 7.2's identity, the PAM registers that shadow
//! the BIOS area and the SMRAM register.

use std::sync::{Arc, Mutex};

use super::pam::{self, ShadowControl, PAM_FIRST_REGISTER, PAM_REGISTER_COUNT};
use super::{INTEL_VENDOR, QEMU_SUBSYSTEM, QEMU_SUBSYSTEM_VENDOR};
use crate::hw::pci::config::{ConfigSpace, Identity};
use crate::hw::pci::PciFunction;

pub const I440FX_DEVICE_ID: u16 = 0x1237;
const I440FX_REVISION: u8 = 0x02;
const CLASS_HOST_BRIDGE: u32 = 0x06_00_00;
/// SMRAM control: QEMU starts it at 0x02 (C_BASE_SEG: SMRAM at 0xA0000, closed).
const SMRAM: usize = 0x72;
const SMRAM_POWER_ON: u8 = 0x02;
/// Where QEMU puts the RAM size in 8 MiB units for coreboot.
const RAM_SIZE_8M: usize = 0x57;

/// The host bridge function.
pub struct I440fx {
    config: Mutex<ConfigSpace>,
    shadow: Arc<dyn ShadowControl>,
    /// PAM values at power-on and reset (all zero on a PC; all RAM for direct kernel boot,
    /// which has no firmware to program them).
    initial_pam: [u8; PAM_REGISTER_COUNT],
}

impl I440fx {
    pub fn new(
        ram_below_4g: u64,
        initial_pam: [u8; PAM_REGISTER_COUNT],
        shadow: Arc<dyn ShadowControl>,
    ) -> I440fx {
        let mut config = ConfigSpace::new(Identity {
            vendor: INTEL_VENDOR,
            device: I440FX_DEVICE_ID,
            revision: I440FX_REVISION,
            class: CLASS_HOST_BRIDGE,
            subsystem_vendor: QEMU_SUBSYSTEM_VENDOR,
            subsystem: QEMU_SUBSYSTEM,
            header_type: 0,
        });
        config.set_u8(SMRAM, SMRAM_POWER_ON);
        config.set_u8(RAM_SIZE_8M, (ram_below_4g >> 23).min(255) as u8);
        for (i, value) in initial_pam.iter().enumerate() {
            config.set_u8(PAM_FIRST_REGISTER + i, *value);
        }
        let bridge = I440fx {
            config: Mutex::new(config),
            shadow,
            initial_pam,
        };
        bridge.shadow.apply(&pam::decode(&initial_pam));
        bridge
    }

    fn pam_registers(config: &ConfigSpace) -> [u8; PAM_REGISTER_COUNT] {
        std::array::from_fn(|i| config.u8(PAM_FIRST_REGISTER + i))
    }
}

impl PciFunction for I440fx {
    fn describe(&self) -> Option<crate::hw::describe::PciDescription> {
        Some(crate::hw::describe::PciDescription::new(QEMU_TYPE))
    }

    fn config_read(&self, offset: u8) -> u32 {
        self.config.lock().unwrap().read_dword(offset)
    }

    fn config_write(&self, offset: u8, value: u32, mask: u32) {
        let mut config = self.config.lock().unwrap();
        let before = Self::pam_registers(&config);
        config.write_dword(offset, value, mask);
        let after = Self::pam_registers(&config);
        if before != after {
            // Under the lock, so two vCPUs programming PAM apply their maps in order.
            self.shadow.apply(&pam::decode(&after));
        }
    }

    fn reset(&self) {
        let mut config = self.config.lock().unwrap();
        config.reset();
        self.shadow.apply(&pam::decode(&self.initial_pam));
    }
}

/// QEMU's type names of the host bridge function and of the host (the PCI root).
pub const QEMU_TYPE: &str = "i440FX";
pub const QEMU_HOST_TYPE: &str = "i440FX-pcihost";

/// The host's properties as QEMU's `pc` machine sets them: a 2 GiB 64-bit PCI hole and no
/// IOMMU.
pub fn host_qdev_props() -> Vec<crate::hw::describe::QdevProp> {
    use crate::hw::describe::QdevProp;
    vec![
        QdevProp::size("pci-hole64-size", 2 << 30),
        QdevProp::uint("short_root_bus", 0),
        QdevProp::bool("x-pci-hole64-fix", true),
        QdevProp::bool("x-config-reg-migration-enabled", true),
        QdevProp::bool("bypass-iommu", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::pc::pam::{PamAccess, SEGMENT_COUNT};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<[PamAccess; SEGMENT_COUNT]>>);

    impl ShadowControl for Recorder {
        fn apply(&self, access: &[PamAccess; SEGMENT_COUNT]) {
            self.0.lock().unwrap().push(*access);
        }
    }

    #[test]
    fn identity_matches_qemu() {
        let bridge = I440fx::new(128 << 20, [0; 7], Arc::new(Recorder::default()));
        assert_eq!(bridge.config_read(0), 0x1237_8086);
        assert_eq!(bridge.config_read(8), 0x0600_0002);
        assert_eq!(bridge.config_read(0x2c), 0x1100_1af4);
        assert_eq!(bridge.config_read(0x54) >> 24, 16, "128 MiB in 8 MiB units");
        assert_eq!(bridge.config_read(0x70) >> 16 & 0xff, 0x02, "SMRAM");
    }

    #[test]
    fn pam_writes_remap_and_reset_restores() {
        let recorder = Arc::new(Recorder::default());
        let bridge = I440fx::new(128 << 20, [0; 7], recorder.clone());
        // SeaBIOS writes PAM as two dwords at 0x58 and 0x5c.
        bridge.config_write(0x58, 0x3333_3000, u32::MAX);
        bridge.config_write(0x5c, 0x3333_3333, u32::MAX);
        // A write that leaves PAM alone does not remap.
        bridge.config_write(0x5c, 0x3333_3333, u32::MAX);
        bridge.reset();
        let applied = recorder.0.lock().unwrap();
        assert_eq!(applied.len(), 4, "power-on, two PAM writes, reset");
        assert_eq!(applied[2], [PamAccess::Ram; SEGMENT_COUNT]);
        assert_eq!(applied[3], [PamAccess::Pci; SEGMENT_COUNT]);
        assert_eq!(bridge.config_read(0x58), 0);
    }
}
