//! Creating qcow2 images with QEMU's options and layout: header in cluster 0, refcount
//! table in cluster 1, the first refcount block in cluster 2, then the L1 table, which is
//! what `qemu-img create -f qcow2` 7.2 writes.

use std::path::Path;

use super::cache::MetadataCache;
use super::header::{self, CompressionType, Header, QEMU_FEATURE_TABLE};
use super::image::{Qcow2Image, OFLAG_COPIED};
use crate::block::error::{BlockError, BlockResult};
use crate::block::host_file::HostFile;
use crate::block::options::{CacheMode, Qcow2CacheOptions};

/// `preallocation=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preallocation {
    #[default]
    Off,
    Metadata,
    Falloc,
    Full,
}

impl Preallocation {
    pub fn parse(s: &str) -> BlockResult<Self> {
        Ok(match s {
            "off" => Preallocation::Off,
            "metadata" => Preallocation::Metadata,
            "falloc" => Preallocation::Falloc,
            "full" => Preallocation::Full,
            _ => {
                return Err(BlockError::InvalidOption(format!(
                    "Parameter 'preallocation' does not accept value '{s}'"
                )))
            }
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Preallocation::Off => "off",
            Preallocation::Metadata => "metadata",
            Preallocation::Falloc => "falloc",
            Preallocation::Full => "full",
        }
    }
}

/// Everything `qemu-img create -f qcow2 -o ...` accepts that vmscope implements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2CreateOptions {
    pub size: u64,
    pub cluster_size: u64,
    /// 2 for `compat=0.10`, 3 for `compat=1.1` (the default).
    pub version: u32,
    pub lazy_refcounts: bool,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub preallocation: Preallocation,
    pub refcount_bits: u32,
    pub compression_type: CompressionType,
}

impl Default for Qcow2CreateOptions {
    fn default() -> Self {
        Qcow2CreateOptions {
            size: 0,
            cluster_size: 65536,
            version: 3,
            lazy_refcounts: false,
            backing_file: None,
            backing_format: None,
            preallocation: Preallocation::Off,
            refcount_bits: 16,
            compression_type: CompressionType::Zlib,
        }
    }
}

