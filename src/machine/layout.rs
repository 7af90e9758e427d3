//! The guest-physical address map of the `pc` machine, as QEMU 7.2 lays it out.
//!
//! RAM is split around the 32-bit PCI/firmware hole the way `pc_init1` does for current
//! i440FX machine types (`gigabyte_align`): when the guest has at least 3.5 GiB, only 3 GiB
//! stay below 4 GiB and the rest is mapped from 4 GiB up.

/// Where RAM above the PCI hole starts.
pub const HIGH_RAM_START: u64 = 1 << 32;
/// QEMU's default `max-ram-below-4g` for i440FX.
const DEFAULT_MAX_RAM_BELOW_4G: u64 = 0xe000_0000;
/// The cap `gigabyte_align` machine types apply once RAM reaches the default maximum.
const GIGABYTE_ALIGNED_LOW_RAM: u64 = 0xc000_0000;

/// KVM's identity-map page and, one page later, its 3-page TSS, where QEMU puts them.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfeff_c000;
pub const KVM_TSS_START: u64 = KVM_IDENTITY_MAP_START + 0x1000;

/// The local APIC and IOAPIC MMIO windows.
pub const LAPIC_START: u64 = 0xfee0_0000;
pub const IOAPIC_START: u64 = 0xfec0_0000;

/// Conventional memory ends where the EBDA starts (639 KiB), as with SeaBIOS.
pub const EBDA_START: u64 = 0x9fc00;
/// The legacy video / option ROM / BIOS area below 1 MiB.
pub const BIOS_AREA_START: u64 = 0xa0000;
/// The read-only system BIOS segment, where ACPI's RSDP is searched for.
pub const SYSTEM_BIOS_START: u64 = 0xe0000;
/// 1 MiB: where protected-mode kernels are loaded.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// How guest RAM of a given size is placed around the 4 GiB boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamSplit {
    /// Bytes of RAM mapped at [0, below_4g).
    pub below_4g: u64,
    /// Bytes of RAM mapped at [4 GiB, 4 GiB + above_4g).
    pub above_4g: u64,
}

impl RamSplit {
    /// Splits `ram_size` bytes as QEMU 7.2's i440FX machine does.
    pub fn for_ram_size(ram_size: u64) -> RamSplit {
        let mut low_limit = DEFAULT_MAX_RAM_BELOW_4G;
        if ram_size >= low_limit {
            low_limit = low_limit.min(GIGABYTE_ALIGNED_LOW_RAM);
        }
        if ram_size >= low_limit {
            RamSplit {
                below_4g: low_limit,
                above_4g: ram_size - low_limit,
            }
        } else {
            RamSplit {
                below_4g: ram_size,
                above_4g: 0,
            }
        }
    }

    /// The (guest address, size) RAM ranges, lowest first.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges = vec![(0, self.below_4g)];
        if self.above_4g > 0 {
            ranges.push((HIGH_RAM_START, self.above_4g));
        }
        ranges
    }

    /// Total RAM in bytes.
    pub fn total(&self) -> u64 {
        self.below_4g + self.above_4g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guests_are_entirely_below_4g() {
        assert_eq!(
            RamSplit::for_ram_size(128 * MIB),
            RamSplit {
                below_4g: 128 * MIB,
                above_4g: 0
            }
        );
        // 3 GiB is below QEMU's 3.5 GiB threshold, so it all stays low.
        assert_eq!(RamSplit::for_ram_size(3 * GIB).above_4g, 0);
    }

    #[test]
    fn large_guests_keep_3g_low_like_qemu_pc() {
        let split = RamSplit::for_ram_size(4 * GIB);
        assert_eq!(split.below_4g, 3 * GIB);
        assert_eq!(split.above_4g, GIB);
        // Exactly at the 3.5 GiB threshold QEMU already splits at 3 GiB.
        let split = RamSplit::for_ram_size(0xe000_0000);
        assert_eq!(split.below_4g, 3 * GIB);
        assert_eq!(split.above_4g, GIB / 2);
        assert_eq!(
            split.ranges(),
            vec![(0, 3 * GIB), (HIGH_RAM_START, GIB / 2)]
        );
    }
}
