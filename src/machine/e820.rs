//! The BIOS memory map (e820) a guest is given.
//!
//! With direct kernel boot QEMU runs SeaBIOS first and the kernel receives SeaBIOS's map, so
//! vmscope hands out the same map SeaBIOS builds on QEMU's `pc` machine: conventional memory up
//! to the EBDA, the BIOS area reserved, RAM from 1 MiB, KVM's identity-map/TSS pages and the
//! BIOS ROM alias reserved below 4 GiB, and RAM above 4 GiB.

use super::layout::{
    RamSplit, EBDA_START, HIGH_MEMORY_START, HIGH_RAM_START, KVM_IDENTITY_MAP_START,
    KVM_RESERVED_SIZE,
};

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// SeaBIOS reserves the last 256 KiB below 4 GiB, where the 256 KiB BIOS image is mapped.
const BIOS_ROM_START: u64 = 0xfffc_0000;
/// SeaBIOS marks the F-segment (its runtime code and the ACPI RSDP) reserved.
const F_SEGMENT_START: u64 = 0xf_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Builds the map for a RAM split, sorted by address.
pub fn memory_map(split: &RamSplit) -> Vec<E820Entry> {
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
    if split.below_4g > HIGH_MEMORY_START {
        map.push(entry(
            HIGH_MEMORY_START,
            split.below_4g - HIGH_MEMORY_START,
            E820_RAM,
        ));
    }
    map.push(entry(
        KVM_IDENTITY_MAP_START,
        KVM_RESERVED_SIZE,
        E820_RESERVED,
    ));
    map.push(entry(
        BIOS_ROM_START,
        HIGH_RAM_START - BIOS_ROM_START,
        E820_RESERVED,
    ));
    if split.above_4g > 0 {
        map.push(entry(HIGH_RAM_START, split.above_4g, E820_RAM));
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
            let map = memory_map(&split);
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == E820_RAM)
                .map(|e| e.size)
                .sum();
            // Only the BIOS area between the EBDA and 1 MiB is not handed out as RAM.
            assert_eq!(ram, size - (HIGH_MEMORY_START - EBDA_START));
            assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr));
        }
    }
}
