//! The PIIX3 PCI-to-ISA bridge (00:01.0): QEMU 7.2's identity and the PIRQ routing
//! registers firmware programs, and the INTx-to-ISA-IRQ routing PCI devices (IDE, virtio)
//! will raise their interrupts through; none does yet.

use std::sync::Mutex;

use super::{INTEL_VENDOR, QEMU_SUBSYSTEM, QEMU_SUBSYSTEM_VENDOR};
use crate::hw::pci::config::{ConfigSpace, Identity, HEADER_TYPE_MULTI_FUNCTION};
use crate::hw::pci::PciFunction;

pub const PIIX3_DEVICE_ID: u16 = 0x7000;
const CLASS_ISA_BRIDGE: u32 = 0x06_01_00;
/// PIRQA-D route control registers: bit 7 set means the PIRQ is not routed; bits 3:0 the IRQ.
pub const PIRQ_ROUTE_CONTROL: usize = 0x60;
const PIRQ_DISABLED: u8 = 0x80;
/// Top of memory register, as QEMU leaves it after reset.
const TOP_OF_MEMORY: usize = 0x69;
const MOTHERBOARD_DEVICE_IRQ: usize = 0x70;
const APIC_BASE_ADDRESS_RELOCATION: usize = 0x80;
const DEVICE_RESOURCE_A: usize = 0xa0;

/// The ISA bridge function.
pub struct Piix3 {
    config: Mutex<ConfigSpace>,
}

impl Default for Piix3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3 {
    pub fn new() -> Piix3 {
        let mut config = ConfigSpace::new(Identity {
            vendor: INTEL_VENDOR,
            device: PIIX3_DEVICE_ID,
            revision: 0,
            class: CLASS_ISA_BRIDGE,
            subsystem_vendor: QEMU_SUBSYSTEM_VENDOR,
            subsystem: QEMU_SUBSYSTEM,
            header_type: HEADER_TYPE_MULTI_FUNCTION,
        });
        // QEMU's piix3_reset values.
        config.set_u16(crate::hw::pci::config::COMMAND, 0x0007);
        config.set_u16(crate::hw::pci::config::STATUS, 0x0200);
        config.set_u8(0x4c, 0x4d);
        config.set_u8(0x4e, 0x03);
        for i in 0..4 {
            config.set_u8(PIRQ_ROUTE_CONTROL + i, PIRQ_DISABLED);
        }
        config.set_u8(TOP_OF_MEMORY, 0x02);
        config.set_u8(MOTHERBOARD_DEVICE_IRQ, 0x80);
        config.set_u8(0x76, 0x0c);
        config.set_u8(0x77, 0x0c);
        config.set_u8(0x78, 0x02);
        config.set_u8(APIC_BASE_ADDRESS_RELOCATION, 0);
        config.set_u8(0x82, 0);
        config.set_u8(DEVICE_RESOURCE_A, 0x08);
        config.set_u8(0xa2, 0);
        config.set_u8(0xa3, 0);
        config.set_u8(0xa4, 0);
        config.set_u8(0xa5, 0);
        config.set_u8(0xa6, 0);
        config.set_u8(0xa7, 0);
        config.set_u8(0xa8, 0x0f);
        config.set_u8(0xaa, 0);
        config.set_u8(0xab, 0);
        config.set_u8(0xac, 0);
        config.set_u8(0xae, 0);
        Piix3 {
            config: Mutex::new(config),
        }
    }

    /// The ISA IRQ that interrupt pin `pin` (1 = INTA# .. 4 = INTD#) of a function in PCI
    /// slot `device` reaches: the i440FX board swizzles pins across slots onto PIRQA-D
    /// (`(pin - 1 + device) % 4`, as QEMU's `pci_slot_get_pirq`), then PIRQRC routes it.
    pub fn intx_irq(&self, device: u8, pin: u8) -> Option<u8> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        self.pirq_route(usize::from((pin - 1 + device) & 3))
    }

    /// The ISA IRQ PIRQ `pirq` (0 = A .. 3 = D) is routed to, if routed.
    pub fn pirq_route(&self, pirq: usize) -> Option<u8> {
        let value = self
            .config
            .lock()
            .unwrap()
            .u8(PIRQ_ROUTE_CONTROL + (pirq & 3));
        (value & PIRQ_DISABLED == 0 && value & 0x0f != 0).then_some(value & 0x0f)
    }
}

impl PciFunction for Piix3 {
    /// PIIX3's power-on command register has bus mastering set, but there is no ISA DMA
    /// here (and QEMU keeps that view off until the guest writes the register).
    fn describe(&self) -> Option<crate::hw::describe::PciDescription> {
        Some(crate::hw::describe::PciDescription::new(QEMU_TYPE))
    }

    fn config_read(&self, offset: u8) -> u32 {
        self.config.lock().unwrap().read_dword(offset)
    }

    fn config_write(&self, offset: u8, value: u32, mask: u32) {
        self.config.lock().unwrap().write_dword(offset, value, mask);
    }

    fn reset(&self) {
        self.config.lock().unwrap().reset();
    }
}

/// QEMU's type name of the ISA bridge function.
pub const QEMU_TYPE: &str = "PIIX3";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_pirq_routing() {
        let bridge = Piix3::new();
        assert_eq!(bridge.config_read(0), 0x7000_8086);
        assert_eq!(bridge.config_read(8) >> 8, 0x06_01_00);
        assert_eq!(
            bridge.config_read(0x0c) >> 16 & 0xff,
            0x80,
            "multi-function"
        );
        assert_eq!(bridge.config_read(0x60), 0x8080_8080);
        assert_eq!(bridge.pirq_route(0), None);
        // SeaBIOS routes PIRQA-D to IRQs 10, 10, 11, 11.
        bridge.config_write(0x60, 0x0b0b_0a0a, u32::MAX);
        assert_eq!(bridge.pirq_route(0), Some(10));
        assert_eq!(bridge.pirq_route(3), Some(11));
        // Slot 3 INTA# is PIRQD, slot 2 INTB# is PIRQD too, slot 4 INTA# wraps to PIRQA.
        assert_eq!(bridge.intx_irq(3, 1), Some(11));
        assert_eq!(bridge.intx_irq(2, 2), Some(11));
        assert_eq!(bridge.intx_irq(4, 1), Some(10));
        assert_eq!(bridge.intx_irq(3, 0), None, "no interrupt pin");
        bridge.reset();
        assert_eq!(bridge.pirq_route(1), None);
        assert_eq!(bridge.intx_irq(3, 1), None);
    }
}
