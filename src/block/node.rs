//! A block node as the guest device and the monitor see it: the active image on top of its
//! backing chain. Every operation walks the chain with a loop over `layers` (index 0 is the
//! active image), never by recursion, so chain length costs no stack.

use std::io::{IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::error::{BlockError, BlockResult};
use super::options::CacheMode;
use super::qcow2::{ClusterMapping, MetadataCache, Qcow2Image};
use super::raw::RawImage;

/// The image format of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
    pub fn parse(s: &str) -> BlockResult<Self> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(BlockError::Unsupported(format!("Unknown driver '{other}'"))),
        }
    }
}

/// The driver of one layer.
#[allow(clippy::large_enum_variant)] // one per layer, never moved around
pub enum ImageDriver {
    Raw(RawImage),
    Qcow2(Qcow2Image),
}

/// One image of a chain.
pub struct Layer {
    pub driver: ImageDriver,
    /// The file name as QEMU reports it (the path used to open it).
    pub filename: PathBuf,
    /// QEMU-style node name (`#blockNNN` when generated).
    pub node_name: String,
    /// Backing file name as written in this image's header (not resolved).
    pub backing_name: Option<String>,
    /// Backing format from the header extension.
    pub backing_format: Option<String>,
}

/// What one layer says about a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerMapping {
    /// Not allocated in this layer.
    Unallocated,
    /// Reads as zeros; `host` is the preallocated cluster behind it, if any.
    Zero { host: Option<u64> },
    /// Plain data at `host` in this layer's file.
    Data { host: u64 },
    /// Part of a compressed cluster.
    Compressed { entry: u64, in_cluster: u64 },
}

/// A run starting at the asked offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerExtent {
    pub len: u64,
    pub mapping: LayerMapping,
}

impl Layer {
    pub fn format(&self) -> ImageFormat {
        match self.driver {
            ImageDriver::Raw(_) => ImageFormat::Raw,
            ImageDriver::Qcow2(_) => ImageFormat::Qcow2,
        }
    }

    pub fn virtual_size(&self) -> BlockResult<u64> {
        match &self.driver {
            ImageDriver::Raw(r) => r.virtual_size(),
            ImageDriver::Qcow2(q) => Ok(q.virtual_size()),
        }
    }

    /// The backing file name and format the image's header names now (after `rebase` or
    /// a finished `block-stream` this differs from what was opened).
    pub fn current_backing(&self) -> (Option<String>, Option<String>) {
        match &self.driver {
            ImageDriver::Qcow2(q) => {
                let h = q.header();
                (h.backing_file, h.backing_format)
            }
            ImageDriver::Raw(_) => (None, None),
        }
    }

    pub fn qcow2(&self) -> Option<&Qcow2Image> {
        match &self.driver {
            ImageDriver::Qcow2(q) => Some(q),
            _ => None,
        }
    }

    pub fn file(&self) -> &super::host_file::HostFile {
        match &self.driver {
            ImageDriver::Raw(r) => r.file(),
            ImageDriver::Qcow2(q) => q.file(),
        }
    }

    pub fn is_read_only(&self) -> bool {
        match &self.driver {
            ImageDriver::Raw(r) => r.file().is_read_only(),
            ImageDriver::Qcow2(q) => q.is_read_only(),
        }
    }

    /// This layer's own mapping of `[off, off+max)`; `off` must be below the virtual size.
    pub fn map(&self, off: u64, max: u64) -> BlockResult<LayerExtent> {
        match &self.driver {
            ImageDriver::Raw(_) => Ok(LayerExtent {
                len: max,
                mapping: LayerMapping::Data { host: off },
            }),
            ImageDriver::Qcow2(q) => {
                let e = q.map(off, max)?;
                let cs = q.cluster_size();
                let mapping = match e.mapping {
                    ClusterMapping::Unallocated => LayerMapping::Unallocated,
                    ClusterMapping::Zero { host } => LayerMapping::Zero {
                        host: host.map(|h| h + (off & (cs - 1))),
                    },
                    ClusterMapping::Data { .. } => LayerMapping::Data {
                        host: e.host_offset.expect("data extents carry an offset"),
                    },
                    ClusterMapping::Compressed { entry } => LayerMapping::Compressed {
                        entry,
                        in_cluster: off & (cs - 1),
                    },
                };
                Ok(LayerExtent {
                    len: e.len,
                    mapping,
                })
            }
        }
    }

