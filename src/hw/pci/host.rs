//! Configuration mechanism #1: the guest writes a bus/device/function/register address to
//! port 0xCF8 and reads or writes the selected dword through ports 0xCFC-0xCFF. Port 0xCF9
//! (a byte) is the PIIX3 reset control register, which shares the window.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::PciFunction;
use crate::hw::bus::PioDevice;

/// First port of the window: CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC.
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
pub const PCI_CONFIG_PORT_COUNT: u16 = 8;
const DATA_OFFSET: u16 = 4;
/// The reset control register's offset in the window (port 0xCF9).
const RESET_CONTROL_OFFSET: u16 = 1;

const ADDRESS_ENABLE: u32 = 1 << 31;
/// Bits of CONFIG_ADDRESS that hold state: enable, bus, device, function, dword register.
const ADDRESS_MASK: u32 = 0x80ff_fffc;
/// Reset control: bit 2 starts the reset, bit 1 asks for a hard one.
const RESET_CONTROL_RESET_CPU: u8 = 1 << 2;
const RESET_CONTROL_WRITABLE: u8 = 0x02;

/// The functions on bus 0, by devfn.
#[derive(Default)]
pub struct PciBus {
    functions: BTreeMap<u8, Arc<dyn PciFunction>>,
}

impl PciBus {
    pub fn new() -> PciBus {
        PciBus::default()
    }

    /// Puts `function` at `devfn`; `false` (and nothing changes) if the slot is taken.
    pub fn add(&mut self, devfn: u8, function: Arc<dyn PciFunction>) -> bool {
        if self.functions.contains_key(&devfn) {
            return false;
        }
        self.functions.insert(devfn, function);
        true
    }

    /// The dword at `offset` of function `devfn` on bus 0; all ones where nothing answers.
    pub fn read(&self, bus: u8, devfn: u8, offset: u8) -> u32 {
        match self.function(bus, devfn) {
            Some(f) => f.config_read(offset & 0xfc),
            None => 0xffff_ffff,
        }
    }

    pub fn write(&self, bus: u8, devfn: u8, offset: u8, value: u32, mask: u32) {
        if let Some(f) = self.function(bus, devfn) {
            f.config_write(offset & 0xfc, value, mask);
        }
    }

    /// The functions on bus 0 with their devfns, in devfn order.
    pub fn functions(&self) -> impl DoubleEndedIterator<Item = (u8, &Arc<dyn PciFunction>)> {
        self.functions
            .iter()
            .map(|(&devfn, function)| (devfn, function))
    }

    fn function(&self, bus: u8, devfn: u8) -> Option<&Arc<dyn PciFunction>> {
        if bus != 0 {
            return None;
        }
        self.functions.get(&devfn)
    }

    pub fn reset(&self) {
        for function in self.functions.values() {
            function.reset();
        }
    }
}

/// Ports 0xCF8-0xCFF.
pub struct PciConfigPorts {
    bus: Arc<PciBus>,
    address: Mutex<u32>,
    reset_control: Mutex<u8>,
    on_reset: Box<dyn Fn() + Send + Sync>,
}

impl PciConfigPorts {
    /// `on_reset` is called when the guest resets the machine through port 0xCF9.
    pub fn new(bus: Arc<PciBus>, on_reset: Box<dyn Fn() + Send + Sync>) -> PciConfigPorts {
        PciConfigPorts {
            bus,
            address: Mutex::new(0),
            reset_control: Mutex::new(0),
            on_reset,
        }
    }

    /// The selected (bus, devfn, register) when configuration cycles are enabled.
    fn target(&self) -> Option<(u8, u8, u8)> {
        let address = *self.address.lock().unwrap();
        (address & ADDRESS_ENABLE != 0).then_some((
            (address >> 16) as u8,
            (address >> 8) as u8,
            address as u8,
        ))
    }

    pub fn reset(&self) {
        *self.address.lock().unwrap() = 0;
        *self.reset_control.lock().unwrap() = 0;
    }
}

/// Byte lanes covered by an access of `len` bytes at byte `lane` of a dword.
fn lane_mask(lane: u16, len: usize) -> u32 {
    let bits = if len >= 4 {
        u32::MAX
    } else {
        (1u32 << (8 * len)) - 1
    };
    bits << (8 * lane)
}

