//! One qcow2 image file: its own mapping (L1/L2), allocation (refcounts) and writes. It knows
//! nothing of the layers above or below it; the chain walks layers iteratively
//! ([`crate::block::node`]), so no call here recurses into a backing image.
//!
//! Crash-consistency rules (a `kill -9` or power loss at any point leaves at most leaked
//! clusters):
//! - a cluster's refcount is durable before any L2/L1 entry referencing it is written
//!   (dirty refcount blocks are written and a barrier taken before any dirty L2 slice);
//! - guest data is written to a new cluster before the L2 entry pointing to it;
//! - a new L2 table is on disk (fully initialised) before the L1 entry pointing to it;
//! - references are dropped before refcounts: freed clusters wait in `pending_free` until
//!   the L2/L1 updates that unreferenced them are durable, so they cannot be reused early;
//! - the header, L1 and refcount-table switches are single aligned writes.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::cache::{ImageId, MetadataCache, TableKind};
use super::compress;
use super::header::{self, CompressionType, Header};
use super::refcount;
use super::snapshot::{self, InternalSnapshot};
use crate::block::error::{BlockError, BlockResult};
use crate::block::host_file::HostFile;
use crate::block::options::Qcow2CacheOptions;
use crate::block::zero_scan::is_zero;

pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;

/// Default maximum L2 cache on Linux (QEMU's `DEFAULT_L2_CACHE_MAX_SIZE`).
const DEFAULT_L2_CACHE_MAX: u64 = 32 << 20;
const MIN_L2_CACHE_CLUSTERS: u64 = 2;
const MIN_REFCOUNT_CACHE_CLUSTERS: u64 = 4;
const DEFAULT_CACHE_CLEAN_INTERVAL: u64 = 600;

/// What one L2 entry says about a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterMapping {
    /// Not allocated here: the backing chain decides.
    Unallocated,
    /// Reads as zeros; `host` is the preallocated cluster if any.
    Zero { host: Option<u64> },
    /// Plain data at this host offset (of the cluster start).
    Data { host: u64, copied: bool },
    /// A compressed cluster: raw L2 entry (offset and size are decoded on read).
    Compressed { entry: u64 },
}

/// A run of clusters with the same kind of mapping, as returned by [`Qcow2Image::map`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qcow2Extent {
    pub len: u64,
    pub mapping: ClusterMapping,
    /// For `Data`, the host offset of the first byte of the extent.
    pub host_offset: Option<u64>,
}

pub(super) struct State {
    header: Header,
    l1: Vec<u64>,
    l1_dirty: bool,
    reftable: Vec<u64>,
    reftable_loaded: bool,
    /// First cluster index that may be free.
    free_hint: u64,
    /// Highest cluster end ever allocated (bytes); the file may be shorter until written.
    alloc_end: u64,
    /// Clusters whose references were dropped but whose refcount decrement waits for the
    /// L2/L1 change to be durable: (host offset, number of clusters).
    pending_free: Vec<(u64, u64)>,
    /// Host ranges to punch once freed (discard requests pass down as QEMU's
    /// `pass-discard-request=on`).
    punch_after_free: bool,
    dirty_bit_on_disk: bool,
    last_decompressed: Option<(u64, Vec<u8>)>,
    /// Where the next compressed cluster may be appended (inside a partly used cluster).
    compressed_cursor: Option<u64>,
    /// Guest clusters whose new host cluster is being written outside the lock; other
    /// requests touching them wait (`alloc_done`) so no write is lost.
    allocating: std::collections::HashSet<u64>,
}

/// An open qcow2 image.
pub struct Qcow2Image {
    file: HostFile,
    cache: MetadataCache,
    cache_id: ImageId,
    cluster_bits: u32,
    cluster_size: u64,
    l2_bits: u32,
    slice_bytes: u64,
    refcount_order: u32,
    read_only: bool,
    compression: CompressionType,
    snapshots: Vec<InternalSnapshot>,
    state: Mutex<State>,
    /// Held shared by data writes done outside `state`; taken exclusively before freed
    /// clusters become reusable.
    inflight: std::sync::RwLock<()>,
    alloc_done: std::sync::Condvar,
}

fn corrupt(msg: impl Into<String>) -> BlockError {
    BlockError::Corrupt(msg.into())
}

/// Resolved cache sizes, as QEMU's `read_cache_sizes()` computes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub l2_cache_bytes: u64,
    pub l2_entry_size: u64,
    pub refcount_cache_bytes: u64,
    pub clean_interval: u64,
}

/// Applies QEMU's rules for `cache-size`, `l2-cache-size`, `refcount-cache-size` and
/// `l2-cache-entry-size`, with its error texts.
pub fn resolve_cache_sizes(
    opts: &Qcow2CacheOptions,
    virtual_size: u64,
    cluster_size: u64,
) -> BlockResult<CacheSizes> {
    let min_refcount = MIN_REFCOUNT_CACHE_CLUSTERS * cluster_size;
    let max_l2_entries = virtual_size.div_ceil(cluster_size);
    let max_l2_cache = (max_l2_entries * 8).div_ceil(cluster_size) * cluster_size;
    let (mut l2, mut rc);
    if let Some(combined) = opts.cache_size {
        match (opts.l2_cache_size, opts.refcount_cache_size) {
            (Some(_), Some(_)) => return Err(BlockError::InvalidOption(
                "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"
                    .into(),
            )),
            (Some(l), None) => {
                if l > combined {
                    return Err(BlockError::InvalidOption(
                        "l2-cache-size may not exceed cache-size".into(),
                    ));
                }
                l2 = l;
                rc = combined - l;
            }
            (None, Some(r)) => {
                if r > combined {
                    return Err(BlockError::InvalidOption(
                        "refcount-cache-size may not exceed cache-size".into(),
                    ));
                }
                rc = r;
                l2 = combined - r;
            }
            (None, None) => {
                if combined >= max_l2_cache + min_refcount {
                    l2 = max_l2_cache;
                    rc = combined - l2;
                } else {
                    rc = combined.min(min_refcount);
                    l2 = combined - rc;
                }
            }
        }
    } else {
        l2 = opts
            .l2_cache_size
            .unwrap_or_else(|| max_l2_cache.min(DEFAULT_L2_CACHE_MAX));
        rc = opts.refcount_cache_size.unwrap_or(min_refcount);
    }
    let entry = opts.l2_cache_entry_size.unwrap_or(cluster_size);
    if !entry.is_power_of_two() || entry < 512 || entry > cluster_size {
        return Err(BlockError::InvalidOption(format!(
            "L2 cache entry size must be a power of two between 512 and the cluster size ({cluster_size})"
        )));
    }
    let l2_entries = (l2 / entry).max(MIN_L2_CACHE_CLUSTERS);
    if l2_entries > i32::MAX as u64 {
        return Err(BlockError::InvalidOption("L2 cache size too big".into()));
    }
    let rc_entries = (rc / cluster_size).max(MIN_L2_CACHE_CLUSTERS);
    if rc_entries > i32::MAX as u64 {
        return Err(BlockError::InvalidOption(
            "Refcount cache size too big".into(),
        ));
    }
    l2 = l2_entries * entry;
    rc = rc_entries * cluster_size;
    let clean_interval = opts
        .cache_clean_interval
        .unwrap_or(DEFAULT_CACHE_CLEAN_INTERVAL);
    if clean_interval > u32::MAX as u64 {
        return Err(BlockError::InvalidOption(
            "Cache clean interval too big".into(),
        ));
    }
    Ok(CacheSizes {
        l2_cache_bytes: l2,
        l2_entry_size: entry,
        refcount_cache_bytes: rc,
        clean_interval,
    })
}

