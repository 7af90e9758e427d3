//! The PIIX4 power management function (00:01.3): QEMU 7.2's identity and the PM base
//! (PMBA, 0x40) and enable (PMREGMISC, 0x80) registers. The PM register block
//! ([`crate::hw::pm::PowerManagement`]) appears in the I/O space where firmware puts it, as
//! on QEMU; direct kernel boot, which has no firmware, starts with it enabled at 0x600.

use std::sync::{Arc, Mutex};

use super::{INTEL_VENDOR, QEMU_SUBSYSTEM, QEMU_SUBSYSTEM_VENDOR};
use crate::hw::bus::PioDevice;
use crate::hw::pci::config::{ConfigSpace, Identity, INTERRUPT_PIN, STATUS};
use crate::hw::pci::{IoSpace, PciFunction};
use crate::hw::pm::PM_IO_LEN;

pub const PIIX4_PM_DEVICE_ID: u16 = 0x7113;
const PIIX4_PM_REVISION: u8 = 0x03;
const CLASS_OTHER_BRIDGE: u32 = 0x06_80_00;
/// PM base address; bit 0 reads as 1 (an I/O address).
const PMBA: usize = 0x40;
const PMBA_IO_SPACE: u32 = 1;
const PMBA_ADDRESS_MASK: u32 = 0xffc0;
/// PMREGMISC bit 0 enables the PM I/O block.
const PMREGMISC: usize = 0x80;
const PMREGMISC_PMIOSE: u8 = 1;
/// DEVACTB bit: SMM disabled (QEMU's value when the machine has no SMM, as under KVM here).
const DEVACTB_3: usize = 0x5b;
const SMM_ALREADY_INITIALIZED: u8 = 0x02;
/// SMBus base and host configuration, as QEMU sets them (no SMBus controller is modelled
/// behind them yet).
const SMBUS_BASE: usize = 0x90;
const SMBUS_HOST_CONFIG: usize = 0xd2;

/// Where the PM block is placed without firmware (and where SeaBIOS puts it).
pub const DIRECT_BOOT_PM_BASE: u16 = 0x600;

pub struct Piix4Pm {
    config: Mutex<ConfigSpace>,
    io_space: Arc<IoSpace>,
    block: Arc<dyn PioDevice>,
    /// Where the block is mapped now.
    mapped_at: Mutex<Option<u16>>,
}

impl Piix4Pm {
    /// `preset_base`: the power-on state has the block enabled there (direct kernel boot);
    /// a reset returns to it.
    pub fn new(
        io_space: Arc<IoSpace>,
        block: Arc<dyn PioDevice>,
        preset_base: Option<u16>,
    ) -> Piix4Pm {
        let mut config = ConfigSpace::new(Identity {
            vendor: INTEL_VENDOR,
            device: PIIX4_PM_DEVICE_ID,
            revision: PIIX4_PM_REVISION,
            class: CLASS_OTHER_BRIDGE,
            subsystem_vendor: QEMU_SUBSYSTEM_VENDOR,
            subsystem: QEMU_SUBSYSTEM,
            header_type: 0,
        });
        config.set_u16(STATUS, 0x0280);
        config.set_u8(INTERRUPT_PIN, 1);
        config.set_u8(DEVACTB_3, SMM_ALREADY_INITIALIZED);
        config.set_u8(SMBUS_BASE, 1);
        config.set_u8(SMBUS_HOST_CONFIG, 0x09);
        match preset_base {
            Some(base) => {
                config.set_u32(PMBA, u32::from(base) | PMBA_IO_SPACE);
                config.set_u8(PMREGMISC, PMREGMISC_PMIOSE);
            }
            None => config.set_u32(PMBA, PMBA_IO_SPACE),
        }
        let function = Piix4Pm {
            config: Mutex::new(config),
            io_space,
            block,
            mapped_at: Mutex::new(None),
        };
        function.update_mapping(&function.config.lock().unwrap());
        function
    }

    /// Where the PM block answers now, if anywhere.
    pub fn pm_base(&self) -> Option<u16> {
        *self.mapped_at.lock().unwrap()
    }

    fn update_mapping(&self, config: &ConfigSpace) {
        let wanted = (config.u8(PMREGMISC) & PMREGMISC_PMIOSE != 0)
            .then(|| (config.u32(PMBA) & PMBA_ADDRESS_MASK) as u16);
        let mut mapped = self.mapped_at.lock().unwrap();
        if *mapped == wanted {
            return;
        }
        if let Some(old) = mapped.take() {
            self.io_space.unmap(old);
        }
        if let Some(base) = wanted {
            // A base that collides with another window leaves the block off, as a real
            // decoder conflict would make it unreachable.
            if self
                .io_space
                .map(base, PM_IO_LEN, self.block.clone())
                .is_ok()
            {
                *mapped = Some(base);
            }
        }
    }
}