    fn read_mapped(&self, m: LayerMapping, buf: &mut [u8]) -> BlockResult<()> {
        match m {
            LayerMapping::Unallocated | LayerMapping::Zero { .. } => {
                buf.fill(0);
                Ok(())
            }
            LayerMapping::Data { host } => self.file().read_at(buf, host),
            LayerMapping::Compressed { entry, in_cluster } => match &self.driver {
                ImageDriver::Qcow2(q) => q.read_compressed(entry, in_cluster, buf),
                ImageDriver::Raw(_) => Err(BlockError::Corrupt(
                    "compressed mapping on a raw image".into(),
                )),
            },
        }
    }

    fn flush(&self) -> BlockResult<()> {
        match &self.driver {
            ImageDriver::Raw(r) => r.file().flush(),
            ImageDriver::Qcow2(q) => q.flush(),
        }
    }
}

/// Allocation status of a range through the chain (`qemu-img map`, `block-stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockStatus {
    pub len: u64,
    /// Index of the layer that provides the data (0 = active image); `None` when no layer
    /// allocates it.
    pub depth: Option<usize>,
    pub zero: bool,
    pub data: bool,
    /// Offset in the providing layer's file, when the data lies there uncompressed.
    pub host_offset: Option<u64>,
}

/// The block node: the active image and its backing chain.
pub struct BlockNode {
    node_name: String,
    layers: RwLock<Vec<Arc<Layer>>>,
    read_only: bool,
    cache: CacheMode,
    metadata_cache: MetadataCache,
    /// Warnings from opening (e.g. a corrupt image opened read-only).
    warnings: Vec<String>,
    detect_zeroes: super::options::DetectZeroes,
    /// Guest writes hold it shared for their whole duration; chain changes (snapshot
    /// pivots, the end of stream and commit jobs) hold it exclusively, so a write in flight
    /// always lands in the layer that was on top when it started and is flushed before
    /// the chain changes.
    io_gate: RwLock<()>,
    /// Units (`granularity`-sized) the guest wrote since an active commit started
    /// tracking, so its completion copies only those again.
    dirty: std::sync::Mutex<Option<DirtyUnits>>,
}

/// See `BlockNode::dirty`.
struct DirtyUnits {
    granularity: u64,
    units: std::collections::BTreeSet<u64>,
}

fn read_ranges(layers: &[Arc<Layer>], from: usize, off: u64, buf: &mut [u8]) -> BlockResult<()> {
    let mut pos = 0usize;
    while pos < buf.len() {
        let cur = off + pos as u64;
        let mut limit = (buf.len() - pos) as u64;
        let mut done = false;
        for layer in &layers[from.min(layers.len())..] {
            let size = layer.virtual_size()?;
            if cur >= size {
                // Beyond a shorter backing image: zeros.
                break;
            }
            let ext = layer.map(cur, limit.min(size - cur))?;
            let n = ext.len.min(limit);
            if ext.mapping == LayerMapping::Unallocated {
                limit = n;
                continue;
            }
            layer.read_mapped(ext.mapping, &mut buf[pos..pos + n as usize])?;
            pos += n as usize;
            done = true;
            break;
        }
        if !done {
            buf[pos..pos + limit as usize].fill(0);
            pos += limit as usize;
        }
    }
    Ok(())
}

impl BlockNode {
    /// Builds a node from already opened layers (top first). Used by [`super::open`].
    pub fn from_layers(
        node_name: String,
        layers: Vec<Layer>,
        read_only: bool,
        cache: CacheMode,
        metadata_cache: MetadataCache,
        warnings: Vec<String>,
    ) -> Self {
        BlockNode {
            node_name,
            layers: RwLock::new(layers.into_iter().map(Arc::new).collect()),
            read_only,
            cache,
            metadata_cache,
            warnings,
            detect_zeroes: super::options::DetectZeroes::Off,
            io_gate: RwLock::new(()),
            dirty: std::sync::Mutex::new(None),
        }
    }

    /// `detect-zeroes=on|unmap`: writes of all-zero buffers become zero writes (with
    /// deallocation for `unmap`).
    pub fn set_detect_zeroes(&mut self, mode: super::options::DetectZeroes) {
        self.detect_zeroes = mode;
    }