impl Qcow2Image {
    /// Opens an image. A dirty image opened read-write gets its refcounts rebuilt as QEMU
    /// does; a corrupt one is refused read-write (or opened read-only with `auto_read_only`).
    pub fn open(
        file: HostFile,
        cache: MetadataCache,
        opts: &Qcow2CacheOptions,
        auto_read_only: bool,
    ) -> BlockResult<(Qcow2Image, Option<String>)> {
        let file_len = file.len()?;
        let mut first = vec![0u8; (1 << 21).min(file_len.max(512) as usize)];
        file.read_at(&mut first, 0)?;
        let h = Header::parse(&first)?;
        let cluster_size = h.cluster_size();
        let unsupported = h.incompatible_features & !header::INCOMPAT_SUPPORTED;
        if unsupported != 0 {
            return Err(BlockError::Unsupported(
                h.unsupported_features_message(unsupported),
            ));
        }
        if h.crypt_method != 0 {
            return Err(BlockError::Unsupported(
                "qcow2: encrypted images are not supported by vmscope".into(),
            ));
        }
        let mut warning = None;
        let mut read_only = file.is_read_only();
        if h.incompatible_features & header::INCOMPAT_CORRUPT != 0 && !read_only {
            if !auto_read_only {
                return Err(BlockError::Corrupt(
                    "qcow2: Image is corrupt; cannot be opened read/write".into(),
                ));
            }
            warning = Some("qcow2: Image is corrupt; opening it read-only".to_string());
            read_only = true;
        }
        if h.size > (1u64 << 62) {
            return Err(corrupt("Image size too large"));
        }
        // L1 table.
        let l2_bits = h.cluster_bits - 3;
        let needed_l1 = h.size.div_ceil(cluster_size << l2_bits);
        if h.l1_size as u64 * 8 > header::MAX_L1_BYTES {
            return Err(corrupt("Active L1 table too large"));
        }
        if (h.l1_size as u64) < needed_l1 {
            return Err(corrupt("L1 table is too small"));
        }
        if h.l1_size > 0
            && (h.l1_table_offset % cluster_size != 0
                || h.l1_table_offset.saturating_add(h.l1_size as u64 * 8) > file_len)
        {
            return Err(corrupt("Invalid L1 table offset"));
        }
        let mut l1_bytes = vec![0u8; h.l1_size as usize * 8];
        file.read_at(&mut l1_bytes, h.l1_table_offset)?;
        let l1: Vec<u64> = l1_bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
            .collect();
        drop(l1_bytes);
        // Refcount table.
        let rt_bytes = h.refcount_table_clusters as u64 * cluster_size;
        if rt_bytes > header::MAX_REFTABLE_BYTES {
            return Err(corrupt("Reference count table too large"));
        }
        if h.refcount_table_clusters == 0
            || h.refcount_table_offset % cluster_size != 0
            || h.refcount_table_offset.saturating_add(rt_bytes)
                > file_len.div_ceil(cluster_size) * cluster_size
        {
            return Err(corrupt("Invalid reference count table offset"));
        }
        // Read-only images (every backing layer) never consult their refcounts, so the
        // table is loaded on first use: a long chain costs no refcount memory per layer.
        let reftable: Vec<u64> = Vec::new();
        // Snapshot table.
        if h.nb_snapshots > header::MAX_SNAPSHOTS {
            return Err(corrupt("Too many snapshots"));
        }
        let snapshots = if h.nb_snapshots > 0 {
            if h.snapshots_offset % cluster_size != 0 || h.snapshots_offset >= file_len {
                return Err(corrupt("Invalid snapshot table offset"));
            }
            let max = (file_len - h.snapshots_offset).min(64 << 20) as usize;
            let mut buf = vec![0u8; max];
            file.read_at(&mut buf, h.snapshots_offset)?;
            let s = snapshot::parse_table(&buf, h.nb_snapshots)?;
            for sn in &s {
                if sn.l1_size as u64 * 8 > header::MAX_L1_BYTES {
                    return Err(corrupt("Snapshot L1 table too large"));
                }
            }
            s
        } else {
            Vec::new()
        };

        let sizes = resolve_cache_sizes(opts, h.size, cluster_size)?;
        let cache_id = cache.register(
            (sizes.l2_cache_bytes / sizes.l2_entry_size) as usize,
            sizes.l2_entry_size as usize,
            (sizes.refcount_cache_bytes / cluster_size) as usize,
            cluster_size as usize,
            if sizes.clean_interval == 0 {
                None
            } else {
                Some(Duration::from_secs(sizes.clean_interval))
            },
        );
        let dirty = h.incompatible_features & header::INCOMPAT_DIRTY != 0;
        let img = Qcow2Image {
            cluster_bits: h.cluster_bits,
            cluster_size,
            l2_bits,
            slice_bytes: sizes.l2_entry_size,
            refcount_order: h.refcount_order,
            read_only,
            compression: h.compression_type,
            snapshots,
            cache,
            cache_id,
            inflight: std::sync::RwLock::new(()),
            alloc_done: std::sync::Condvar::new(),
            state: Mutex::new(State {
                l1,
                l1_dirty: false,
                reftable,
                reftable_loaded: false,
                free_hint: 0,
                alloc_end: file_len.div_ceil(cluster_size) * cluster_size,
                pending_free: Vec::new(),
                punch_after_free: true,
                dirty_bit_on_disk: dirty,
                last_decompressed: None,
                compressed_cursor: None,
                allocating: std::collections::HashSet::new(),
                header: h,
            }),
            file,
        };
        if dirty && !img.read_only {
            let report = super::check::check(&img, true, true)?;
            if report.check_errors > 0 || report.corruptions_after > 0 {
                return Err(corrupt("Could not repair dirty image"));
            }
            img.clear_dirty_bit()?;
        }
        Ok((img, warning))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no request is allocating guest cluster `cluster` (its start offset).
    fn wait_for_allocation<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        cluster: u64,
    ) -> MutexGuard<'a, State> {
        while st.allocating.contains(&cluster) {
            st = self.alloc_done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st
    }