impl PciFunction for Piix4Pm {
    fn describe(&self) -> Option<crate::hw::describe::PciDescription> {
        let mut description = crate::hw::describe::PciDescription::new(QEMU_TYPE);
        description.props = qdev_props();
        description.gpios = vec![
            crate::hw::describe::Gpio::output("smi-irq", 1),
            crate::hw::describe::Gpio::output("", 1),
        ];
        Some(description)
    }

    fn config_read(&self, offset: u8) -> u32 {
        self.config.lock().unwrap().read_dword(offset)
    }

    fn config_write(&self, offset: u8, value: u32, mask: u32) {
        let mut config = self.config.lock().unwrap();
        config.write_dword(offset, value, mask);
        let pmba = config.u32(PMBA) | PMBA_IO_SPACE;
        config.write_dword(PMBA as u8, pmba, u32::MAX);
        self.update_mapping(&config);
    }

    fn reset(&self) {
        let mut config = self.config.lock().unwrap();
        config.reset();
        self.update_mapping(&config);
    }
}

/// QEMU's type name of the power-management function.
pub const QEMU_TYPE: &str = "PIIX4_PM";

/// The function's own properties as `info qtree` shows them, for this machine: the board's
/// SMBus base (no SMBus controller answers there; QEMU's value then follows firmware's
/// programming of it), no S3 and no ACPI PCI or memory hotplug in the ACPI tables, S4 with
/// QEMU's SLP_TYP, no SMM.
pub fn qdev_props() -> Vec<crate::hw::describe::QdevProp> {
    use crate::hw::describe::QdevProp;
    vec![
        QdevProp::uint("smb_io_base", 0xb100),
        QdevProp::uint("disable_s3", 1),
        QdevProp::uint("disable_s4", 0),
        QdevProp::uint("s4_val", 2),
        QdevProp::bool("acpi-pci-hotplug-with-bridge-support", false),
        QdevProp::bool("acpi-root-pci-hotplug", false),
        QdevProp::bool("memory-hotplug-support", false),
        QdevProp::bool("smm-compat", false),
        QdevProp::bool("smm-enabled", false),
        QdevProp::bool("x-not-migrate-acpi-index", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Marker;

    impl PioDevice for Marker {
        fn read(&self, offset: u16, data: &mut [u8]) {
            data.fill(0x40 + offset as u8);
        }
        fn write(&self, _offset: u16, _data: &[u8]) {}
    }

    fn read_port(space: &IoSpace, port: u16) -> u8 {
        let mut byte = [0u8];
        space.read(port, &mut byte);
        byte[0]
    }

    #[test]
    fn identity_matches_qemu() {
        let pm = Piix4Pm::new(Arc::new(IoSpace::new()), Arc::new(Marker), None);
        assert_eq!(pm.config_read(0), 0x7113_8086);
        assert_eq!(pm.config_read(8), 0x0680_0003);
        assert_eq!(pm.config_read(0x3c) >> 8 & 0xff, 1, "INTA");
        assert_eq!(pm.config_read(0x40), 1);
    }

    #[test]
    fn firmware_moves_the_pm_block() {
        let space = Arc::new(IoSpace::new());
        let pm = Piix4Pm::new(space.clone(), Arc::new(Marker), None);
        assert_eq!(pm.pm_base(), None);
        assert_eq!(read_port(&space, 0x608), 0xff);
        // SeaBIOS: PMBA = 0x601, then PMREGMISC = 1.
        pm.config_write(0x40, 0x600, u32::MAX);
        assert_eq!(pm.config_read(0x40), 0x601);
        assert_eq!(pm.pm_base(), None, "not enabled yet");
        pm.config_write(0x80, 1, 0xff);
        assert_eq!(pm.pm_base(), Some(0x600));
        assert_eq!(read_port(&space, 0x608), 0x48);
        pm.config_write(0x40, 0xb001, u32::MAX);
        assert_eq!(read_port(&space, 0x608), 0xff);
        assert_eq!(read_port(&space, 0xb004), 0x44);
        pm.reset();
        assert_eq!(pm.pm_base(), None);
        assert_eq!(read_port(&space, 0xb004), 0xff);
    }

    #[test]
    fn direct_boot_starts_enabled_at_0x600() {
        let space = Arc::new(IoSpace::new());
        let pm = Piix4Pm::new(space.clone(), Arc::new(Marker), Some(DIRECT_BOOT_PM_BASE));
        assert_eq!(pm.pm_base(), Some(0x600));
        pm.config_write(0x80, 0, 0xff);
        assert_eq!(pm.pm_base(), None);
        pm.reset();
        assert_eq!(pm.pm_base(), Some(0x600));
    }
}
