//! The i440FX Programmable Attribute Map: how each segment of 0xC0000-0xFFFFF is decoded.
//! Read-enable and write-enable bits per segment choose between RAM and the PCI side (where
//! the BIOS ROM alias sits for 0xE0000-0xFFFFF).

/// PAM registers in the host bridge's configuration space: PAM0 at 0x59 .. PAM6 at 0x5f.
pub const PAM_FIRST_REGISTER: usize = 0x59;
pub const PAM_REGISTER_COUNT: usize = 7;
/// Thirteen segments: 0xF0000 (64 KiB, PAM0's high nibble), then 0xC0000-0xEFFFF in 16 KiB.
pub const SEGMENT_COUNT: usize = 13;

/// What a segment decodes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PamAccess {
    /// Reads and writes go to PCI: the BIOS ROM alias for 0xE0000-0xFFFFF, nothing below.
    /// QEMU treats write-only (mode 2) the same way, and so does vmscope.
    Pci,
    /// Reads from RAM, writes dropped.
    ReadOnlyRam,
    /// RAM, read and write.
    Ram,
}

/// A segment's guest-physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub len: u64,
}

/// The segments, in PAM bit order.
pub fn segments() -> [Segment; SEGMENT_COUNT] {
    let mut list = [Segment {
        start: 0xf0000,
        len: 0x10000,
    }; SEGMENT_COUNT];
    for (i, segment) in list.iter_mut().enumerate().skip(1) {
        *segment = Segment {
            start: 0xc0000 + (i as u64 - 1) * 0x4000,
            len: 0x4000,
        };
    }
    list
}

/// Decodes PAM0..PAM6 into per-segment access.
pub fn decode(registers: &[u8; PAM_REGISTER_COUNT]) -> [PamAccess; SEGMENT_COUNT] {
    let mut access = [PamAccess::Pci; SEGMENT_COUNT];
    for (i, slot) in access.iter_mut().enumerate() {
        // Segment 0 is PAM0's high nibble; segment i>0 is nibble (i-1)%2 of PAM(1+(i-1)/2).
        let bits = if i == 0 {
            registers[0] >> 4
        } else {
            let register = registers[1 + (i - 1) / 2];
            if (i - 1) % 2 == 0 {
                register
            } else {
                register >> 4
            }
        } & 0x3;
        *slot = match bits {
            1 => PamAccess::ReadOnlyRam,
            3 => PamAccess::Ram,
            _ => PamAccess::Pci,
        };
    }
    access
}

/// Applies a decoded map to the guest's memory (KVM slots, see `machine::firmware`).
pub trait ShadowControl: Send + Sync {
    fn apply(&self, access: &[PamAccess; SEGMENT_COUNT]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_c0000_to_fffff() {
        let list = segments();
        assert_eq!(list[1].start, 0xc0000);
        assert_eq!(list[12].start + list[12].len, 0xf0000);
        assert_eq!(list[0].start + list[0].len, 0x100000);
        let total: u64 = list.iter().map(|s| s.len).sum();
        assert_eq!(total, 0x40000);
    }

    #[test]
    fn seabios_settings_decode() {
        // Power-on: everything on PCI.
        assert_eq!(decode(&[0; 7]), [PamAccess::Pci; 13]);
        // SeaBIOS's make_bios_writable: 0x30 then 0x33 everywhere.
        let writable = decode(&[0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        assert_eq!(writable, [PamAccess::Ram; 13]);
        // Read-only F segment and E8000 (PAM6 low nibble), write-only is PCI as on QEMU.
        let map = decode(&[0x10, 0x33, 0x33, 0x33, 0x33, 0x33, 0x21]);
        assert_eq!(map[0], PamAccess::ReadOnlyRam);
        assert_eq!(map[11], PamAccess::ReadOnlyRam);
        assert_eq!(map[12], PamAccess::Pci);
    }
}