    pub fn file(&self) -> &HostFile {
        &self.file
    }
    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }
    pub fn cluster_bits(&self) -> u32 {
        self.cluster_bits
    }
    pub fn refcount_order(&self) -> u32 {
        self.refcount_order
    }
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    pub fn header(&self) -> Header {
        self.lock().header.clone()
    }
    pub fn virtual_size(&self) -> u64 {
        self.lock().header.size
    }
    pub fn snapshots(&self) -> &[InternalSnapshot] {
        &self.snapshots
    }
    pub fn compression_type(&self) -> CompressionType {
        self.compression
    }
    pub fn metadata_cache(&self) -> (&MetadataCache, ImageId) {
        (&self.cache, self.cache_id)
    }
    /// The active L1 table (for checks and tools).
    pub fn l1_table(&self) -> Vec<u64> {
        self.lock().l1.clone()
    }
    pub fn refcount_table(&self) -> BlockResult<Vec<u64>> {
        let mut st = self.lock();
        self.ensure_reftable(&mut st)?;
        Ok(st.reftable.clone())
    }

    // ----- mapping -----

    fn l2_entries_per_slice(&self) -> u64 {
        self.slice_bytes / 8
    }

    /// Loads (through the shared cache) the L2 slice holding entry `l2_index` of the table at
    /// `l2_off`, and runs `f` on it.
    fn with_l2_slice<R>(
        &self,
        st: &mut State,
        l2_off: u64,
        l2_index: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> BlockResult<R> {
        let slice_off = l2_off + (l2_index / self.l2_entries_per_slice()) * self.slice_bytes;
        let mut f = Some(f);
        if let Some(r) = self
            .cache
            .with(self.cache_id, TableKind::L2, slice_off, |b| {
                (f.take().expect("once"))(b)
            })
        {
            return Ok(r);
        }
        let data = self.load_table(st, slice_off, self.slice_bytes, "L2 table")?;
        let r = (f.take().expect("once"))(&data);
        self.cache_insert(st, TableKind::L2, slice_off, data, false)?;
        Ok(r)
    }

    fn load_table(&self, st: &State, off: u64, len: u64, what: &str) -> BlockResult<Box<[u8]>> {
        if off
            .checked_add(len)
            .is_none_or(|e| e > self.file.len().unwrap_or(0).max(st.alloc_end))
        {
            return Err(corrupt(format!(
                "{what} at offset {off:#x} is past the end of the image file"
            )));
        }
        let mut data = vec![0u8; len as usize].into_boxed_slice();
        self.file.read_at(&mut data, off)?;
        Ok(data)
    }

    /// Inserts into the shared cache, writing back a dirty victim in the right order first.
    fn cache_insert(
        &self,
        st: &mut State,
        kind: TableKind,
        off: u64,
        data: Box<[u8]>,
        dirty: bool,
    ) -> BlockResult<()> {
        if kind == TableKind::L2 && self.cache.would_evict_dirty(self.cache_id, kind, off) {
            // The victim is a dirty L2 slice: its refcounts must be durable first.
            self.write_dirty(st, TableKind::Refcount)?;
            self.file.barrier()?;
        }
        if let Some(ev) = self.cache.insert(self.cache_id, kind, off, data, dirty) {
            self.file.write_at(&ev.data, ev.offset)?;
        }
        Ok(())
    }

    fn decode_entry(&self, version: u32, e: u64) -> BlockResult<ClusterMapping> {
        if e & OFLAG_COMPRESSED != 0 {
            return Ok(ClusterMapping::Compressed { entry: e });
        }
        let off = e & L2E_OFFSET_MASK;
        if !off.is_multiple_of(self.cluster_size) {
            return Err(corrupt(format!(
                "Cluster allocation offset {off:#x} unaligned (L2 entry {e:#x})"
            )));
        }
        if version >= 3 && e & OFLAG_ZERO != 0 {
            return Ok(ClusterMapping::Zero {
                host: (off != 0).then_some(off),
            });
        }
        if off == 0 {
            return Ok(ClusterMapping::Unallocated);
        }
        Ok(ClusterMapping::Data {
            host: off,
            copied: e & OFLAG_COPIED != 0,
        })
    }

    /// The raw L2 entry of the cluster containing guest offset `g` (0 when no L2 table).
    fn l2_entry(&self, st: &mut State, g: u64) -> BlockResult<u64> {
        let l1_index = g >> (self.cluster_bits + self.l2_bits);
        let Some(&l1e) = st.l1.get(l1_index as usize) else {
            return Ok(0);
        };
        let l2_off = l1e & L1E_OFFSET_MASK;
        if l2_off == 0 {
            return Ok(0);
        }
        if !l2_off.is_multiple_of(self.cluster_size) {
            return Err(corrupt(format!("L2 table offset {l2_off:#x} unaligned")));
        }
        if l2_off < self.cluster_size {
            return Err(corrupt("L2 table overlaps the image header"));
        }
        let l2_index = (g >> self.cluster_bits) & ((1 << self.l2_bits) - 1);
        let within = (l2_index % self.l2_entries_per_slice()) as usize * 8;
        self.with_l2_slice(st, l2_off, l2_index, |b| {
            u64::from_be_bytes(b[within..within + 8].try_into().expect("8"))
        })
    }

    /// The mapping of `[g, g+max_len)` in this image alone: the longest run (within one L2
    /// slice) starting at `g` whose clusters map the same way.
    pub fn map(&self, g: u64, max_len: u64) -> BlockResult<Qcow2Extent> {
        let mut st = self.lock();
        let size = st.header.size;
        if g >= size || max_len == 0 {
            return Err(BlockError::OutOfRange {
                offset: g,
                len: max_len,
                size,
            });
        }
        let max_len = max_len.min(size - g);
        let version = st.header.version;
        let cs = self.cluster_size;
        let first = self.decode_entry(version, self.l2_entry(&mut st, g)?)?;
        let in_cluster = g & (cs - 1);
        let mut len = (cs - in_cluster).min(max_len);
        let host_offset = match first {
            ClusterMapping::Data { host, .. } => Some(host + in_cluster),
            _ => None,
        };
        if matches!(first, ClusterMapping::Compressed { .. }) {
            return Ok(Qcow2Extent {
                len,
                mapping: first,
                host_offset,
            });
        }
        // Extend over following clusters of the same slice.
        let slice_span = self.l2_entries_per_slice() * cs;
        let slice_end = (g / slice_span + 1) * slice_span;
        let mut next_g = g - in_cluster + cs;
        while len < max_len && next_g < slice_end {
            let m = self.decode_entry(version, self.l2_entry(&mut st, next_g)?)?;
            let same = match (first, m) {
                (ClusterMapping::Unallocated, ClusterMapping::Unallocated) => true,
                (ClusterMapping::Zero { host: None }, ClusterMapping::Zero { host: None }) => true,
                (
                    ClusterMapping::Zero { host: Some(h0) },
                    ClusterMapping::Zero { host: Some(h) },
                ) => h == h0 + (next_g - (g - in_cluster)),
                (
                    ClusterMapping::Data {
                        host: h0,
                        copied: c0,
                    },
                    ClusterMapping::Data { host, copied },
                ) => c0 == copied && host == h0 + (next_g - (g - in_cluster)),
                _ => false,
            };
            if !same {
                break;
            }
            len = (len + cs).min(max_len);
            next_g += cs;
        }
        Ok(Qcow2Extent {
            len,
            mapping: first,
            host_offset,
        })
    }

    /// Reads guest bytes that [`Qcow2Image::map`] reported as `Compressed` (a part of one
    /// cluster).
    pub fn read_compressed(&self, entry: u64, in_cluster: u64, buf: &mut [u8]) -> BlockResult<()> {
        let mut st = self.lock();
        if let Some((e, data)) = &st.last_decompressed {
            if *e == entry {
                buf.copy_from_slice(&data[in_cluster as usize..in_cluster as usize + buf.len()]);
                return Ok(());
            }
        }
        let data = self.decompress_cluster(entry)?;
        buf.copy_from_slice(&data[in_cluster as usize..in_cluster as usize + buf.len()]);
        st.last_decompressed = Some((entry, data));
        Ok(())
    }

    /// (host offset, compressed bytes) of a compressed L2 entry.
    pub fn compressed_extent(&self, entry: u64) -> (u64, u64) {
        let shift = 62 - (self.cluster_bits - 8);
        let mask = (1u64 << (self.cluster_bits - 8)) - 1;
        let coffset = entry & ((1u64 << shift) - 1);
        let nb_sectors = ((entry >> shift) & mask) + 1;
        let csize = nb_sectors * 512 - (coffset & 511);
        (coffset, csize)
    }

    fn decompress_cluster(&self, entry: u64) -> BlockResult<Vec<u8>> {
        let (coffset, csize) = self.compressed_extent(entry);
        let file_len = self.file.len()?;
        if coffset >= file_len {
            return Err(corrupt(format!(
                "Compressed cluster at {coffset:#x} is past the end of the image file"
            )));
        }
        let csize = csize.min(file_len - coffset).min(2 * self.cluster_size);
        let mut input = vec![0u8; csize as usize];
        self.file.read_at(&mut input, coffset)?;
        let mut out = vec![0u8; self.cluster_size as usize];
        compress::decompress(self.compression, &input, &mut out)?;
        Ok(out)
    }

    // ----- refcounts -----

    fn rb_bits(&self) -> u32 {
        self.cluster_bits + 3 - self.refcount_order
    }

    /// Loads the refcount table on first use.
    pub(super) fn ensure_reftable(&self, st: &mut State) -> BlockResult<()> {
        if st.reftable_loaded {
            return Ok(());
        }
        let h = &st.header;
        let rt_bytes = h.refcount_table_clusters as u64 * self.cluster_size;
        let mut rt = vec![0u8; rt_bytes as usize];
        self.file.read_at(&mut rt, h.refcount_table_offset)?;
        st.reftable = rt
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
            .collect();
        st.reftable_loaded = true;
        Ok(())
    }

    fn refblock_offset(&self, st: &mut State, cluster: u64) -> BlockResult<Option<u64>> {
        self.ensure_reftable(st)?;
        let b = cluster >> self.rb_bits();
        match st.reftable.get(b as usize) {
            None => Ok(None),
            Some(&e) => {
                let off = e & REFT_OFFSET_MASK;
                if off == 0 {
                    return Ok(None);
                }
                if !off.is_multiple_of(self.cluster_size) {
                    return Err(corrupt(format!("Refblock offset {off:#x} unaligned")));
                }
                if off == 0 || off < self.cluster_size {
                    return Err(corrupt("Refcount block overlaps the image header"));
                }
                Ok(Some(off))
            }
        }
    }

    fn ensure_refblock_cached(&self, st: &mut State, rb_off: u64) -> BlockResult<()> {
        if self
            .cache
            .with(self.cache_id, TableKind::Refcount, rb_off, |_| ())
            .is_some()
        {
            return Ok(());
        }
        let data = self.load_table(st, rb_off, self.cluster_size, "Refcount block")?;
        self.cache_insert(st, TableKind::Refcount, rb_off, data, false)
    }

    /// Refcount of a host cluster (by index).
    pub(super) fn get_refcount(&self, st: &mut State, cluster: u64) -> BlockResult<u64> {
        let Some(rb) = self.refblock_offset(st, cluster)? else {
            return Ok(0);
        };
        self.ensure_refblock_cached(st, rb)?;
        let idx = (cluster & ((1 << self.rb_bits()) - 1)) as usize;
        let order = self.refcount_order;
        Ok(self
            .cache
            .with(self.cache_id, TableKind::Refcount, rb, |b| {
                refcount::get(b, order, idx)
            })
            .expect("just cached"))
    }

    /// Sets the refcount of a cluster whose refcount block exists (repairs).
    pub(super) fn set_refcount(&self, st: &mut State, cluster: u64, value: u64) -> BlockResult<()> {
        let cur = self.get_refcount(st, cluster)?;
        let delta = value as i128 - cur as i128;
        if delta == 0 {
            return Ok(());
        }
        self.update_refcounts(st, cluster << self.cluster_bits, 1, delta as i64)
    }

    /// Public refcount lookup for checks.
    pub fn refcount(&self, cluster: u64) -> BlockResult<u64> {
        let mut st = self.lock();
        self.get_refcount(&mut st, cluster)
    }

    /// Adds `delta` to the refcount of `n` clusters from host offset `off`. The refcount
    /// blocks must exist (true for clusters that were allocated).
    fn update_refcounts(&self, st: &mut State, off: u64, n: u64, delta: i64) -> BlockResult<()> {
        let first = off >> self.cluster_bits;
        let max = refcount::max_value(self.refcount_order);
        let order = self.refcount_order;
        for c in first..first + n {
            let rb = self
                .refblock_offset(st, c)?
                .ok_or_else(|| corrupt(format!("No refcount block for cluster {c:#x}")))?;
            self.ensure_refblock_cached(st, rb)?;
            let idx = (c & ((1 << self.rb_bits()) - 1)) as usize;
            let r = self
                .cache
                .with_mut(self.cache_id, TableKind::Refcount, rb, |b| {
                    let v = refcount::get(b, order, idx);
                    let nv = v as i128 + delta as i128;
                    if nv < 0 || nv > max as i128 {
                        return Err(v);
                    }
                    refcount::set(b, order, idx, nv as u64);
                    Ok(())
                })
                .expect("just cached");
            if let Err(v) = r {
                return Err(corrupt(format!(
                    "Refcount of cluster {c:#x} would {} (currently {v})",
                    if delta < 0 {
                        "drop below zero"
                    } else {
                        "overflow"
                    }
                )));
            }
            if delta < 0 && c < st.free_hint {
                st.free_hint = c;
            }
        }
        Ok(())
    }

    /// Whether `[off, off+len)` overlaps the header, L1 table or refcount table (a guard
    /// against handing out live metadata when refcounts lie).
    fn overlaps_fixed_metadata(&self, st: &State, off: u64, len: u64) -> bool {
        let h = &st.header;
        let ranges = [
            (0, self.cluster_size),
            (h.l1_table_offset, h.l1_size as u64 * 8),
            (
                h.refcount_table_offset,
                h.refcount_table_clusters as u64 * self.cluster_size,
            ),
        ];
        ranges
            .iter()
            .any(|&(s, l)| l > 0 && off < s.saturating_add(l) && s < off.saturating_add(len))
    }

    /// Allocates `n` contiguous clusters with refcount 1 (in the cache; durable before any
    /// reference by the flush order). Returns the host offset.
    pub(super) fn alloc_clusters(&self, st: &mut State, n: u64) -> BlockResult<u64> {
        self.ensure_reftable(st)?;
        'retry: loop {
            // Find a free run.
            let mut start = st.free_hint.max(1);
            let mut run = 0;
            let mut c = start;
            while run < n {
                let free = self.get_refcount(st, c)? == 0
                    && !self.overlaps_fixed_metadata(st, c << self.cluster_bits, self.cluster_size);
                if free {
                    run += 1;
                } else {
                    run = 0;
                    start = c + 1;
                }
                c += 1;
                if c > (1u64 << (56 - self.cluster_bits)) {
                    return Err(BlockError::Unsupported("Image file is full".into()));
                }
            }
            // Make sure refcount blocks cover the run.
            for c in start..start + n {
                let b = c >> self.rb_bits();
                if b as usize >= st.reftable.len() {
                    self.grow_reftable(st, b + 1)?;
                    continue 'retry;
                }
                if self.refblock_offset(st, c)?.is_none() {
                    self.create_refblock(st, b, c)?;
                    continue 'retry;
                }
            }
            self.update_refcounts(st, start << self.cluster_bits, n, 1)?;
            st.free_hint = start + n;
            let end = (start + n) << self.cluster_bits;
            st.alloc_end = st.alloc_end.max(end);
            return Ok(start << self.cluster_bits);
        }
    }

    /// Puts a new refcount block for block index `b` at free cluster `c` (inside the range
    /// it covers, so it describes itself), then points the refcount table at it.
    fn create_refblock(&self, st: &mut State, b: u64, c: u64) -> BlockResult<()> {
        let off = c << self.cluster_bits;
        let mut block = vec![0u8; self.cluster_size as usize].into_boxed_slice();
        let idx = (c & ((1 << self.rb_bits()) - 1)) as usize;
        refcount::set(&mut block, self.refcount_order, idx, 1);
        self.file.write_at(&block, off)?;
        self.file.barrier()?;
        st.reftable[b as usize] = off;
        self.file
            .write_at(&off.to_be_bytes(), st.header.refcount_table_offset + 8 * b)?;
        st.alloc_end = st.alloc_end.max(off + self.cluster_size);
        self.cache_insert(st, TableKind::Refcount, off, block, false)?;
        Ok(())
    }

    /// Replaces the refcount table with a larger one placed after the end of the file,
    /// together with the refcount blocks needed to describe it.
    fn grow_reftable(&self, st: &mut State, min_entries: u64) -> BlockResult<()> {
        let cs = self.cluster_size;
        let per_cluster = cs / 8;
        let old_entries = st.reftable.len() as u64;
        let mut new_entries = min_entries.max(old_entries * 2).div_ceil(per_cluster) * per_cluster;
        let t = st.alloc_end.max(self.file.len()?).div_ceil(cs);
        let rb_bits = self.rb_bits();
        let (table_clusters, missing) = loop {
            let table_clusters = new_entries / per_cluster;
            let mut k = 0u64;
            let missing = loop {
                let first_b = t >> rb_bits;
                let last_b = (t + table_clusters + k - 1) >> rb_bits;
                let missing: Vec<u64> = (first_b..=last_b)
                    .filter(|&b| {
                        st.reftable
                            .get(b as usize)
                            .map(|e| e & REFT_OFFSET_MASK == 0)
                            .unwrap_or(true)
                    })
                    .collect();
                if missing.len() as u64 <= k {
                    break missing;
                }
                k = missing.len() as u64;
            };
            let last_b = missing.iter().copied().max().unwrap_or(0);
            if last_b < new_entries {
                break (table_clusters, missing);
            }
            new_entries = (last_b + 1).div_ceil(per_cluster) * per_cluster;
        };
        if new_entries * 8 > header::MAX_REFTABLE_BYTES {
            return Err(BlockError::Unsupported(
                "Reference count table would grow too large".into(),
            ));
        }
        let table_off = t * cs;
        let blocks_start = t + table_clusters;
        let used_end = blocks_start + missing.len() as u64;
        let mut new_table = st.reftable.clone();
        new_table.resize(new_entries as usize, 0);
        let mut new_blocks: Vec<(u64, Box<[u8]>)> = Vec::new();
        for (i, &b) in missing.iter().enumerate() {
            let off = (blocks_start + i as u64) * cs;
            new_table[b as usize] = off;
            new_blocks.push((b, vec![0u8; cs as usize].into_boxed_slice()));
        }
        // Refcount 1 for the table and the new blocks.
        let mut existing: Vec<u64> = Vec::new();
        for c in t..used_end {
            let b = c >> rb_bits;
            let idx = (c & ((1 << rb_bits) - 1)) as usize;
            if let Some((_, blk)) = new_blocks.iter_mut().find(|(nb, _)| *nb == b) {
                refcount::set(blk, self.refcount_order, idx, 1);
            } else {
                existing.push(c);
            }
        }
        for c in existing {
            self.update_refcounts(st, c * cs, 1, 1)?;
        }
        for (i, (_, blk)) in new_blocks.iter().enumerate() {
            self.file.write_at(blk, (blocks_start + i as u64) * cs)?;
        }
        let mut tb = vec![0u8; (table_clusters * cs) as usize];
        for (i, e) in new_table.iter().enumerate() {
            tb[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        self.file.write_at(&tb, table_off)?;
        self.write_dirty(st, TableKind::Refcount)?;
        self.file.barrier()?;
        // Switch: refcount_table_offset and refcount_table_clusters are adjacent (48..60).
        let mut sw = [0u8; 12];
        sw[..8].copy_from_slice(&table_off.to_be_bytes());
        sw[8..].copy_from_slice(&(table_clusters as u32).to_be_bytes());
        self.file.write_at(&sw, 48)?;
        self.file.barrier()?;
        let old_off = st.header.refcount_table_offset;
        let old_clusters = st.header.refcount_table_clusters as u64;
        st.header.refcount_table_offset = table_off;
        st.header.refcount_table_clusters = table_clusters as u32;
        st.reftable = new_table;
        st.alloc_end = st.alloc_end.max(used_end * cs);
        for (i, (_, blk)) in new_blocks.into_iter().enumerate() {
            self.cache_insert(
                st,
                TableKind::Refcount,
                (blocks_start + i as u64) * cs,
                blk,
                false,
            )?;
        }
        // The old table is no longer referenced by the (durable) header.
        self.update_refcounts(st, old_off, old_clusters, -1)?;
        Ok(())
    }

    // ----- writing -----

    fn check_writable(&self) -> BlockResult<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        Ok(())
    }

    /// Lazy refcounts: the dirty bit must be on disk before metadata that may leave
    /// refcounts behind is written.
    fn mark_dirty(&self, st: &mut State) -> BlockResult<()> {
        if st.dirty_bit_on_disk || !st.header.lazy_refcounts() {
            return Ok(());
        }
        st.header.incompatible_features |= header::INCOMPAT_DIRTY;
        self.file
            .write_at(&st.header.incompatible_features.to_be_bytes(), 72)?;
        self.file.barrier()?;
        st.dirty_bit_on_disk = true;
        Ok(())
    }

    fn clear_dirty_bit(&self) -> BlockResult<()> {
        let mut st = self.lock();
        if !st.dirty_bit_on_disk {
            return Ok(());
        }
        self.flush_locked(&mut st)?;
        st.header.incompatible_features &= !header::INCOMPAT_DIRTY;
        self.file
            .write_at(&st.header.incompatible_features.to_be_bytes(), 72)?;
        self.file.barrier()?;
        st.dirty_bit_on_disk = false;
        Ok(())
    }

    /// Returns the offset of a writable (COPIED) L2 table for L1 index `i`, allocating or
    /// copying it as needed.
    fn writable_l2(&self, st: &mut State, i: usize) -> BlockResult<u64> {
        let Some(&l1e) = st.l1.get(i) else {
            return Err(BlockError::OutOfRange {
                offset: (i as u64) << (self.cluster_bits + self.l2_bits),
                len: 0,
                size: st.header.size,
            });
        };
        let old = l1e & L1E_OFFSET_MASK;
        if old != 0 && l1e & OFLAG_COPIED != 0 {
            return Ok(old);
        }
        let new = self.alloc_clusters(st, 1)?;
        let mut table = vec![0u8; self.cluster_size as usize];
        if old != 0 {
            // Shared with an internal snapshot: copy it, then drop our reference.
            self.write_dirty(st, TableKind::L2)?;
            let t = self.load_table(st, old, self.cluster_size, "L2 table")?;
            table.copy_from_slice(&t);
        }
        self.file.write_at(&table, new)?;
        st.l1[i] = new | OFLAG_COPIED;
        st.l1_dirty = true;
        if old != 0 {
            let mut s = 0;
            while s < self.cluster_size {
                self.cache.remove(self.cache_id, TableKind::L2, old + s);
                s += self.slice_bytes;
            }
            st.pending_free.push((old, 1));
        }
        Ok(new)
    }

    /// Sets the L2 entry of guest cluster `g` (the table must be writable).
    pub(super) fn set_l2_entry(&self, st: &mut State, g: u64, entry: u64) -> BlockResult<()> {
        self.mark_dirty(st)?;
        let i = (g >> (self.cluster_bits + self.l2_bits)) as usize;
        let l2_off = self.writable_l2(st, i)?;
        let l2_index = (g >> self.cluster_bits) & ((1 << self.l2_bits) - 1);
        // Load the slice, then modify it.
        self.with_l2_slice(st, l2_off, l2_index, |_| ())?;
        let slice_off = l2_off + (l2_index / self.l2_entries_per_slice()) * self.slice_bytes;
        let within = (l2_index % self.l2_entries_per_slice()) as usize * 8;
        self.cache
            .with_mut(self.cache_id, TableKind::L2, slice_off, |b| {
                b[within..within + 8].copy_from_slice(&entry.to_be_bytes())
            })
            .ok_or_else(|| corrupt("L2 slice vanished from the cache"))?;
        Ok(())
    }

    /// Drops this image's reference to the cluster an old L2 entry pointed to.
    fn release_old(&self, st: &mut State, old: ClusterMapping) {
        match old {
            ClusterMapping::Data { host, .. } | ClusterMapping::Zero { host: Some(host) } => {
                st.pending_free.push((host, 1));
            }
            ClusterMapping::Compressed { entry } => {
                let (coff, csize) = self.compressed_extent(entry);
                let first = coff & !(self.cluster_size - 1);
                let last = (coff + csize - 1) & !(self.cluster_size - 1);
                st.pending_free
                    .push((first, (last - first) / self.cluster_size + 1));
            }
            _ => {}
        }
    }

    /// Writes `buf` at guest offset `g`. `backing_read` fills a buffer with what the layers
    /// below show at a guest offset (for copy-on-write of partial clusters).
    pub fn write(
        &self,
        g: u64,
        buf: &[u8],
        backing_read: &dyn Fn(u64, &mut [u8]) -> BlockResult<()>,
    ) -> BlockResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        let size = st.header.size;
        if g.checked_add(buf.len() as u64).is_none_or(|e| e > size) {
            return Err(BlockError::OutOfRange {
                offset: g,
                len: buf.len() as u64,
                size,
            });
        }
        let cs = self.cluster_size;
        let version = st.header.version;
        let mut pos = 0usize;
        while pos < buf.len() {
            let cur = g + pos as u64;
            let cluster_start = cur & !(cs - 1);
            let in_cluster = cur - cluster_start;
            let n = ((cs - in_cluster) as usize).min(buf.len() - pos);
            let part = &buf[pos..pos + n];
            st = self.wait_for_allocation(st, cluster_start);
            let old = self.decode_entry(version, self.l2_entry(&mut st, cur)?)?;
            match old {
                ClusterMapping::Data { host, copied: true } => {
                    if self.overlaps_fixed_metadata(&st, host, cs) {
                        // A hostile or damaged L2 entry must not let guest data overwrite the
                        // header or a table (QEMU's overlap check).
                        return Err(corrupt(format!(
                            "Preventing invalid write on metadata (data cluster at {host:#x} overlaps the header or a table)"
                        )));
                    }
                    // The common case, a rewrite in place, runs without the metadata lock so
                    // that requests proceed in parallel. The in-flight guard keeps the cluster
                    // from being freed (and reused) until the write has landed.
                    let inflight = self.inflight.read().unwrap_or_else(|p| p.into_inner());
                    drop(st);
                    let r = self.file.write_at(part, host + in_cluster);
                    drop(inflight);
                    st = self.lock();
                    r?;
                }
                _ => {
                    let full = n as u64 == cs;
                    let mut data = Vec::new();
                    if !full {
                        data = vec![0u8; cs as usize];
                        // Bytes of the cluster the write does not cover come from the old
                        // mapping (copy-on-write).
                        let valid = (size - cluster_start).min(cs) as usize;
                        match old {
                            ClusterMapping::Data { host, .. } => {
                                self.file.read_at(&mut data[..valid], host)?
                            }
                            ClusterMapping::Compressed { entry } => {
                                data = self.decompress_cluster(entry)?;
                            }
                            ClusterMapping::Zero { .. } => {}
                            ClusterMapping::Unallocated => {
                                backing_read(cluster_start, &mut data[..valid])?
                            }
                        }
                        data[in_cluster as usize..in_cluster as usize + n].copy_from_slice(part);
                    }
                    let payload: &[u8] = if full { part } else { &data };
                    let reuse = match old {
                        ClusterMapping::Zero { host: Some(h) } => {
                            // A preallocated zero cluster we own: write in place.
                            let cl = h >> self.cluster_bits;
                            (self.get_refcount(&mut st, cl)? == 1).then_some(h)
                        }
                        _ => None,
                    };
                    if reuse.is_none() {
                        // The L2 table first, then the data cluster: QEMU's allocation order,
                        // so converted images get the same layout.
                        let l1_index =
                            (cluster_start >> (self.cluster_bits + self.l2_bits)) as usize;
                        self.writable_l2(&mut st, l1_index)?;
                    }
                    let host = match reuse {
                        Some(h) => h,
                        None => self.alloc_clusters(&mut st, 1)?,
                    };
                    // When everything around the written bytes is zero (nothing below, or
                    // zeros below), zero the cluster cheaply instead of writing a buffer of
                    // zeros, as QEMU does: nothing at all past the end of the file, a
                    // fallocate(ZERO_RANGE) inside it (the cluster may hold stale data).
                    let ic = in_cluster as usize;
                    let cow_is_zero = !full
                        && reuse.is_none()
                        && is_zero(&data[..ic])
                        && is_zero(&data[ic + n..]);
                    // The data goes to the new cluster without the lock (nothing references
                    // it yet); requests for the same guest cluster wait until the L2 entry
                    // is set, after the data, so none of their writes is lost.
                    st.allocating.insert(cluster_start);
                    drop(st);
                    let r = (|| {
                        if cow_is_zero {
                            // Zero (and, past the end of the file, extend over) the whole
                            // cluster first, as QEMU does; where the file system cannot,
                            // only a cluster inside the file needs explicit zeros.
                            if !self.file.zero_range_no_fallback(host, cs)?
                                && host < self.file.len()?
                            {
                                self.file.write_zeroes(host, cs)?;
                            }
                            self.file.write_at(part, host + in_cluster)
                        } else {
                            self.file.write_at(payload, host)
                        }
                    })();
                    st = self.lock();
                    let r = r.and_then(|_| {
                        self.set_l2_entry(&mut st, cluster_start, host | OFLAG_COPIED)
                    });
                    st.allocating.remove(&cluster_start);
                    self.alloc_done.notify_all();
                    r?;
                    if reuse.is_none() {
                        self.release_old(&mut st, old);
                    }
                    if let ClusterMapping::Compressed { entry } = old {
                        if st
                            .last_decompressed
                            .as_ref()
                            .is_some_and(|(e, _)| *e == entry)
                        {
                            st.last_decompressed = None;
                        }
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Copy-up for streaming: writes `data` (what the backing chain shows for the whole
    /// cluster at `g`) only if the cluster is still unallocated here, atomically with respect
    /// to guest writes, so a guest write made meanwhile is never overwritten. Returns whether
    /// it wrote.
    pub fn write_if_unallocated(&self, g: u64, data: &[u8]) -> BlockResult<bool> {
        self.check_writable()?;
        let cs = self.cluster_size;
        let st = self.lock();
        let size = st.header.size;
        if !g.is_multiple_of(cs) || data.len() as u64 != cs.min(size.saturating_sub(g)) {
            return Err(BlockError::InvalidOption(
                "copy-up must cover exactly one cluster".into(),
            ));
        }
        let version = st.header.version;
        let mut st = self.wait_for_allocation(st, g);
        if self.decode_entry(version, self.l2_entry(&mut st, g)?)? != ClusterMapping::Unallocated {
            return Ok(false);
        }
        let l1_index = (g >> (self.cluster_bits + self.l2_bits)) as usize;
        self.writable_l2(&mut st, l1_index)?;
        let host = self.alloc_clusters(&mut st, 1)?;
        self.file.write_at(data, host)?;
        self.set_l2_entry(&mut st, g, host | OFLAG_COPIED)?;
        Ok(true)
    }

    /// Writes one whole cluster compressed (as `qemu-img convert -c` / `write -c`). The
    /// cluster must be unallocated in this image. The last cluster of an image whose size
    /// is not a multiple of the cluster size may be partial: it is padded with zeros and
    /// compressed, as QEMU does.
    pub fn write_compressed(&self, g: u64, data: &[u8]) -> BlockResult<()> {
        self.check_writable()?;
        let cs = self.cluster_size;
        let len = data.len() as u64;
        let tail = len < cs && g.checked_add(len) == Some(self.virtual_size());
        if !g.is_multiple_of(cs) || !(len == cs || tail) || len == 0 {
            return Err(BlockError::InvalidOption(
                "Compressed writes must cover whole clusters".into(),
            ));
        }
        let unpadded = data;
        let padded;
        let data = if tail {
            let mut v = vec![0u8; cs as usize];
            v[..data.len()].copy_from_slice(data);
            padded = v;
            &padded[..]
        } else {
            data
        };
        let Some(comp) = compress::compress(self.compression, data)? else {
            return self.write(g, unpadded, &|_, b| {
                b.fill(0);
                Ok(())
            });
        };
        let mut st = self.wait_for_allocation(self.lock(), g);
        let version = st.header.version;
        let old = self.decode_entry(version, self.l2_entry(&mut st, g)?)?;
        if !matches!(
            old,
            ClusterMapping::Unallocated | ClusterMapping::Zero { host: None }
        ) {
            drop(st);
            return Err(BlockError::Unsupported(
                "Compressed write to an allocated cluster".into(),
            ));
        }
        // Pack compressed clusters back to back as QEMU does: continue where the previous
        // one ended (that cluster gains a reference). When the bytes do not fit in its
        // cluster, they run on into the following clusters if those are the next ones
        // allocated, as QEMU's byte allocator does; otherwise start afresh.
        let len = comp.len() as u64;
        let mut host = None;
        if let Some(cur) = st.compressed_cursor {
            let cluster = cur & !(cs - 1);
            let refs = self.get_refcount(&mut st, cluster >> self.cluster_bits)?;
            // Live, and able to take one more reference (refcount_bits=1 cannot share).
            if refs > 0 && refs < refcount::max_value(self.refcount_order) {
                let cluster_end = cluster + cs;
                let spill = (cur + len).saturating_sub(cluster_end).div_ceil(cs);
                let continued = if spill == 0 {
                    true
                } else {
                    let next = self.alloc_clusters(&mut st, spill)?;
                    if next != cluster_end {
                        // Not adjacent: give the clusters back, start afresh below.
                        self.update_refcounts(&mut st, next, spill, -1)?;
                    }
                    next == cluster_end
                };
                if continued && self.update_refcounts(&mut st, cluster, 1, 1).is_ok() {
                    host = Some(cur);
                }
            }
        }
        let l1_index = (g >> (self.cluster_bits + self.l2_bits)) as usize;
        self.writable_l2(&mut st, l1_index)?;
        let host = match host {
            Some(h) => h,
            None => self.alloc_clusters(&mut st, len.div_ceil(cs))?,
        };
        self.file.write_at(&comp, host)?;
        let end = host + len;
        st.compressed_cursor = (!end.is_multiple_of(cs)).then_some(end);
        let nb_sectors = ((end - 1) >> 9) - (host >> 9) + 1;
        let shift = 62 - (self.cluster_bits - 8);
        let entry = OFLAG_COMPRESSED | ((nb_sectors - 1) << shift) | host;
        self.set_l2_entry(&mut st, g, entry)
    }

    /// Zeroes `[g, g+len)`. Whole clusters get the zero flag (v3), partial ones are written.
    /// `unmap` releases the clusters' storage (BDRV_REQ_MAY_UNMAP).
    pub fn write_zeroes(
        &self,
        g: u64,
        len: u64,
        unmap: bool,
        backing_read: &dyn Fn(u64, &mut [u8]) -> BlockResult<()>,
    ) -> BlockResult<()> {
        self.check_writable()?;
        let (size, version) = {
            let st = self.lock();
            (st.header.size, st.header.version)
        };
        if g.checked_add(len).is_none_or(|e| e > size) {
            return Err(BlockError::OutOfRange {
                offset: g,
                len,
                size,
            });
        }
        let cs = self.cluster_size;
        let end = g + len;
        let mut pos = g;
        while pos < end {
            let cluster_start = pos & !(cs - 1);
            let cluster_end = (cluster_start + cs).min(size);
            let n = (cluster_end.min(end)) - pos;
            let whole = pos == cluster_start && pos + n == cluster_end;
            if !whole || version < 3 {
                let zeros = vec![0u8; n as usize];
                self.write(pos, &zeros, backing_read)?;
            } else {
                let mut st = self.wait_for_allocation(self.lock(), pos);
                let old = self.decode_entry(version, self.l2_entry(&mut st, pos)?)?;
                let keep = if unmap {
                    None
                } else {
                    match old {
                        ClusterMapping::Data { host, copied: true } => Some(host),
                        ClusterMapping::Zero { host: Some(h) } => Some(h),
                        _ => None,
                    }
                };
                let entry = match keep {
                    Some(h) => h | OFLAG_COPIED | OFLAG_ZERO,
                    None => OFLAG_ZERO,
                };
                self.set_l2_entry(&mut st, pos, entry)?;
                if keep.is_none() {
                    self.release_old(&mut st, old);
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Discards whole clusters of `[g, g+len)` (partial clusters are left alone, as QEMU
    /// does). On v2 images discarded clusters show the backing file again; on v3 they read
    /// as zeros.
    pub fn discard(&self, g: u64, len: u64, has_backing: bool) -> BlockResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        let size = st.header.size;
        let version = st.header.version;
        if g.checked_add(len).is_none_or(|e| e > size) {
            return Err(BlockError::OutOfRange {
                offset: g,
                len,
                size,
            });
        }
        let cs = self.cluster_size;
        let end = g + len;
        let mut pos = g.div_ceil(cs) * cs;
        while pos < end {
            let cluster_end = (pos + cs).min(size);
            if cluster_end > end {
                break;
            }
            st = self.wait_for_allocation(st, pos);
            let old = self.decode_entry(version, self.l2_entry(&mut st, pos)?)?;
            // On v3 a discarded range reads back as zeros, so an unallocated cluster over a
            // backing file gets the zero flag too (QEMU does the same).
            let allocated = !matches!(old, ClusterMapping::Unallocated);
            if allocated || (has_backing && version >= 3) {
                let entry = if version >= 3 { OFLAG_ZERO } else { 0 };
                if !(matches!(old, ClusterMapping::Zero { host: None })) {
                    self.set_l2_entry(&mut st, pos, entry)?;
                    self.release_old(&mut st, old);
                }
            }
            pos += cs;
        }
        Ok(())
    }

    /// Drops every cluster of the active table so the backing file shows through again
    /// (`qemu-img commit` empties the overlay this way).
    pub fn make_empty(&self) -> BlockResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        let size = st.header.size;
        let version = st.header.version;
        let cs = self.cluster_size;
        let span = cs << self.l2_bits;
        for i in 0..st.l1.len() {
            if st.l1[i] & L1E_OFFSET_MASK == 0 {
                continue;
            }
            let base = i as u64 * span;
            let mut g = base;
            while g < (base + span).min(size) {
                let old = self.decode_entry(version, self.l2_entry(&mut st, g)?)?;
                if old != ClusterMapping::Unallocated {
                    self.set_l2_entry(&mut st, g, 0)?;
                    self.release_old(&mut st, old);
                }
                g += cs;
            }
        }
        self.flush_locked(&mut st)
    }

    // ----- flushing -----

    /// Writes the dirty entries of one table kind (no barrier).
    fn write_dirty(&self, _st: &mut State, kind: TableKind) -> BlockResult<()> {
        let dirty = self.cache.dirty_entries(self.cache_id, kind);
        if dirty.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(dirty.len());
        for (off, data) in dirty {
            self.file.write_at(&data, off)?;
            done.push(off);
        }
        self.cache.mark_clean(self.cache_id, kind, &done);
        Ok(())
    }

    fn write_l1(&self, st: &mut State) -> BlockResult<()> {
        if !st.l1_dirty {
            return Ok(());
        }
        let mut b = vec![0u8; st.l1.len() * 8];
        for (i, e) in st.l1.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        self.file.write_at(&b, st.header.l1_table_offset)?;
        st.l1_dirty = false;
        Ok(())
    }

    fn flush_locked(&self, st: &mut State) -> BlockResult<()> {
        if self.read_only {
            return Ok(());
        }
        let lazy = st.dirty_bit_on_disk && st.header.lazy_refcounts();
        self.write_dirty(st, TableKind::Refcount)?;
        if !lazy {
            self.file.barrier()?;
        }
        self.write_dirty(st, TableKind::L2)?;
        if st.l1_dirty {
            self.file.barrier()?;
            self.write_l1(st)?;
        }
        if !st.pending_free.is_empty() {
            // The references are gone on disk once this barrier returns.
            self.file.barrier()?;
            // No write to a cluster about to be freed may still be in flight.
            let _no_inflight = self.inflight.write().unwrap_or_else(|p| p.into_inner());
            let frees = std::mem::take(&mut st.pending_free);
            // The cluster the cursor points into may be among the freed ones.
            st.compressed_cursor = None;
            for &(off, n) in &frees {
                self.update_refcounts(st, off, n, -1)?;
            }
            self.write_dirty(st, TableKind::Refcount)?;
            if st.punch_after_free {
                for &(off, n) in &frees {
                    for c in 0..n {
                        let o = off + c * self.cluster_size;
                        if self.get_refcount(st, o >> self.cluster_bits)? == 0 {
                            self.file.punch_hole(o, self.cluster_size)?;
                        }
                    }
                }
            }
        }
        self.file.flush()
    }

    /// Makes everything written so far durable, metadata in crash-safe order.
    pub fn flush(&self) -> BlockResult<()> {
        let mut st = self.lock();
        self.flush_locked(&mut st)
    }

    /// Flushes and clears the dirty bit (a clean close).
    pub fn close(&self) -> BlockResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.flush()?;
        self.clear_dirty_bit()
    }

    // ----- header changes -----

    /// Rewrites the header cluster with new backing file fields (`rebase`, `block-stream`
    /// completion). One write of the header area; QEMU does the same.
    pub fn set_backing(&self, name: Option<&str>, format: Option<&str>) -> BlockResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        self.flush_locked(&mut st)?;
        let mut h = st.header.clone();
        h.backing_file = name.map(str::to_string);
        h.backing_format = if name.is_some() {
            format.map(str::to_string)
        } else {
            None
        };
        h.backing_file_offset = 0;
        h.backing_file_size = 0;
        let bytes = h.serialize()?;
        // Clear the rest of the old header area too, so no stale name survives.
        let old_len = self.header_area_len(&st.header)?;
        let mut area = bytes.clone();
        area.resize(area.len().max(old_len), 0);
        self.file.write_at(&area, 0)?;
        self.file.barrier()?;
        let mut reparsed = bytes;
        reparsed.resize(self.cluster_size as usize, 0);
        st.header = Header::parse(&reparsed)?;
        Ok(())
    }

    fn header_area_len(&self, h: &Header) -> BlockResult<usize> {
        let mut h2 = h.clone();
        h2.backing_file_offset = 0;
        Ok(h2.serialize()?.len())
    }

    /// Changes the virtual size (growing the L1 table when needed). Shrinking is refused
    /// when data would be lost, as QEMU does without `--shrink`.
    pub fn resize(&self, new_size: u64) -> BlockResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        if !self.snapshots.is_empty() {
            return Err(BlockError::Unsupported(
                "Can't resize an image which has snapshots".into(),
            ));
        }
        if new_size < st.header.size {
            return Err(BlockError::Unsupported(
                "qcow2 doesn't support shrinking images yet".into(),
            ));
        }
        let cs = self.cluster_size;
        let needed = new_size.div_ceil(cs << self.l2_bits);
        if needed > st.l1.len() as u64 {
            if needed * 8 > header::MAX_L1_BYTES {
                return Err(BlockError::InvalidOption("File too large".into()));
            }
            self.flush_locked(&mut st)?;
            let new_clusters = (needed * 8).div_ceil(cs);
            let new_off = self.alloc_clusters(&mut st, new_clusters)?;
            let mut l1 = st.l1.clone();
            l1.resize(needed as usize, 0);
            let mut b = vec![0u8; (new_clusters * cs) as usize];
            for (i, e) in l1.iter().enumerate() {
                b[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
            }
            self.write_dirty(&mut st, TableKind::Refcount)?;
            self.file.write_at(&b[..(needed * 8) as usize], new_off)?;
            self.file.barrier()?;
            // l1_size (36..40) and l1_table_offset (40..48) are adjacent: one write.
            let mut sw = [0u8; 12];
            sw[..4].copy_from_slice(&(needed as u32).to_be_bytes());
            sw[4..].copy_from_slice(&new_off.to_be_bytes());
            self.file.write_at(&sw, 36)?;
            self.file.barrier()?;
            let old_off = st.header.l1_table_offset;
            let old_clusters = (st.header.l1_size as u64 * 8).div_ceil(cs);
            st.header.l1_size = needed as u32;
            st.header.l1_table_offset = new_off;
            st.l1 = l1;
            if old_off != 0 && old_clusters > 0 {
                self.update_refcounts(&mut st, old_off, old_clusters, -1)?;
            }
        }
        self.file.write_at(&new_size.to_be_bytes(), 24)?;
        self.file.barrier()?;
        st.header.size = new_size;
        Ok(())
    }

    /// Raw state access for the consistency checker.
    pub(super) fn with_state<R>(&self, f: impl FnOnce(&Self, &mut State) -> R) -> R {
        let mut st = self.lock();
        f(self, &mut st)
    }

    /// Reads a whole L2 table directly from disk (checker; bypasses the cache after a flush).
    pub(super) fn read_l2_table(&self, off: u64) -> BlockResult<Vec<u64>> {
        let mut b = vec![0u8; self.cluster_size as usize];
        self.file.read_at(&mut b, off)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
            .collect())
    }

    /// Installs a freshly built refcount structure (repair). `table_off`/`clusters` must
    /// already be durable on disk.
    pub(super) fn switch_refcount_table(
        &self,
        st: &mut State,
        table_off: u64,
        table: Vec<u64>,
    ) -> BlockResult<()> {
        let clusters = (table.len() as u64 * 8).div_ceil(self.cluster_size);
        let mut sw = [0u8; 12];
        sw[..8].copy_from_slice(&table_off.to_be_bytes());
        sw[8..].copy_from_slice(&(clusters as u32).to_be_bytes());
        self.file.write_at(&sw, 48)?;
        self.file.barrier()?;
        st.header.refcount_table_offset = table_off;
        st.header.refcount_table_clusters = clusters as u32;
        st.reftable = table;
        st.reftable_loaded = true;
        st.free_hint = 0;
        self.cache.drop_clean(self.cache_id);
        Ok(())
    }

    pub(super) fn state_header(st: &State) -> &Header {
        &st.header
    }
    pub(super) fn state_reftable(st: &State) -> &[u64] {
        &st.reftable
    }
    pub(super) fn state_l1(st: &State) -> &[u64] {
        &st.l1
    }
    pub(super) fn state_alloc_end(st: &State) -> u64 {
        st.alloc_end
    }
    pub(super) fn set_alloc_end(st: &mut State, end: u64) {
        st.alloc_end = st.alloc_end.max(end);
    }
    pub(super) fn flush_state(&self, st: &mut State) -> BlockResult<()> {
        self.flush_locked(st)
    }
}

impl Drop for Qcow2Image {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            eprintln!(
                "vmscope: failed to close '{}' cleanly: {e}",
                self.file.path().display()
            );
        }
        self.cache.unregister(self.cache_id);
    }
}

pub(super) type ImageState = State;
