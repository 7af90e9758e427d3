//! The CHS geometry an IDE disk reports, guessed the way QEMU 7.2 does when none is given
//! (`hd_geometry_guess`): from an MS-DOS partition table whose partitions end on cylinder
//! boundaries, else 16 heads and 63 sectors with as many cylinders as fit (2..16383).

/// Cylinders, heads and sectors per track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
}

/// How a BIOS should translate CHS for this disk (QEMU reports it in CMOS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    None,
    Lba,
    Large,
}

const MAX_CYLINDERS: u64 = 16383;

impl Geometry {
    /// QEMU's guess for a disk of `total_sectors` whose first sector is `mbr`.
    pub fn guess(total_sectors: u64, mbr: &[u8; 512]) -> (Geometry, Translation) {
        match partition_table_geometry(total_sectors, mbr) {
            None => {
                let geometry = Geometry::for_size(total_sectors);
                let translation = if geometry.cylinders <= 1024 {
                    Translation::None
                } else {
                    Translation::Lba
                };
                (geometry, translation)
            }
            // A logical geometry with more than 16 heads means a BIOS translated it: the
            // physical geometry is the standard one.
            Some(logical) if logical.heads > 16 => {
                let geometry = Geometry::for_size(total_sectors);
                let translation = if geometry.cylinders * geometry.heads <= 131072 {
                    Translation::Large
                } else {
                    Translation::Lba
                };
                (geometry, translation)
            }
            Some(logical) => (logical, Translation::None),
        }
    }

    /// 16 heads, 63 sectors, cylinders clamped to 2..16383.
    pub fn for_size(total_sectors: u64) -> Geometry {
        Geometry {
            cylinders: (total_sectors / (16 * 63)).clamp(2, MAX_CYLINDERS) as u32,
            heads: 16,
            sectors: 63,
        }
    }

    pub fn total(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }
}

/// The geometry the first usable partition entry implies, if the sector has the 0x55AA
/// signature: heads from its end head, sectors from its end sector.
fn partition_table_geometry(total_sectors: u64, mbr: &[u8; 512]) -> Option<Geometry> {
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return None;
    }
    mbr[0x1be..0x1fe].chunks_exact(16).find_map(|entry| {
        let end_head = u32::from(entry[5]);
        let end_sector = u32::from(entry[6] & 63);
        let sectors_in_partition = u32::from_le_bytes(entry[12..16].try_into().ok()?);
        if sectors_in_partition == 0 || end_head == 0 || end_sector == 0 {
            return None;
        }
        let heads = end_head + 1;
        let cylinders = total_sectors / u64::from(heads * end_sector);
        (1..=MAX_CYLINDERS)
            .contains(&cylinders)
            .then_some(Geometry {
                cylinders: cylinders as u32,
                heads,
                sectors: end_sector,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_disks_get_two_cylinders_of_16_by_63() {
        let (g, t) = Geometry::guess(2048, &[0; 512]);
        assert_eq!(
            g,
            Geometry {
                cylinders: 2,
                heads: 16,
                sectors: 63
            }
        );
        assert_eq!(t, Translation::None);
        assert_eq!(g.total(), 2016);
    }

    #[test]
    fn big_disks_are_clamped_and_translated() {
        let (g, t) = Geometry::guess(100 << 21, &[0; 512]);
        assert_eq!(g.cylinders, 16383);
        assert_eq!(t, Translation::Lba);
    }

    #[test]
    fn a_partition_table_sets_the_geometry() {
        let mut mbr = [0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        // Partition 1 ends at head 3, sector 32: 4 heads, 32 sectors.
        let entry = &mut mbr[0x1be..0x1ce];
        entry[5] = 3;
        entry[6] = 32;
        entry[12..16].copy_from_slice(&1000u32.to_le_bytes());
        let (g, t) = Geometry::guess(4096, &mbr);
        assert_eq!(
            g,
            Geometry {
                cylinders: 32,
                heads: 4,
                sectors: 32
            }
        );
        assert_eq!(t, Translation::None);
        // 255 heads: a translating BIOS wrote it; the physical geometry is the standard one.
        mbr[0x1be + 5] = 254;
        mbr[0x1be + 6] = 63;
        let (g, t) = Geometry::guess(1 << 20, &mbr);
        assert_eq!(g, Geometry::for_size(1 << 20));
        assert_eq!(t, Translation::Large);
    }
}