impl PioDevice for PciConfigPorts {
    fn read(&self, offset: u16, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.lock().unwrap().to_le_bytes()),
            (RESET_CONTROL_OFFSET, 1) => data[0] = *self.reset_control.lock().unwrap(),
            (DATA_OFFSET.., _) => {
                let lane = offset - DATA_OFFSET;
                let value = match self.target() {
                    Some((bus, devfn, register)) => self.bus.read(bus, devfn, register),
                    None => 0xffff_ffff,
                };
                let value = value >> (8 * lane);
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = (value >> (8 * i)) as u8;
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => {
                let value = u32::from_le_bytes(data.try_into().expect("4 bytes"));
                *self.address.lock().unwrap() = value & ADDRESS_MASK;
            }
            (RESET_CONTROL_OFFSET, 1) => {
                let value = data[0];
                *self.reset_control.lock().unwrap() = value & RESET_CONTROL_WRITABLE;
                if value & RESET_CONTROL_RESET_CPU != 0 {
                    (self.on_reset)();
                }
            }
            (DATA_OFFSET.., _) => {
                let Some((bus, devfn, register)) = self.target() else {
                    return;
                };
                let lane = offset - DATA_OFFSET;
                let mut value = 0u32;
                for (i, byte) in data.iter().enumerate() {
                    value |= u32::from(*byte) << (8 * i);
                }
                let mask = lane_mask(lane, data.len());
                self.bus
                    .write(bus, devfn, register, value << (8 * lane), mask);
            }
            // Other sizes at CONFIG_ADDRESS are not configuration cycles on a PIIX.
            _ => {}
        }
    }
}

/// The configuration window under QEMU's region names; the PIIX3 reset control byte at
/// 0xCF9 overlaps the address register at a higher priority.
pub fn io_regions() -> Vec<crate::hw::describe::PortRegion> {
    use crate::hw::describe::PortRegion;
    vec![
        PortRegion::new("pci-conf-idx", PCI_CONFIG_ADDRESS, 4),
        PortRegion::new(
            "piix3-reset-control",
            PCI_CONFIG_ADDRESS + RESET_CONTROL_OFFSET,
            1,
        )
        .with_priority(1),
        PortRegion::new("pci-conf-data", PCI_CONFIG_ADDRESS + DATA_OFFSET, 4),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::pci::config::{ConfigSpace, Identity};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Plain(Mutex<ConfigSpace>);

    impl PciFunction for Plain {
        fn config_read(&self, offset: u8) -> u32 {
            self.0.lock().unwrap().read_dword(offset)
        }
        fn config_write(&self, offset: u8, value: u32, mask: u32) {
            self.0.lock().unwrap().write_dword(offset, value, mask)
        }
    }

    fn ports() -> (PciConfigPorts, Arc<AtomicUsize>) {
        let mut bus = PciBus::new();
        bus.add(
            super::super::devfn(1, 0),
            Arc::new(Plain(Mutex::new(ConfigSpace::new(Identity {
                vendor: 0x8086,
                device: 0x7000,
                revision: 0,
                class: 0x060100,
                subsystem_vendor: 0x1af4,
                subsystem: 0x1100,
                header_type: 0x80,
            })))),
        );
        let resets = Arc::new(AtomicUsize::new(0));
        let seen = resets.clone();
        let ports = PciConfigPorts::new(
            Arc::new(bus),
            Box::new(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (ports, resets)
    }

    fn select(ports: &PciConfigPorts, address: u32) {
        ports.write(0, &address.to_le_bytes());
    }

    #[test]
    fn reads_dwords_words_and_bytes_of_the_selected_function() {
        let (ports, _) = ports();
        select(&ports, 0x8000_0800);
        let mut dword = [0u8; 4];
        ports.read(4, &mut dword);
        assert_eq!(u32::from_le_bytes(dword), 0x7000_8086);
        let mut word = [0u8; 2];
        ports.read(6, &mut word);
        assert_eq!(u16::from_le_bytes(word), 0x7000);
        select(&ports, 0x8000_080c);
        let mut byte = [0u8; 1];
        ports.read(6, &mut byte);
        assert_eq!(byte[0], 0x80, "header type at 0x0e");
        let mut address = [0u8; 4];
        ports.read(0, &mut address);
        assert_eq!(u32::from_le_bytes(address), 0x8000_080c);
    }

    #[test]
    fn absent_functions_disabled_cycles_and_other_buses_read_all_ones() {
        let (ports, _) = ports();
        for address in [0x8000_1000u32, 0x0000_0800, 0x8001_0800] {
            select(&ports, address);
            let mut dword = [0u8; 4];
            ports.read(4, &mut dword);
            assert_eq!(u32::from_le_bytes(dword), u32::MAX, "{address:#x}");
        }
    }

    #[test]
    fn byte_writes_reach_their_lane() {
        let (ports, _) = ports();
        select(&ports, 0x8000_083c);
        ports.write(4, &[0x0b]);
        ports.write(5, &[0x01]);
        let mut dword = [0u8; 4];
        ports.read(4, &mut dword);
        assert_eq!(
            u32::from_le_bytes(dword) & 0xffff,
            0x000b,
            "pin is read-only"
        );
    }

    #[test]
    fn port_cf9_resets_the_machine() {
        let (ports, resets) = ports();
        ports.write(1, &[0x02]);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        let mut byte = [0u8];
        ports.read(1, &mut byte);
        assert_eq!(byte[0], 0x02);
        ports.write(1, &[0x06]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }
}
