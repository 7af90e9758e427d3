//! PCI configuration space through configuration mechanism #1 (ports 0xcf8/0xcfc).

use crate::port::{inl, outl};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Bus, device, function.
#[derive(Clone, Copy)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    fn address(self, offset: u8) -> u32 {
        0x8000_0000
            | u32::from(self.bus) << 16
            | u32::from(self.device) << 11
            | u32::from(self.function) << 8
            | u32::from(offset & 0xfc)
    }

    pub fn read32(self, offset: u8) -> u32 {
        outl(CONFIG_ADDRESS, self.address(offset));
        inl(CONFIG_DATA)
    }

    pub fn write32(self, offset: u8, value: u32) {
        outl(CONFIG_ADDRESS, self.address(offset));
        outl(CONFIG_DATA, value);
    }

    pub fn read16(self, offset: u8) -> u16 {
        (self.read32(offset) >> ((offset & 2) * 8)) as u16
    }

    /// Read-modify-write of the dword holding the 16-bit register at `offset`.
    pub fn write16(self, offset: u8, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(offset) & !(0xffff << shift);
        self.write32(offset, old | u32::from(value) << shift);
    }
}

/// The first function on bus 0 whose class code (class, subclass) matches.
pub fn find_class(class: u8, subclass: u8) -> Option<Bdf> {
    for device in 0..32 {
        for function in 0..8 {
            let bdf = Bdf {
                bus: 0,
                device,
                function,
            };
            let id = bdf.read32(0);
            if id == 0xffff_ffff || id == 0 {
                if function == 0 {
                    break;
                }
                continue;
            }
            let class_reg = bdf.read32(8);
            if (class_reg >> 24) as u8 == class && (class_reg >> 16) as u8 == subclass {
                return Some(bdf);
            }
        }
    }
    None
}