    /// Held shared by a guest write for its whole duration (see `io_gate`).
    fn io_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.io_gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held while the chain changes: no guest write is in flight meanwhile.
    pub fn io_gate_exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.io_gate.write().unwrap_or_else(|p| p.into_inner())
    }

    fn layers(&self) -> RwLockReadGuard<'_, Vec<Arc<Layer>>> {
        self.layers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    pub fn cache_mode(&self) -> CacheMode {
        self.cache
    }
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    pub fn metadata_cache(&self) -> &MetadataCache {
        &self.metadata_cache
    }

    /// The chain, active image first.
    pub fn chain(&self) -> Vec<Arc<Layer>> {
        self.layers().clone()
    }

    pub fn chain_len(&self) -> usize {
        self.layers().len()
    }

    /// Guest-visible size in bytes.
    pub fn virtual_size(&self) -> BlockResult<u64> {
        self.layers()[0].virtual_size()
    }

    fn check_range(&self, off: u64, len: u64) -> BlockResult<u64> {
        let size = self.virtual_size()?;
        if off.checked_add(len).is_none_or(|e| e > size) {
            return Err(BlockError::OutOfRange {
                offset: off,
                len,
                size,
            });
        }
        Ok(size)
    }

    /// Reads `buf.len()` bytes at byte offset `off`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> BlockResult<()> {
        self.check_range(off, buf.len() as u64)?;
        let layers = self.layers();
        read_ranges(&layers, 0, off, buf)
    }

    /// Reads what the layers from `from` down show (`from = 1`: the backing of the active
    /// image), for copy-on-write and streaming.
    pub fn read_below(&self, from: usize, off: u64, buf: &mut [u8]) -> BlockResult<()> {
        let layers = self.layers();
        read_ranges(&layers, from, off, buf)
    }

    /// Scatter read: the buffers are filled in order from `off`.
    pub fn readv(&self, off: u64, bufs: &mut [IoSliceMut<'_>]) -> BlockResult<()> {
        let mut pos = off;
        for b in bufs.iter_mut() {
            self.read_at(pos, b)?;
            pos += b.len() as u64;
        }
        Ok(())
    }

    fn writable_top(&self) -> BlockResult<Arc<Layer>> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let top = self.layers()[0].clone();
        if top.is_read_only() {
            return Err(BlockError::ReadOnly);
        }
        Ok(top)
    }

    fn after_write(&self) -> BlockResult<()> {
        if self.cache.writethrough() {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes `buf` at `off` into the active image.
    pub fn write_at(&self, off: u64, buf: &[u8]) -> BlockResult<()> {
        self.check_range(off, buf.len() as u64)?;
        let _in_flight = self.io_gate();
        if self.detect_zeroes != super::options::DetectZeroes::Off
            && !buf.is_empty()
            && super::zero_scan::is_zero(buf)
        {
            let unmap = self.detect_zeroes == super::options::DetectZeroes::Unmap;
            return self.write_zeroes_gated(off, buf.len() as u64, unmap);
        }
        let top = self.writable_top()?;
        match &top.driver {
            ImageDriver::Raw(r) => r.write(off, buf)?,
            ImageDriver::Qcow2(q) => {
                let below = |o: u64, b: &mut [u8]| self.read_below(1, o, b);
                q.write(off, buf, &below)?
            }
        }
        self.mark_dirty(off, buf.len() as u64);
        self.after_write()
    }

    /// Gather write.
    pub fn writev(&self, off: u64, bufs: &[IoSlice<'_>]) -> BlockResult<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        self.check_range(off, total as u64)?;
        if bufs.len() == 1 {
            return self.write_at(off, &bufs[0]);
        }
        // One contiguous write keeps qcow2 cluster allocation in one piece.
        let mut joined = Vec::with_capacity(total);
        for b in bufs {
            joined.extend_from_slice(b);
        }
        self.write_at(off, &joined)
    }

    /// Writes a cluster compressed (qcow2 only; `qemu-img convert -c`).
    pub fn write_compressed(&self, off: u64, buf: &[u8]) -> BlockResult<()> {
        let _in_flight = self.io_gate();
        let top = self.writable_top()?;
        self.mark_dirty(off, buf.len() as u64);
        match &top.driver {
            ImageDriver::Qcow2(q) => q.write_compressed(off, buf),
            ImageDriver::Raw(_) => Err(BlockError::Unsupported(
                "Compression is not supported for the raw format".into(),
            )),
        }
    }

    /// Makes `[off, off+len)` read as zeros; `unmap` allows deallocation.
    pub fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> BlockResult<()> {
        let _in_flight = self.io_gate();
        self.write_zeroes_gated(off, len, unmap)
    }

    /// [`Self::write_zeroes`] with the I/O gate already held.
    fn write_zeroes_gated(&self, off: u64, len: u64, unmap: bool) -> BlockResult<()> {
        self.check_range(off, len)?;
        let top = self.writable_top()?;
        match &top.driver {
            ImageDriver::Raw(r) => r.write_zeroes(off, len, unmap)?,
            ImageDriver::Qcow2(q) => {
                let below = |o: u64, b: &mut [u8]| self.read_below(1, o, b);
                q.write_zeroes(off, len, unmap, &below)?
            }
        }
        self.mark_dirty(off, len);
        self.after_write()
    }

    /// Discards `[off, off+len)` (advisory: partial clusters are kept).
    pub fn discard(&self, off: u64, len: u64) -> BlockResult<()> {
        self.check_range(off, len)?;
        let _in_flight = self.io_gate();
        let top = self.writable_top()?;
        match &top.driver {
            ImageDriver::Raw(r) => r.discard(off, len)?,
            ImageDriver::Qcow2(q) => q.discard(off, len, self.chain_len() > 1)?,
        }
        self.mark_dirty(off, len);
        self.after_write()
    }

    /// Makes all completed writes durable (a guest flush).
    pub fn flush(&self) -> BlockResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.layers()[0].flush()
    }

    /// Allocation status at `off` through the chain: the longest run (at most `max`) with
    /// the same status.
    pub fn block_status(&self, off: u64, max: u64) -> BlockResult<BlockStatus> {
        let size = self.check_range(off, 0)?;
        if off >= size {
            return Err(BlockError::OutOfRange {
                offset: off,
                len: max,
                size,
            });
        }
        let layers = self.layers();
        let mut limit = max.min(size - off);
        for (depth, layer) in layers.iter().enumerate() {
            let lsize = layer.virtual_size()?;
            if off >= lsize {
                // Past the end of a shorter backing image: zeros, not allocated there.
                break;
            }
            let (len, mapping) = match &layer.driver {
                ImageDriver::Raw(r) => {
                    let (data, len) = r.data_run(off, limit.min(lsize - off))?;
                    let m = if data {
                        LayerMapping::Data { host: off }
                    } else {
                        LayerMapping::Zero { host: Some(off) }
                    };
                    (len, m)
                }
                ImageDriver::Qcow2(_) => {
                    let e = layer.map(off, limit.min(lsize - off))?;
                    (e.len, e.mapping)
                }
            };
            let len = len.min(limit);
            match mapping {
                LayerMapping::Unallocated => {
                    limit = len;
                    continue;
                }
                LayerMapping::Zero { host } => {
                    return Ok(BlockStatus {
                        len,
                        depth: Some(depth),
                        zero: true,
                        data: false,
                        host_offset: host,
                    })
                }
                LayerMapping::Data { host } => {
                    // Like QEMU, look through to the host file: preallocated clusters that
                    // are still holes there read as zeros.
                    let (zero, len) = match layer.format() {
                        ImageFormat::Qcow2 => {
                            let (is_data, run) = layer.file().data_run(host, len)?;
                            (!is_data, run.min(len).max(1))
                        }
                        ImageFormat::Raw => (false, len),
                    };
                    return Ok(BlockStatus {
                        len,
                        depth: Some(depth),
                        zero,
                        data: true,
                        host_offset: Some(host),
                    });
                }
                LayerMapping::Compressed { .. } => {
                    return Ok(BlockStatus {
                        len,
                        depth: Some(depth),
                        zero: false,
                        data: true,
                        host_offset: None,
                    })
                }
            }
        }
        Ok(BlockStatus {
            len: limit,
            depth: None,
            zero: true,
            data: false,
            host_offset: None,
        })
    }

    /// Whether `[off, off+len)` starts allocated in exactly layer `depth` or above it, for
    /// `block-stream`: returns (allocated in layers `0..=depth`? , run length).
    pub fn is_allocated_above(&self, depth: usize, off: u64, max: u64) -> BlockResult<(bool, u64)> {
        let layers = self.layers();
        let mut limit = max;
        for layer in layers.iter().take(depth + 1) {
            let lsize = layer.virtual_size()?;
            if off >= lsize {
                continue;
            }
            let e = layer.map(off, limit.min(lsize - off))?;
            if e.mapping != LayerMapping::Unallocated {
                return Ok((true, e.len.min(limit)));
            }
            limit = limit.min(e.len);
        }
        Ok((false, limit))
    }

    /// Changes the virtual size of the active image.
    pub fn resize(&self, size: u64) -> BlockResult<()> {
        let top = self.writable_top()?;
        match &top.driver {
            ImageDriver::Raw(r) => r.resize(size),
            ImageDriver::Qcow2(q) => q.resize(size),
        }
    }

    /// Puts a freshly opened overlay (whose backing is the current active image) on top:
    /// the pivot of `snapshot_blkdev` / `blockdev-snapshot-sync`. Flushes the old top first.
    pub fn push_overlay(&self, overlay: Layer) -> BlockResult<()> {
        let _no_io = self.io_gate_exclusive();
        self.flush()?;
        let mut g = self.layers.write().unwrap_or_else(|p| p.into_inner());
        g.insert(0, Arc::new(overlay));
        Ok(())
    }

    /// `snapshot_blkdev` / `blockdev-snapshot-sync` in one call: creates a qcow2 overlay at
    /// `path` whose header names `backing_name` (the current active image, as the overlay
    /// should record it) and puts it on top of the chain without reopening the chain.
    pub fn snapshot_to_new_overlay(&self, path: &Path, backing_name: &str) -> BlockResult<()> {
        let top = self.layers()[0].clone();
        let size = top.virtual_size()?;
        super::create_overlay(path, backing_name, top.format(), size)?;
        let opts = super::options::OpenOptions {
            cache: self.cache,
            no_backing: true,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        let (layer, _) = super::open::open_layer(
            path,
            Some(ImageFormat::Qcow2),
            self.read_only,
            &opts,
            &self.metadata_cache,
            &super::options::Qcow2CacheOptions::default(),
            &mut warnings,
        )?;
        self.push_overlay(layer)
    }

    /// One step of `block-stream`: copies into the active image every cluster of
    /// `[off, off+len)` that it does not allocate itself but that layers `1..base_depth`
    /// (above the base, which stays) do. Guest writes racing with this are never
    /// overwritten. Returns the bytes copied. The active image must be qcow2.
    pub fn stream_range(&self, base_depth: usize, off: u64, len: u64) -> BlockResult<u64> {
        let size = self.check_range(off, len)?;
        let top = self.writable_top()?;
        let Some(q) = top.qcow2() else {
            return Err(BlockError::Unsupported(
                "block-stream needs a qcow2 active image".into(),
            ));
        };
        let cs = q.cluster_size();
        let mut pos = off & !(cs - 1);
        let end = (off + len).min(size);
        let mut copied = 0;
        let mut buf = vec![0u8; cs as usize];
        while pos < end {
            let n = cs.min(size - pos);
            let (above_base, _) = self.is_allocated_above(base_depth.saturating_sub(1), pos, n)?;
            let top_ext = top.map(pos, n)?;
            if above_base && top_ext.mapping == LayerMapping::Unallocated {
                self.read_below(1, pos, &mut buf[..n as usize])?;
                if q.write_if_unallocated(pos, &buf[..n as usize])? {
                    copied += n;
                }
            }
            pos += n;
        }
        Ok(copied)
    }

    /// The end of `block-stream`: the active image's header now names `base` (or nothing)
    /// and the streamed layers leave the chain. `base_depth` is the base's index in the
    /// chain (`chain_len()` when streaming everything).
    pub fn finish_stream(
        &self,
        base_depth: usize,
        base_name: Option<&str>,
        base_format: Option<ImageFormat>,
    ) -> BlockResult<()> {
        let top = self.writable_top()?;
        let Some(q) = top.qcow2() else {
            return Err(BlockError::Unsupported(
                "block-stream needs a qcow2 active image".into(),
            ));
        };
        q.flush()?;
        q.set_backing(base_name, base_format.map(|f| f.name()))?;
        self.drop_intermediate_layers(base_depth)
    }

    /// Removes layers `1..until` from the chain (after `block-stream` copied their data
    /// into the active image and rewrote its backing fields).
    pub fn drop_intermediate_layers(&self, until: usize) -> BlockResult<()> {
        let _no_io = self.io_gate_exclusive();
        let mut g = self.layers.write().unwrap_or_else(|p| p.into_inner());
        if until > g.len() || until < 1 {
            return Err(BlockError::InvalidOption(
                "invalid layer range to drop".into(),
            ));
        }
        g.drain(1..until);
        Ok(())
    }

    /// Reopens layer `depth` read-write in place, keeping its node name (a commit job
    /// writes into a backing image, which the chain opened read-only). A no-op when the
    /// layer is writable already.
    pub fn reopen_layer_read_write(&self, depth: usize) -> BlockResult<()> {
        let old = self
            .layers()
            .get(depth)
            .cloned()
            .ok_or_else(|| BlockError::InvalidOption("no such layer".into()))?;
        if !old.is_read_only() {
            return Ok(());
        }
        old.flush()?;
        let opts = super::options::OpenOptions {
            cache: self.cache,
            no_backing: true,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        let (mut layer, _) = super::open::open_layer(
            &old.filename,
            Some(old.format()),
            false,
            &opts,
            &self.metadata_cache,
            &super::options::Qcow2CacheOptions::default(),
            &mut warnings,
        )?;
        layer.node_name = old.node_name.clone();
        layer.backing_name = old.backing_name.clone();
        layer.backing_format = old.backing_format.clone();
        let _no_io = self.io_gate_exclusive();
        let mut g = self.layers.write().unwrap_or_else(|p| p.into_inner());
        g[depth] = Arc::new(layer);
        Ok(())
    }

    /// Whether layers `from..to` allocate the start of `[off, off+max)`, and for how long
    /// that answer holds (`to` is exclusive; layers past their virtual size are skipped).
    pub fn allocated_in_layers(
        &self,
        from: usize,
        to: usize,
        off: u64,
        max: u64,
    ) -> BlockResult<(bool, u64)> {
        let layers = self.layers();
        let mut limit = max;
        for layer in layers.iter().take(to).skip(from) {
            let lsize = layer.virtual_size()?;
            if off >= lsize {
                continue;
            }
            let e = layer.map(off, limit.min(lsize - off))?;
            if e.mapping != LayerMapping::Unallocated {
                return Ok((true, e.len.min(limit)));
            }
            limit = limit.min(e.len);
        }
        Ok((false, limit))
    }

    /// One step of a commit: copies `[off, off+len)` as layers `top..` show it into layer
    /// `base` (already reopened read-write). The caller decides which ranges need it.
    pub fn commit_range(&self, top: usize, base: usize, off: u64, len: u64) -> BlockResult<()> {
        let layers = self.chain();
        let target = layers
            .get(base)
            .ok_or_else(|| BlockError::InvalidOption("no such base layer".into()))?
            .clone();
        let size = target.virtual_size()?;
        let end = (off + len).min(size);
        if off >= end {
            return Ok(());
        }
        let mut buf = vec![0u8; (end - off) as usize];
        read_ranges(&layers, top, off, &mut buf)?;
        match &target.driver {
            ImageDriver::Raw(r) => r.write(off, &buf),
            ImageDriver::Qcow2(q) => {
                let below = |o: u64, b: &mut [u8]| read_ranges(&layers, base + 1, o, b);
                q.write(off, &buf, &below)
            }
        }
    }

    /// Flushes layer `depth` (a commit target) to disk.
    pub fn flush_layer(&self, depth: usize) -> BlockResult<()> {
        match self.layers().get(depth) {
            Some(layer) => layer.flush(),
            None => Err(BlockError::InvalidOption("no such layer".into())),
        }
    }

    /// Empties the active image (qcow2) so its backing shows through: the end of HMP
    /// `commit`, after the data is safely in the backing image.
    pub fn make_top_empty(&self) -> BlockResult<()> {
        let top = self.writable_top()?;
        match top.qcow2() {
            Some(q) => q.make_empty(),
            None => Err(BlockError::Unsupported(
                "Image format 'raw' cannot be emptied after a commit".into(),
            )),
        }
    }

    /// The end of a commit of layers `top..base` into `base` (`top >= 1`): the layer above
    /// `top` (reopened read-write when it is not the active image) names `base` as backing,
    /// and layers `top..base` leave the chain. The data must be in `base` and flushed.
    pub fn finish_commit(&self, top: usize, base: usize) -> BlockResult<()> {
        if top == 0 || top >= base || base >= self.chain_len() {
            return Err(BlockError::InvalidOption("invalid commit range".into()));
        }
        {
            self.reopen_layer_read_write(top - 1)?;
            let layers = self.chain();
            let above = &layers[top - 1];
            let target = &layers[base];
            let Some(q) = above.qcow2() else {
                return Err(BlockError::Unsupported(
                    "commit needs a qcow2 image above the committed layers".into(),
                ));
            };
            q.flush()?;
            q.set_backing(
                Some(&target.filename.to_string_lossy()),
                Some(target.format().name()),
            )?;
        }
        let _no_io = self.io_gate_exclusive();
        let mut g = self.layers.write().unwrap_or_else(|p| p.into_inner());
        g.drain(top..base);
        Ok(())
    }

    /// The end of an active commit (`block-job-complete`): with guest writes held off,
    /// `sync` copies what is still only above `base` into it, `base` is flushed, and it
    /// becomes the active image (layers `0..base` leave the chain).
    pub fn complete_active_commit(
        &self,
        base: usize,
        sync: impl FnOnce(&BlockNode) -> BlockResult<()>,
    ) -> BlockResult<()> {
        if base == 0 || base >= self.chain_len() {
            return Err(BlockError::InvalidOption("invalid commit range".into()));
        }
        let _no_io = self.io_gate_exclusive();
        sync(self)?;
        self.flush_layer(base)?;
        let mut g = self.layers.write().unwrap_or_else(|p| p.into_inner());
        g.drain(0..base);
        Ok(())
    }

    /// Starts recording which `granularity`-sized units guest writes touch (active
    /// commit), forgetting any earlier record.
    pub fn start_dirty_tracking(&self, granularity: u64) {
        *self.dirty.lock().unwrap_or_else(|p| p.into_inner()) = Some(DirtyUnits {
            granularity: granularity.max(512),
            units: Default::default(),
        });
    }

    /// Stops recording guest writes.
    pub fn stop_dirty_tracking(&self) {
        *self.dirty.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The ranges written since tracking started or since the last call, merged and in
    /// order; the record starts empty again.
    pub fn take_dirty(&self) -> Vec<(u64, u64)> {
        let mut g = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = g.as_mut() else {
            return Vec::new();
        };
        let units = std::mem::take(&mut d.units);
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for u in units {
            let off = u * d.granularity;
            match ranges.last_mut() {
                Some((start, len)) if *start + *len == off => *len += d.granularity,
                _ => ranges.push((off, d.granularity)),
            }
        }
        ranges
    }

    fn mark_dirty(&self, off: u64, len: u64) {
        let mut g = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = g.as_mut() {
            if len == 0 {
                return;
            }
            let first = off / d.granularity;
            let last = (off + len - 1) / d.granularity;
            d.units.extend(first..=last);
        }
    }

    /// File name of the active image.
    pub fn filename(&self) -> PathBuf {
        self.layers()[0].filename.clone()
    }

    /// The host path of layer `i`.
    pub fn layer_path(&self, i: usize) -> Option<PathBuf> {
        self.layers().get(i).map(|l| l.filename.clone())
    }

    /// Closes cleanly (flush, dirty bit cleared). Also done on drop.
    pub fn close(self) -> BlockResult<()> {
        let layers = std::mem::take(&mut *self.layers.write().unwrap_or_else(|p| p.into_inner()));
        for l in &layers {
            if let ImageDriver::Qcow2(q) = &l.driver {
                q.close()?;
            }
        }
        Ok(())
    }
}

/// Directory-relative resolution of a backing file name, as QEMU does: relative names are
/// relative to the directory of the image that names them.
pub fn resolve_backing_path(image: &Path, backing: &str) -> PathBuf {
    let b = Path::new(backing);
    if b.is_absolute() {
        return b.to_path_buf();
    }
    match image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(b),
        _ => b.to_path_buf(),
    }
}
