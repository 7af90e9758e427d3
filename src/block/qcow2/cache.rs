//! The qcow2 metadata cache: L2 table slices and refcount blocks of every image of a chain in
//! one structure. Each (image, table kind) has its own quota so QEMU's per-image options
//! (`l2-cache-size`, `refcount-cache-size`, ...) keep their meaning, while the storage, the
//! LRU clock and the idle cleaning are shared: the place where a chain-wide index can later
//! replace per-layer lookups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which table an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    L2,
    Refcount,
}

/// Identifies one image of the chain in the shared cache.
pub type ImageId = u32;

struct Slot {
    data: Box<[u8]>,
    dirty: bool,
    last_use: u64,
    used_since_clean: bool,
}

struct Pool {
    quota: usize,
    entry_size: usize,
    clean_interval: Option<Duration>,
    last_clean: Instant,
    slots: HashMap<u64, Slot>,
}

#[derive(Default)]
struct Inner {
    clock: u64,
    next_image: ImageId,
    pools: HashMap<(ImageId, TableKind), Pool>,
}

/// Shared metadata cache. Cheap to clone (an `Arc`).
#[derive(Clone, Default)]
pub struct MetadataCache {
    inner: Arc<Mutex<Inner>>,
}

/// A dirty entry pushed out of the cache, which its owner must write back.
pub struct Evicted {
    pub offset: u64,
    pub data: Box<[u8]>,
}

/// Statistics, for tests and `info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub entries: usize,
    pub quota: usize,
    pub bytes: usize,
}

