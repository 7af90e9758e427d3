//! The BIOS memory map (e820) a guest is given.
//!
//! With direct kernel boot QEMU runs SeaBIOS first and the kernel receives SeaBIOS's map, so
//! vmscope hands out the same map SeaBIOS builds on QEMU's `pc` machine: conventional memory up
//! to the EBDA, the BIOS area reserved, RAM from 1 MiB with its top 128 KiB reserved (SeaBIOS
//! keeps its high tables there), the BIOS ROM alias reserved below 4 GiB, RAM above 4 GiB,
//! and for AMD CPU models the HyperTransport window below 1 TiB.
//!
//! Deviation: QEMU under KVM also reserves the 4 pages of KVM's identity map and TSS at
//! 0xfeffc000; they lie in the PCI hole, never in RAM, so vmscope leaves them out and its map
//! is identical to the one QEMU gives under TCG, the reference the tests compare against.

use super::layout::{RamSplit, EBDA_START, HIGH_MEMORY_START, HIGH_RAM_START};

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// SeaBIOS reserves the last 256 KiB below 4 GiB, where the 256 KiB BIOS image is mapped.
const BIOS_ROM_START: u64 = 0xfffc_0000;
/// SeaBIOS marks the F-segment (its runtime code and the ACPI RSDP) reserved.
const F_SEGMENT_START: u64 = 0xf_0000;
/// SeaBIOS reserves this much at the top of low RAM.
const SEABIOS_HIGH_TABLES: u64 = 0x2_0000;
/// AMD's HyperTransport window, 0xfd_0000_0000 up to 1 TiB, reserved for AMD CPU models.
const AMD_HT_START: u64 = 0xfd_0000_0000;
const AMD_HT_SIZE: u64 = 0x3_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Builds the map for a RAM split, sorted by address. `amd_cpu` adds the HyperTransport
/// reservation QEMU makes for AMD CPU models.
pub fn memory_map(split: &RamSplit, amd_cpu: bool) -> Vec<E820Entry> {
    let entry = |addr, size, kind| E820Entry { addr, size, kind };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, 0xa0000 - EBDA_START, E820_RESERVED),
        entry(
            F_SEGMENT_START,
            HIGH_MEMORY_START - F_SEGMENT_START,
            E820_RESERVED,
        ),
    ];
    let low_ram_end = split.below_4g.saturating_sub(SEABIOS_HIGH_TABLES);
    if low_ram_end > HIGH_MEMORY_START {
        map.push(entry(
            HIGH_MEMORY_START,
            low_ram_end - HIGH_MEMORY_START,
            E820_RAM,
        ));
        map.push(entry(low_ram_end, SEABIOS_HIGH_TABLES, E820_RESERVED));
    }
    map.push(entry(
        BIOS_ROM_START,
        HIGH_RAM_START - BIOS_ROM_START,
        E820_RESERVED,
    ));
    if split.above_4g > 0 {
        map.push(entry(HIGH_RAM_START, split.above_4g, E820_RAM));
    }
    if amd_cpu {
        map.push(entry(AMD_HT_START, AMD_HT_SIZE, E820_RESERVED));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_covers_ram_exactly_once_and_is_sorted() {
        for size in [128u64 << 20, 512 << 20, 3 << 30, 4 << 30, 6 << 30] {
            let split = RamSplit::for_ram_size(size);
            let map = memory_map(&split, true);
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == E820_RAM)
                .map(|e| e.size)
                .sum();
            // The BIOS area between the EBDA and 1 MiB and SeaBIOS's tables are not RAM.
            assert_eq!(
                ram,
                size - (HIGH_MEMORY_START - EBDA_START) - SEABIOS_HIGH_TABLES
            );
            assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr));
        }
    }

    #[test]
    fn matches_qemu_72_for_a_4g_amd_guest() {
        // Read off QEMU 7.2 (SeaBIOS + PVH option ROM) with `-m 4G` and the qemu64 model.
        let expected = [
            (0x0, 0x9fc00, E820_RAM),
            (0x9fc00, 0x400, E820_RESERVED),
            (0xf0000, 0x10000, E820_RESERVED),
            (0x100000, 0xbffe0000 - 0x100000, E820_RAM),
            (0xbffe0000, 0x20000, E820_RESERVED),
            (0xfffc0000, 0x40000, E820_RESERVED),
            (0x1_0000_0000, 0x4000_0000, E820_RAM),
            (0xfd_0000_0000, 0x3_0000_0000, E820_RESERVED),
        ];
        let map = memory_map(&RamSplit::for_ram_size(4 << 30), true);
        let got: Vec<(u64, u64, u32)> = map.iter().map(|e| (e.addr, e.size, e.kind)).collect();
        assert_eq!(got, expected);
        let intel = memory_map(&RamSplit::for_ram_size(4 << 30), false);
        assert_eq!(intel.len(), expected.len() - 1);
    }
}
