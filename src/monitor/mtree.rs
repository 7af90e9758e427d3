//! `info mtree [-D]`: the machine's memory regions ([`MemoryMap`], built by the machine) in
//! QEMU 7.2's layout. Address spaces sharing a root are printed as one group (names sorted),
//! each region with its absolute range, priority and kind, subregions sorted by address
//! (higher priority first on ties). Every alias target met on the way, enabled or not, is
//! then printed once under `memory-region:`, in the order first met.

use crate::hw::describe::{MemoryMap, RegionId};

const INDENT: &str = "  ";

/// The text of `info mtree`; with `show_disabled` (`-D`) disabled regions are listed too,
/// marked ` [disabled]` (without it their subregions still are, one level deeper).
pub fn format_mtree(map: &MemoryMap, show_disabled: bool) -> String {
    let mut out = String::new();
    let mut alias_queue: Vec<RegionId> = Vec::new();
    let mut groups: Vec<(RegionId, Vec<&str>)> = Vec::new();
    for space in &map.address_spaces {
        match groups.iter_mut().find(|(root, _)| *root == space.root) {
            Some((_, names)) => names.push(&space.name),
            None => groups.push((space.root, vec![&space.name])),
        }
    }
    for (root, mut names) in groups {
        names.sort();
        for name in names {
            out.push_str(&format!("address-space: {name}\n"));
        }
        print_region(&mut out, map, root, 1, 0, &mut alias_queue, show_disabled);
        out.push('\n');
    }
    // The queue grows while it is printed: aliases inside alias targets are queued too.
    let mut next = 0;
    while next < alias_queue.len() {
        let id = alias_queue[next];
        out.push_str(&format!("memory-region: {}\n", map.get(id).name));
        print_region(&mut out, map, id, 1, 0, &mut alias_queue, show_disabled);
        out.push('\n');
        next += 1;
    }
    out
}

/// QEMU's size-minus-one (0 for an empty region), as a 64-bit offset.
fn last_offset(size: u128) -> u64 {
    if size == 0 {
        0
    } else {
        (size - 1) as u64
    }
}

fn print_region(
    out: &mut String,
    map: &MemoryMap,
    id: RegionId,
    level: usize,
    base: u64,
    alias_queue: &mut Vec<RegionId>,
    show_disabled: bool,
) {
    let region = map.get(id);
    let start = base.wrapping_add(region.addr);
    let end = start.wrapping_add(last_offset(region.size));
    if start < base || end < start {
        out.push_str("[DETECTED OVERFLOW!] ");
    }
    if region.enabled || show_disabled {
        let disabled = if region.enabled { "" } else { " [disabled]" };
        out.push_str(&INDENT.repeat(level));
        out.push_str(&format!(
            "{start:016x}-{end:016x} (prio {}, {}): ",
            region.priority,
            region.kind.as_str()
        ));
        match region.alias {
            Some((target, offset)) => out.push_str(&format!(
                "alias {} @{} {offset:016x}-{:016x}{disabled}\n",
                region.name,
                map.get(target).name,
                offset.wrapping_add(last_offset(region.size))
            )),
            None => out.push_str(&format!("{}{disabled}\n", region.name)),
        }
    }
    if let Some((target, _)) = region.alias {
        if !alias_queue.contains(&target) {
            alias_queue.push(target);
        }
    }
    // Stable insertion: by address, higher priority first, otherwise list order.
    let mut children: Vec<RegionId> = Vec::new();
    for &child in &region.subregions {
        let c = map.get(child);
        let at = children
            .iter()
            .position(|&other| {
                let o = map.get(other);
                c.addr < o.addr || (c.addr == o.addr && c.priority > o.priority)
            })
            .unwrap_or(children.len());
        children.insert(at, child);
    }
    for child in children {
        print_region(
            out,
            map,
            child,
            level + 1,
            start,
            alias_queue,
            show_disabled,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::describe::{RegionKind, WHOLE_64BIT_SPACE};

    fn sample() -> MemoryMap {
        let mut map = MemoryMap::default();
        let system = map.region("system", WHOLE_64BIT_SPACE, RegionKind::Io, 0);
        let ram = map.region("pc.ram", 0x800_0000, RegionKind::Ram, 0);
        let below = map.alias("ram-below-4g", ram, 0, 0x800_0000, 0);
        map.add_subregion(system, 0, below);
        let container = map.region("piix4-pm", 0x40, RegionKind::Io, 0);
        let evt = map.region("acpi-evt", 4, RegionKind::Io, 0);
        map.add_subregion(container, 0, evt);
        map.set_enabled(container, false);
        map.add_subregion(system, 0x600, container);
        map.add_address_space("memory", system);
        map.add_address_space("cpu-memory-0", system);
        map
    }

    #[test]
    fn groups_aliases_and_disabled_regions() {
        assert_eq!(
            format_mtree(&sample(), false),
            "address-space: cpu-memory-0\naddress-space: memory\n  \
             0000000000000000-ffffffffffffffff (prio 0, i/o): system\n    \
             0000000000000000-0000000007ffffff (prio 0, ram): alias ram-below-4g @pc.ram 0000000000000000-0000000007ffffff\n      \
             0000000000000600-0000000000000603 (prio 0, i/o): acpi-evt\n\n\
             memory-region: pc.ram\n  0000000000000000-0000000007ffffff (prio 0, ram): pc.ram\n\n"
        );
        assert!(format_mtree(&sample(), true).contains(
            "    0000000000000600-000000000000063f (prio 0, i/o): piix4-pm [disabled]\n"
        ));
    }
}
