//! The 256-byte configuration space of a conventional PCI function, with the identity
//! registers every function has and a per-byte write mask (what the guest may change).

/// Standard header offsets.
pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION_ID: usize = 0x08;
pub const CLASS_PROG: usize = 0x09;
pub const CLASS_DEVICE: usize = 0x0a;
pub const HEADER_TYPE: usize = 0x0e;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const SUBSYSTEM_ID: usize = 0x2e;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

/// Header type bit: the device has more than one function.
pub const HEADER_TYPE_MULTI_FUNCTION: u8 = 0x80;
/// Status bit: fast back-to-back capable; medium DEVSEL timing.
pub const STATUS_FAST_BACK: u16 = 0x0080;
pub const STATUS_DEVSEL_MEDIUM: u16 = 0x0200;

/// What identifies a function to software.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Base class, subclass and programming interface, as `0xCCSSPP`.
    pub class: u32,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    pub header_type: u8,
}

/// Configuration space bytes plus which bits the guest can write.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
    initial: [u8; 256],
}

impl ConfigSpace {
    /// A space with `identity` filled in; only the command register low bits and the
    /// interrupt line are writable until the caller opens more with [`ConfigSpace::set_writable`].
    pub fn new(identity: Identity) -> ConfigSpace {
        let mut space = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            initial: [0; 256],
        };
        space.set_u16(VENDOR_ID, identity.vendor);
        space.set_u16(DEVICE_ID, identity.device);
        space.bytes[REVISION_ID] = identity.revision;
        space.bytes[CLASS_PROG] = identity.class as u8;
        space.set_u16(CLASS_DEVICE, (identity.class >> 8) as u16);
        space.bytes[HEADER_TYPE] = identity.header_type;
        space.set_u16(SUBSYSTEM_VENDOR_ID, identity.subsystem_vendor);
        space.set_u16(SUBSYSTEM_ID, identity.subsystem);
        // As on QEMU: I/O space, memory space, bus master, SERR# and INTx disable.
        space.set_writable(COMMAND, &[0x07, 0x05]);
        space.set_writable(INTERRUPT_LINE, &[0xff]);
        // Device-specific registers are writable unless a model says otherwise (QEMU's
        // default write mask past the standard header).
        space.writable[0x40..].fill(0xff);
        space.initial = space.bytes;
        space
    }

    pub fn u8(&self, offset: usize) -> u8 {
        self.bytes[offset]
    }

    pub fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    pub fn u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().expect("4 bytes"))
    }

    /// Sets bytes regardless of the write mask (the device's own view), and makes them the
    /// power-on value when called before the first [`ConfigSpace::reset`].
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        self.bytes[offset] = value;
        self.initial[offset] = value;
    }

    pub fn set_u16(&mut self, offset: usize, value: u16) {
        self.bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        self.initial[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    pub fn set_u32(&mut self, offset: usize, value: u32) {
        self.bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        self.initial[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Marks bits writable by the guest, starting at `offset`.
    pub fn set_writable(&mut self, offset: usize, masks: &[u8]) {
        self.writable[offset..offset + masks.len()].copy_from_slice(masks);
    }

    /// The dword at `offset` (aligned down to 4).
    pub fn read_dword(&self, offset: u8) -> u32 {
        self.u32(usize::from(offset & 0xfc))
    }

    /// A guest write of the bytes selected by `mask` in the dword at `offset`; bits the
    /// guest may not change keep their value.
    pub fn write_dword(&mut self, offset: u8, value: u32, mask: u32) {
        let base = usize::from(offset & 0xfc);
        for i in 0..4 {
            if (mask >> (8 * i)) & 0xff == 0 {
                continue;
            }
            let writable = self.writable[base + i];
            let new = (value >> (8 * i)) as u8;
            self.bytes[base + i] = (self.bytes[base + i] & !writable) | (new & writable);
        }
    }

    /// Power-on values again.
    pub fn reset(&mut self) {
        self.bytes = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            vendor: 0x8086,
            device: 0x1237,
            revision: 2,
            class: 0x060000,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
            header_type: 0,
        }
    }

    #[test]
    fn identity_registers_are_laid_out_and_read_only() {
        let mut space = ConfigSpace::new(identity());
        assert_eq!(space.read_dword(0), 0x1237_8086);
        assert_eq!(space.read_dword(8), 0x0600_0002);
        assert_eq!(space.read_dword(0x2c), 0x1100_1af4);
        space.write_dword(0, 0xffff_ffff, 0xffff_ffff);
        space.write_dword(8, 0, 0xffff_ffff);
        assert_eq!(space.read_dword(0), 0x1237_8086);
        assert_eq!(space.read_dword(8), 0x0600_0002);
    }

    #[test]
    fn writes_respect_the_mask_and_reset_restores() {
        let mut space = ConfigSpace::new(identity());
        space.write_dword(0x3c, 0xffff_ff0b, 0x0000_00ff);
        assert_eq!(space.u8(INTERRUPT_LINE), 0x0b);
        assert_eq!(space.u8(INTERRUPT_PIN), 0);
        space.write_dword(COMMAND as u8, 0xffff_ffff, 0x0000_ffff);
        assert_eq!(space.u16(COMMAND), 0x0507);
        space.reset();
        assert_eq!(space.u8(INTERRUPT_LINE), 0);
        assert_eq!(space.u16(COMMAND), 0);
    }
}