impl Qcow2CreateOptions {
    /// QEMU's validation, with its messages.
    pub fn validate(&self) -> BlockResult<()> {
        let e = |m: &str| Err(BlockError::InvalidOption(m.to_string()));
        if !self.cluster_size.is_power_of_two()
            || self.cluster_size < 512
            || self.cluster_size > (2 << 20)
        {
            return e("Cluster size must be a power of two between 512 and 2048k");
        }
        if self.version == 2 && self.lazy_refcounts {
            return e("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        }
        if !self.refcount_bits.is_power_of_two() || self.refcount_bits > 64 {
            return e("Refcount width must be a power of two and may not exceed 64 bits");
        }
        if self.version == 2 && self.refcount_bits != 16 {
            return e("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
        }
        if self.version == 2 && self.compression_type != CompressionType::Zlib {
            return e("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        }
        if self.backing_file.is_some() && self.preallocation != Preallocation::Off {
            return e("Backing file and preallocation can only be used at the same time if extended_l2 is on");
        }
        if self.backing_format.is_some() && self.backing_file.is_none() {
            return e("Backing format cannot be used without backing file");
        }
        Ok(())
    }
}

/// Creates `path` (truncating it) and returns nothing; open it afterwards as usual.
pub fn create(path: &Path, opts: &Qcow2CreateOptions) -> BlockResult<()> {
    opts.validate()?;
    let cs = opts.cluster_size;
    let cluster_bits = cs.trailing_zeros();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let file = HostFile::open(path, false, CacheMode::Writeback)?;
    let refcount_order = opts.refcount_bits.trailing_zeros();
    let mut h = Header {
        version: opts.version,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size: 0,
        crypt_method: 0,
        l1_size: 0,
        l1_table_offset: 0,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: if opts.compression_type == CompressionType::Zstd {
            header::INCOMPAT_COMPRESSION
        } else {
            0
        },
        compatible_features: if opts.lazy_refcounts {
            header::COMPAT_LAZY_REFCOUNTS
        } else {
            0
        },
        autoclear_features: 0,
        refcount_order,
        header_length: if opts.version >= 3 {
            header::V3_HEADER_LEN
        } else {
            header::V2_HEADER_LEN
        },
        compression_type: opts.compression_type,
        backing_file: opts.backing_file.clone(),
        backing_format: opts.backing_format.clone(),
        feature_table: if opts.version >= 3 {
            QEMU_FEATURE_TABLE
                .iter()
                .map(|(t, b, n)| (*t, *b, n.to_string()))
                .collect()
        } else {
            Vec::new()
        },
        other_extensions: Vec::new(),
    };
    let hb = h.serialize()?;
    let mut cluster0 = vec![0u8; cs as usize];
    cluster0[..hb.len()].copy_from_slice(&hb);
    file.write_at(&cluster0, 0)?;
    let mut rt = vec![0u8; cs as usize];
    rt[..8].copy_from_slice(&(2 * cs).to_be_bytes());
    file.write_at(&rt, cs)?;
    let mut rb = vec![0u8; cs as usize];
    for i in 0..3 {
        super::refcount::set(&mut rb, refcount_order, i, 1);
    }
    file.write_at(&rb, 2 * cs)?;
    file.flush()?;
    drop(file);
    h.size = opts.size;
    // QEMU rounds the size up to whole 512-byte sectors when creating (and reads a header
    // size rounded down), so an unaligned size is stored aligned.
    let size = opts.size.div_ceil(512).saturating_mul(512);

    // Grow to the requested size through the normal allocator, as QEMU does.
    let file = HostFile::open(path, false, CacheMode::Writeback)?;
    let (img, _) = Qcow2Image::open(
        file,
        MetadataCache::new(),
        &Qcow2CacheOptions::default(),
        false,
    )?;
    img.resize(size)?;
    if opts.preallocation != Preallocation::Off {
        preallocate(&img, opts.preallocation)?;
    }
    img.close()
}

fn preallocate(img: &Qcow2Image, mode: Preallocation) -> BlockResult<()> {
    let cs = img.cluster_size();
    let size = img.virtual_size();
    // L2 tables first, then the data clusters in one contiguous run, so that `full` can
    // zero the data without touching metadata.
    let span = cs << (img.cluster_bits() - 3);
    let mut g = 0;
    while g < size {
        img.with_state(|img, st| img.set_l2_entry(st, g, 0))?;
        g += span;
    }
    // Refcount blocks may land between data clusters: remember the data runs exactly.
    let mut g = 0;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut data_end = 0;
    while g < size {
        let host = img.preallocate_cluster(g)?;
        match runs.last_mut() {
            Some((s, l)) if *s + *l == host => *l += cs,
            _ => runs.push((host, cs)),
        }
        data_end = data_end.max(host + cs);
        g += cs;
    }
    img.flush()?;
    // The data clusters exist in the file, reading as zeros.
    let file = img.file();
    let end = data_end.max(file.len()?);
    match mode {
        Preallocation::Metadata | Preallocation::Off => {
            if file.len()? < end {
                file.set_len(end)?;
            }
        }
        Preallocation::Falloc => {
            for (s, l) in runs {
                file.fallocate(s, l)?;
            }
        }
        Preallocation::Full => {
            if file.len()? < end {
                file.set_len(end)?;
            }
            for (s, l) in runs {
                file.write_zeroes(s, l)?;
            }
        }
    }
    file.flush()
}

impl Qcow2Image {
    /// Allocates the data cluster of guest cluster `g` (preallocation); returns its offset.
    pub(super) fn preallocate_cluster(&self, g: u64) -> BlockResult<u64> {
        self.with_state(|img, st| {
            let host = img.alloc_clusters(st, 1)?;
            img.set_l2_entry(st, g, host | OFLAG_COPIED)?;
            Ok(host)
        })
    }
}
