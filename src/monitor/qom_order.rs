//! The order in which QEMU 7.2 walks the children of a QOM container (`/chardevs`, ...).
//!
//! QOM keeps an object's properties in a GLib hash table (GLib 2.74, as in Debian 12)
//! keyed by name, and `object_child_foreach` walks that table slot by slot. Commands that
//! list children (`query-chardev`) therefore report them in an order fixed by the names
//! and the insertion history. This module replays the table's placement rules for a
//! sequence of insertions (QEMU never removes these children while vmscope runs):
//!
//! * key hash: djb2 over the bytes as signed chars (`h = h * 33 + c`, from 5381), values
//!   0 and 1 replaced by 2 (they mark empty and deleted slots);
//! * home slot: `(hash * 11) mod prime(shift)` in 32-bit arithmetic; collisions probe
//!   quadratically (`i += ++step`, masked by the power-of-two size);
//! * the table starts with 8 slots and is resized after an insertion when it is at least
//!   15/16 full (or under 1/4 full beyond the minimum size), to the power of two above
//!   `nodes * 1.333`, re-placing the entries in place in slot order, evicting and
//!   re-placing any not-yet-moved occupant of a target slot.

/// `prime_mod[shift]`: the modulus GLib uses for a table of `1 << shift` slots.
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];
const MIN_SHIFT: u32 = 3;

/// GLib's `g_str_hash`.
fn str_hash(key: &str) -> u32 {
    key.bytes().fold(5381u32, |h, b| {
        h.wrapping_mul(33).wrapping_add(b as i8 as i32 as u32)
    })
}

/// A replay of one GLib hash table holding indices of inserted keys.
struct Table {
    size: usize,
    modulus: u32,
    /// Per slot: the key hash (0 = empty) and the insertion index of its key.
    slots: Vec<(u32, usize)>,
    nodes: usize,
    occupied: usize,
}

impl Table {
    fn new() -> Table {
        let mut table = Table {
            size: 0,
            modulus: 0,
            slots: Vec::new(),
            nodes: 0,
            occupied: 0,
        };
        table.set_shift(MIN_SHIFT);
        table.slots = vec![(0, 0); table.size];
        table
    }

    fn set_shift(&mut self, shift: u32) {
        self.size = 1 << shift;
        self.modulus = PRIME_MOD[shift as usize];
    }

    fn home(&self, hash: u32) -> usize {
        (hash.wrapping_mul(11) % self.modulus) as usize
    }

    fn insert(&mut self, hash: u32, key: usize) {
        let mask = self.size - 1;
        let mut index = self.home(hash);
        let mut step = 0;
        while self.slots[index].0 != 0 {
            step += 1;
            index = (index + step) & mask;
        }
        self.slots[index] = (hash, key);
        self.nodes += 1;
        self.occupied += 1;
        let too_sparse = self.size > self.nodes * 4 && self.size > 1 << MIN_SHIFT;
        let too_full = self.size <= self.occupied + self.occupied / 16;
        if too_sparse || too_full {
            self.resize();
        }
    }

    fn resize(&mut self) {
        let old_size = self.size;
        // GLib computes `nnodes * 1.333` in floating point and truncates it.
        let mut wanted = (self.nodes as f64 * 1.333) as usize;
        let mut shift = 0;
        while wanted != 0 {
            wanted >>= 1;
            shift += 1;
        }
        self.set_shift(shift.max(MIN_SHIFT));
        if self.size > old_size {
            self.slots.resize(self.size, (0, 0));
        }
        let mask = self.size - 1;
        let mut moved = vec![false; self.size.max(old_size)];
        for i in 0..old_size {
            if self.slots[i].0 == 0 || moved[i] {
                continue;
            }
            let mut entry = std::mem::take(&mut self.slots[i]);
            loop {
                let mut index = self.home(entry.0);
                let mut step = 0;
                while moved[index] {
                    step += 1;
                    index = (index + step) & mask;
                }
                moved[index] = true;
                let evicted = std::mem::replace(&mut self.slots[index], entry);
                if evicted.0 == 0 {
                    break;
                }
                entry = evicted;
            }
        }
        self.slots.truncate(self.size);
        self.occupied = self.nodes;
    }
}

/// The order `object_child_foreach` visits children added under `names` (in insertion
/// order): indices into `names`.
pub(crate) fn child_walk_order(names: &[&str]) -> Vec<usize> {
    let mut table = Table::new();
    for (i, name) in names.iter().enumerate() {
        let hash = match str_hash(name) {
            0 | 1 => 2,
            h => h,
        };
        table.insert(hash, i);
    }
    table
        .slots
        .iter()
        .filter(|(hash, _)| *hash != 0)
        .map(|&(_, key)| key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `query-chardev` lists the walk in reverse (it prepends to its result list).
    fn query_chardev_order(names: &[&str]) -> Vec<String> {
        child_walk_order(names)
            .into_iter()
            .rev()
            .map(|i| names[i].to_string())
            .collect()
    }

    /// Orders QEMU 7.2 (GLib 2.74) printed for these command lines.
    #[test]
    fn matches_qemu_7_2() {
        assert_eq!(
            query_chardev_order(&["a", "b", "compat_monitor0"]),
            ["a", "b", "compat_monitor0"]
        );
        assert_eq!(
            query_chardev_order(&[
                "a",
                "b",
                "c",
                "d",
                "e",
                "f",
                "g",
                "h",
                "i",
                "j",
                "compat_monitor0"
            ]),
            [
                "i",
                "c",
                "j",
                "d",
                "e",
                "compat_monitor0",
                "f",
                "g",
                "a",
                "h",
                "b"
            ]
        );
        assert_eq!(
            query_chardev_order(&[
                "c_stdio",
                "c_file",
                "c_null",
                "c_unixs",
                "c_tcps",
                "c_tel",
                "c_tcpc",
                "c_unixc",
                "c_pipe",
                "c_mux-base",
                "c_mux",
                "compat_monitor1"
            ]),
            [
                "c_pipe",
                "c_unixs",
                "c_mux-base",
                "c_tcpc",
                "c_null",
                "c_tel",
                "compat_monitor1",
                "c_tcps",
                "c_file",
                "c_mux",
                "c_stdio",
                "c_unixc"
            ]
        );
    }

    #[test]
    fn many_names_all_visited_once() {
        let names: Vec<String> = (0..300).map(|i| format!("chardev{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut order = child_walk_order(&refs);
        order.sort();
        assert_eq!(order, (0..300).collect::<Vec<_>>());
    }
}
