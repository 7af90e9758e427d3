//! The CMOS bytes QEMU's `pc` board sets for the IDE disks once they exist: the hard disk
//! types (0x12, "type 47: user defined" in 0x19/0x1a), the parameter blocks of the primary
//! master and slave (0x1b and 0x24) and the BIOS translation of all four positions (0x39,
//! two bits each), which SeaBIOS reads to choose its CHS translation.

use super::geometry::{Geometry, Translation};

const DISK_TYPES: u8 = 0x12;
const USER_DEFINED_TYPE: u8 = 47;
const TRANSLATIONS: u8 = 0x39;

/// (index, value) pairs for the disks at ide0-hd0, ide0-hd1, ide1-hd0, ide1-hd1.
pub fn cmos_bytes(disks: &[Option<(Geometry, Translation)>; 4]) -> Vec<(u8, u8)> {
    let mut bytes = Vec::new();
    let mut types = 0u8;
    for (unit, (type_at, info_at, type_bits)) in [(0x19u8, 0x1bu8, 0xf0u8), (0x1a, 0x24, 0x0f)]
        .into_iter()
        .enumerate()
    {
        let Some((g, _)) = disks[unit] else {
            continue;
        };
        types |= type_bits;
        let cylinders = g.cylinders as u16;
        bytes.push((type_at, USER_DEFINED_TYPE));
        bytes.extend([
            (info_at, cylinders as u8),
            (info_at + 1, (cylinders >> 8) as u8),
            (info_at + 2, g.heads as u8),
            (info_at + 3, 0xff), // write precompensation: none
            (info_at + 4, 0xff),
            (info_at + 5, 0xc0 | (u8::from(g.heads > 8) << 3)),
            (info_at + 6, cylinders as u8), // landing zone
            (info_at + 7, (cylinders >> 8) as u8),
            (info_at + 8, g.sectors as u8),
        ]);
    }
    bytes.push((DISK_TYPES, types));
    let translations = disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.map(|(_, t)| (translation_code(t)) << (2 * i)))
        .fold(0, |acc, bits| acc | bits);
    bytes.push((TRANSLATIONS, translations));
    bytes
}

fn translation_code(t: Translation) -> u8 {
    match t {
        Translation::None => 0,
        Translation::Lba => 1,
        Translation::Large => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_master_fills_type_parameters_and_translation() {
        let small = Geometry {
            cylinders: 2,
            heads: 16,
            sectors: 63,
        };
        let big = Geometry {
            cylinders: 2080,
            heads: 16,
            sectors: 63,
        };
        let bytes = cmos_bytes(&[
            Some((small, Translation::None)),
            None,
            Some((big, Translation::Lba)),
            None,
        ]);
        let get = |i: u8| bytes.iter().find(|(at, _)| *at == i).map(|(_, v)| *v);
        assert_eq!(get(0x12), Some(0xf0));
        assert_eq!(get(0x19), Some(47));
        assert_eq!(get(0x1a), None);
        assert_eq!(
            (0x1b..=0x23).map(|i| get(i).unwrap()).collect::<Vec<_>>(),
            [2, 0, 16, 0xff, 0xff, 0xc8, 2, 0, 63]
        );
        assert_eq!(get(0x39), Some(0x10), "ide1-hd0 translates by LBA");
    }
}
