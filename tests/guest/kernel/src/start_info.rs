//! The PVH `hvm_start_info` the loader passes in EBX (Xen's public start_info.h layout).

use crate::phys;

pub const MAGIC: u32 = 0x336e_c578;

const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = 4;
const OFF_CMDLINE_PADDR: u64 = 24;
const OFF_RSDP_PADDR: u64 = 32;
const OFF_MEMMAP_PADDR: u64 = 40;
const OFF_MEMMAP_ENTRIES: u64 = 48;
/// Size of the structure (version 1).
pub const SIZE: u64 = 56;
pub const MEMMAP_ENTRY_SIZE: u64 = 24;
pub const E820_RAM: u32 = 1;
const CMDLINE_MAX: usize = 256;

#[derive(Clone, Copy)]
pub struct StartInfo {
    pub paddr: u64,
    pub version: u32,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
}

#[derive(Clone, Copy)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The kernel command line, copied out of guest memory.
pub struct Cmdline {
    bytes: [u8; CMDLINE_MAX],
    len: usize,
}

impl Cmdline {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The first word: the scenario name.
    pub fn scenario(&self) -> &[u8] {
        let s = self.as_bytes();
        let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
        let rest = &s[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        &rest[..end]
    }
}

impl StartInfo {
    /// Reads the structure at `paddr`; `None` when the magic is wrong.
    pub fn read(paddr: u64) -> Option<StartInfo> {
        if paddr == 0 || phys::read_u32(paddr + OFF_MAGIC) != MAGIC {
            return None;
        }
        let version = phys::read_u32(paddr + OFF_VERSION);
        let (memmap_paddr, memmap_entries) = if version >= 1 {
            (
                phys::read_u64(paddr + OFF_MEMMAP_PADDR),
                phys::read_u32(paddr + OFF_MEMMAP_ENTRIES),
            )
        } else {
            (0, 0)
        };
        Some(StartInfo {
            paddr,
            version,
            cmdline_paddr: phys::read_u64(paddr + OFF_CMDLINE_PADDR),
            rsdp_paddr: phys::read_u64(paddr + OFF_RSDP_PADDR),
            memmap_paddr,
            memmap_entries,
        })
    }

    pub fn cmdline(&self) -> Cmdline {
        let mut cmdline = Cmdline {
            bytes: [0; CMDLINE_MAX],
            len: 0,
        };
        if self.cmdline_paddr != 0 {
            while cmdline.len < CMDLINE_MAX {
                let b = phys::read_u8(self.cmdline_paddr + cmdline.len as u64);
                if b == 0 {
                    break;
                }
                cmdline.bytes[cmdline.len] = b;
                cmdline.len += 1;
            }
        }
        cmdline
    }

    /// Whether `[addr, addr + len)` lies inside one RAM entry of the memory map and clear of
    /// everything the loader handed over (this structure, its memory map, the command line).
    pub fn is_free_ram(&self, addr: u64, len: u64) -> bool {
        let overlaps = |start: u64, size: u64| start < addr + len && addr < start + size;
        let cmdline_len = self.cmdline().as_bytes().len() as u64 + 1;
        let memmap_len = u64::from(self.memmap_entries) * MEMMAP_ENTRY_SIZE;
        let in_ram = (0..self.memmap_entries)
            .map(|i| self.memmap_entry(i))
            .any(|e| e.kind == E820_RAM && e.addr <= addr && addr + len <= e.addr + e.size);
        let cmdline_clear = self.cmdline_paddr == 0 || !overlaps(self.cmdline_paddr, cmdline_len);
        in_ram
            && cmdline_clear
            && !overlaps(self.paddr, SIZE)
            && !overlaps(self.memmap_paddr, memmap_len)
    }

    /// Entry `i` of the memory map (`i < memmap_entries`).
    pub fn memmap_entry(&self, i: u32) -> MemmapEntry {
        let at = self.memmap_paddr + u64::from(i) * MEMMAP_ENTRY_SIZE;
        MemmapEntry {
            addr: phys::read_u64(at),
            size: phys::read_u64(at + 8),
            kind: phys::read_u32(at + 16),
        }
    }
}
