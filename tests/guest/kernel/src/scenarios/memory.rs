//! `memory`: the memory map from hvm_start_info, the usable total, and a probe that every
//! usable region really holds RAM.

use crate::console::{Dec, Hex};
use crate::kprintln;
use crate::phys;
use crate::start_info::{StartInfo, E820_RAM};

pub fn run(info: &StartInfo) {
    kprintln!(
        "memory: start_info version ",
        Dec(u64::from(info.version)),
        ", ",
        Dec(u64::from(info.memmap_entries)),
        " memmap entries"
    );
    let mut usable = 0u64;
    let mut probed = 0u64;
    for i in 0..info.memmap_entries {
        let e = info.memmap_entry(i);
        kprintln!(
            "memory: ",
            Hex(e.addr, 16),
            "-",
            Hex(e.addr.wrapping_add(e.size).wrapping_sub(1), 16),
            " type ",
            Dec(u64::from(e.kind)),
            " ",
            kind_name(e.kind)
        );
        if e.kind == E820_RAM {
            usable += e.size;
            if probe(e.addr, e.size) {
                probed += 1;
            }
        }
    }
    kprintln!(
        "memory: usable ",
        Dec(usable),
        " bytes (",
        Dec(usable >> 20),
        " MiB)"
    );
    kprintln!("memory: probed ", Dec(probed), " usable regions");
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        1 => "ram",
        2 => "reserved",
        3 => "acpi",
        4 => "nvs",
        5 => "unusable",
        _ => "other",
    }
}

/// Writes a pattern to the first and the last 8 bytes of a region, reads it back and
/// restores what was there. Regions beyond the identity map are skipped (not counted).
fn probe(addr: u64, size: u64) -> bool {
    if size < 16 || !phys::is_mapped(addr, size) {
        return false;
    }
    for at in [addr, addr + size - 8] {
        let saved = phys::read_u64(at);
        let pattern = 0x5a5a_0000_0000_a5a5 ^ at;
        // SAFETY: a usable RAM word, restored right after; nothing else runs meanwhile (the
        // APs are not started in this scenario).
        unsafe { phys::write_u64(at, pattern) };
        let seen = phys::read_u64(at);
        // SAFETY: as above.
        unsafe { phys::write_u64(at, saved) };
        if seen != pattern {
            kprintln!("memory: probe failed at ", Hex(at, 16));
            return false;
        }
    }
    true
}