impl MetadataCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an image with its quotas (in entries) and returns its id.
    pub fn register(
        &self,
        l2_entries: usize,
        l2_entry_size: usize,
        refcount_entries: usize,
        refcount_entry_size: usize,
        clean_interval: Option<Duration>,
    ) -> ImageId {
        let mut g = self.lock();
        let id = g.next_image;
        g.next_image += 1;
        for (kind, quota, size) in [
            (TableKind::L2, l2_entries, l2_entry_size),
            (TableKind::Refcount, refcount_entries, refcount_entry_size),
        ] {
            g.pools.insert(
                (id, kind),
                Pool {
                    quota: quota.max(1),
                    entry_size: size,
                    clean_interval,
                    last_clean: Instant::now(),
                    slots: HashMap::new(),
                },
            );
        }
        id
    }

    /// Forgets an image (closing it). Dirty entries must have been written before.
    pub fn unregister(&self, id: ImageId) {
        let mut g = self.lock();
        g.pools.remove(&(id, TableKind::L2));
        g.pools.remove(&(id, TableKind::Refcount));
    }

    /// Runs `f` on a cached entry, if present.
    pub fn with<R>(
        &self,
        id: ImageId,
        kind: TableKind,
        offset: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let mut g = self.lock();
        g.clock += 1;
        let clock = g.clock;
        let pool = g.pools.get_mut(&(id, kind))?;
        Self::maybe_clean(pool);
        let slot = pool.slots.get_mut(&offset)?;
        slot.last_use = clock;
        slot.used_since_clean = true;
        Some(f(&slot.data))
    }

    /// Runs `f` on a cached entry to modify it, marking it dirty.
    pub fn with_mut<R>(
        &self,
        id: ImageId,
        kind: TableKind,
        offset: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Option<R> {
        let mut g = self.lock();
        g.clock += 1;
        let clock = g.clock;
        let pool = g.pools.get_mut(&(id, kind))?;
        let slot = pool.slots.get_mut(&offset)?;
        slot.last_use = clock;
        slot.used_since_clean = true;
        slot.dirty = true;
        Some(f(&mut slot.data))
    }

    /// Inserts an entry (clean or dirty). If the pool is full, the least recently used entry
    /// is removed; it is returned when dirty so the owner writes it back in the right order.
    pub fn insert(
        &self,
        id: ImageId,
        kind: TableKind,
        offset: u64,
        data: Box<[u8]>,
        dirty: bool,
    ) -> Option<Evicted> {
        let mut g = self.lock();
        g.clock += 1;
        let clock = g.clock;
        let pool = g.pools.get_mut(&(id, kind))?;
        debug_assert_eq!(data.len(), pool.entry_size);
        let mut evicted = None;
        if !pool.slots.contains_key(&offset) && pool.slots.len() >= pool.quota {
            if let Some((&victim, _)) = pool.slots.iter().min_by_key(|(_, s)| s.last_use) {
                let slot = pool.slots.remove(&victim).expect("victim exists");
                if slot.dirty {
                    evicted = Some(Evicted {
                        offset: victim,
                        data: slot.data,
                    });
                }
            }
        }
        pool.slots.insert(
            offset,
            Slot {
                data,
                dirty,
                last_use: clock,
                used_since_clean: true,
            },
        );
        evicted
    }

    /// Whether inserting a new entry would push out a dirty one (so the owner can make its
    /// ordering barrier first).
    pub fn would_evict_dirty(&self, id: ImageId, kind: TableKind, offset: u64) -> bool {
        let g = self.lock();
        let Some(pool) = g.pools.get(&(id, kind)) else {
            return false;
        };
        if pool.slots.contains_key(&offset) || pool.slots.len() < pool.quota {
            return false;
        }
        pool.slots
            .values()
            .min_by_key(|s| s.last_use)
            .map(|s| s.dirty)
            .unwrap_or(false)
    }

    /// Copies out every dirty entry of a pool (sorted by offset) without cleaning them; the
    /// owner writes them and then calls [`MetadataCache::mark_clean`].
    pub fn dirty_entries(&self, id: ImageId, kind: TableKind) -> Vec<(u64, Box<[u8]>)> {
        let g = self.lock();
        let Some(pool) = g.pools.get(&(id, kind)) else {
            return Vec::new();
        };
        let mut v: Vec<(u64, Box<[u8]>)> = pool
            .slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(o, s)| (*o, s.data.clone()))
            .collect();
        v.sort_by_key(|(o, _)| *o);
        v
    }

    /// Marks entries clean after they were written, unless modified again meanwhile (the
    /// caller holds the image lock, so they were not).
    pub fn mark_clean(&self, id: ImageId, kind: TableKind, offsets: &[u64]) {
        let mut g = self.lock();
        if let Some(pool) = g.pools.get_mut(&(id, kind)) {
            for o in offsets {
                if let Some(s) = pool.slots.get_mut(o) {
                    s.dirty = false;
                }
            }
        }
    }

    /// Drops an entry (the table moved or was freed).
    pub fn remove(&self, id: ImageId, kind: TableKind, offset: u64) {
        let mut g = self.lock();
        if let Some(pool) = g.pools.get_mut(&(id, kind)) {
            pool.slots.remove(&offset);
        }
    }

    /// Drops every clean entry of the pools (used after repairs that rewrite tables).
    pub fn drop_clean(&self, id: ImageId) {
        let mut g = self.lock();
        for kind in [TableKind::L2, TableKind::Refcount] {
            if let Some(pool) = g.pools.get_mut(&(id, kind)) {
                pool.slots.retain(|_, s| s.dirty);
            }
        }
    }

    /// `cache-clean-interval`: entries of a pool not used during a whole interval are
    /// dropped (clean ones only). Called on access, and by [`MetadataCache::clean_idle`]
    /// from a timer.
    fn maybe_clean(pool: &mut Pool) {
        let Some(interval) = pool.clean_interval else {
            return;
        };
        if interval.is_zero() || pool.last_clean.elapsed() < interval {
            return;
        }
        pool.slots.retain(|_, s| s.dirty || s.used_since_clean);
        for s in pool.slots.values_mut() {
            s.used_since_clean = false;
        }
        pool.last_clean = Instant::now();
    }

    /// Runs the idle cleaning on every pool whose interval elapsed (for the main loop's timer).
    pub fn clean_idle(&self) {
        let mut g = self.lock();
        for pool in g.pools.values_mut() {
            Self::maybe_clean(pool);
        }
    }

    pub fn stats(&self, id: ImageId, kind: TableKind) -> PoolStats {
        let g = self.lock();
        g.pools
            .get(&(id, kind))
            .map(|p| PoolStats {
                entries: p.slots.len(),
                quota: p.quota,
                bytes: p.slots.len() * p.entry_size,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_evicts_lru_and_reports_dirty_victims() {
        let c = MetadataCache::new();
        let id = c.register(2, 8, 1, 8, None);
        assert!(c
            .insert(id, TableKind::L2, 0, vec![0; 8].into(), true)
            .is_none());
        assert!(c
            .insert(id, TableKind::L2, 8, vec![1; 8].into(), false)
            .is_none());
        c.with(id, TableKind::L2, 0, |_| ());
        // Entry 8 is the LRU and clean: evicted silently.
        assert!(c
            .insert(id, TableKind::L2, 16, vec![2; 8].into(), false)
            .is_none());
        assert!(c.with(id, TableKind::L2, 8, |_| ()).is_none());
        c.with(id, TableKind::L2, 16, |_| ());
        assert!(c.would_evict_dirty(id, TableKind::L2, 24));
        let ev = c
            .insert(id, TableKind::L2, 24, vec![3; 8].into(), false)
            .unwrap();
        assert_eq!(ev.offset, 0);
        assert_eq!(c.stats(id, TableKind::L2).entries, 2);
    }

    #[test]
    fn idle_entries_are_cleaned() {
        let c = MetadataCache::new();
        let id = c.register(4, 8, 1, 8, Some(Duration::from_millis(1)));
        c.insert(id, TableKind::L2, 0, vec![0; 8].into(), false);
        c.insert(id, TableKind::L2, 8, vec![0; 8].into(), true);
        std::thread::sleep(Duration::from_millis(5));
        c.clean_idle(); // first pass clears the used flags
        std::thread::sleep(Duration::from_millis(5));
        c.clean_idle(); // second pass drops what stayed unused
        assert_eq!(c.stats(id, TableKind::L2).entries, 1, "dirty entry kept");
    }
}
