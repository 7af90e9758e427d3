//! The qcow2 header and its extensions: parsing with bounds checks, and serialisation in the
//! layout QEMU 7.2 writes (header, backing format, feature name table, end marker, then the
//! backing file name).

use crate::block::error::{BlockError, BlockResult};

pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const EXT_CRYPTO: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Incompatible features vmscope implements.
pub const INCOMPAT_SUPPORTED: u64 = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;

pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header length of a v3 image as QEMU 7.2 writes it (with the compression type byte).
pub const V3_HEADER_LEN: u32 = 112;
pub const V2_HEADER_LEN: u32 = 72;
/// QEMU's limits, which also bound what a hostile image can make us allocate.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
pub const MAX_BACKING_NAME: u32 = 1023;
pub const MAX_SNAPSHOTS: u32 = 65536;

/// Feature name table as QEMU 7.2 writes it: (type, bit, name).
pub const QEMU_FEATURE_TABLE: [(u8, u8, &str); 8] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    Zlib,
    Zstd,
}

impl CompressionType {
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// An unknown header extension, kept so that rewriting the header preserves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawExtension {
    pub kind: u32,
    pub data: Vec<u8>,
}

/// The decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: CompressionType,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// (type, bit, name) from the image's feature name table.
    pub feature_table: Vec<(u8, u8, String)>,
    /// Other extensions, preserved verbatim (bitmaps, ...).
    pub other_extensions: Vec<RawExtension>,
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().expect("4-byte slice"))
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().expect("8-byte slice"))
}

fn corrupt(msg: impl Into<String>) -> BlockError {
    BlockError::Corrupt(msg.into())
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    pub fn lazy_refcounts(&self) -> bool {
        self.compatible_features & COMPAT_LAZY_REFCOUNTS != 0
    }

    /// Parses the header from the start of the file. `file_len` bounds every offset;
    /// `first_cluster` must hold at least the first cluster (or the whole file if shorter).
    pub fn parse(buf: &[u8]) -> BlockResult<Header> {
        if buf.len() < V2_HEADER_LEN as usize || be32(buf, 0) != QCOW2_MAGIC {
            return Err(corrupt("Image is not in qcow2 format"));
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(BlockError::Unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(buf, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(format!(
                "Unsupported cluster size: 2^{cluster_bits}"
            )));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: CompressionType::Zlib,
            backing_file: None,
            backing_format: None,
            feature_table: Vec::new(),
            other_extensions: Vec::new(),
        };
        let cluster_size = 1u64 << cluster_bits;
        if version == 3 {
            if buf.len() < 104 {
                return Err(corrupt("qcow2 header exceeds cluster size"));
            }
            h.incompatible_features = be64(buf, 72);
            h.compatible_features = be64(buf, 80);
            h.autoclear_features = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104 {
                return Err(corrupt("qcow2 header too short"));
            }
            if h.header_length as u64 > cluster_size || h.header_length as usize > buf.len() {
                return Err(corrupt("qcow2 header exceeds cluster size"));
            }
            if h.header_length >= 105 {
                h.compression_type = match buf[104] {
                    0 => CompressionType::Zlib,
                    1 => CompressionType::Zstd,
                    t => {
                        return Err(BlockError::Unsupported(format!(
                            "qcow2: unknown compression type: {t}"
                        )))
                    }
                };
            }
            if h.refcount_order > 6 {
                return Err(corrupt(
                    "Reference count entry width too large; may not exceed 64 bits",
                ));
            }
        }
        let has_comp_bit = h.incompatible_features & INCOMPAT_COMPRESSION != 0;
        if has_comp_bit && h.compression_type == CompressionType::Zlib {
            return Err(corrupt(
                "qcow2: Compression type incompatible feature bit must not be set when compression type is zlib",
            ));
        }
        if !has_comp_bit && h.compression_type != CompressionType::Zlib {
            return Err(corrupt(
                "qcow2: Compression type incompatible feature bit must be set when compression type is not zlib",
            ));
        }
        // Header extensions, up to the backing file name or the end of the first cluster.
        let ext_end = if h.backing_file_offset != 0 {
            h.backing_file_offset.min(cluster_size)
        } else {
            cluster_size
        }
        .min(buf.len() as u64) as usize;
        let mut off = h.header_length as usize;
        loop {
            if off + 8 > ext_end {
                break;
            }
            let kind = be32(buf, off);
            let len = be32(buf, off + 4) as usize;
            off += 8;
            if kind == EXT_END {
                break;
            }
            if len > ext_end - off {
                return Err(corrupt("Invalid extension length"));
            }
            let data = &buf[off..off + len];
            match kind {
                EXT_BACKING_FORMAT => {
                    h.backing_format = Some(
                        String::from_utf8_lossy(data)
                            .trim_end_matches('\0')
                            .to_string(),
                    );
                }
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(48) {
                        let name_bytes = &e[2..48];
                        let end = name_bytes.iter().position(|&c| c == 0).unwrap_or(46);
                        h.feature_table.push((
                            e[0],
                            e[1],
                            String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
                        ));
                    }
                }
                _ => h.other_extensions.push(RawExtension {
                    kind,
                    data: data.to_vec(),
                }),
            }
            off += len.div_ceil(8) * 8;
        }
        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME
                || h.backing_file_offset
                    .saturating_add(h.backing_file_size as u64)
                    > cluster_size
            {
                return Err(corrupt("Backing file name too long"));
            }
            let start = h.backing_file_offset as usize;
            let end = start + h.backing_file_size as usize;
            if end > buf.len() {
                return Err(corrupt("Backing file name too long"));
            }
            let name = String::from_utf8_lossy(&buf[start..end]).into_owned();
            if !name.is_empty() {
                h.backing_file = Some(name);
            }
        }
        Ok(h)
    }

    /// The text QEMU gives for incompatible features it does not support.
    pub fn unsupported_features_message(&self, mask: u64) -> String {
        let mut mask = mask;
        let mut parts: Vec<String> = Vec::new();
        for (kind, bit, name) in &self.feature_table {
            if *kind == 0 && *bit < 64 && mask & (1u64 << bit) != 0 {
                parts.push(name.chars().take(46).collect());
                mask &= !(1u64 << bit);
            }
        }
        if mask != 0 {
            parts.push(format!("Unknown incompatible feature: {mask:x}"));
        }
        format!("Unsupported qcow2 feature(s): {}", parts.join(", "))
    }

    /// Serialises the header cluster content: fixed fields, extensions, backing file name.
    /// Fails when it does not fit in one cluster.
    pub fn serialize(&self) -> BlockResult<Vec<u8>> {
        let mut b = Vec::with_capacity(1024);
        b.extend_from_slice(&QCOW2_MAGIC.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes()); // backing file offset, patched below
        b.extend_from_slice(&0u32.to_be_bytes()); // backing file size, patched below
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            b.extend_from_slice(&self.incompatible_features.to_be_bytes());
            b.extend_from_slice(&self.compatible_features.to_be_bytes());
            b.extend_from_slice(&self.autoclear_features.to_be_bytes());
            b.extend_from_slice(&self.refcount_order.to_be_bytes());
            let hl = self.header_length.max(104);
            b.extend_from_slice(&hl.to_be_bytes());
            if hl > 104 {
                b.push(match self.compression_type {
                    CompressionType::Zlib => 0,
                    CompressionType::Zstd => 1,
                });
                b.resize(hl as usize, 0);
            }
        }
        let push_ext = |b: &mut Vec<u8>, kind: u32, data: &[u8]| {
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(data);
            b.resize(b.len().div_ceil(8) * 8, 0);
        };
        if let Some(fmt) = &self.backing_format {
            push_ext(&mut b, EXT_BACKING_FORMAT, fmt.as_bytes());
        }
        if self.version >= 3 && !self.feature_table.is_empty() {
            let mut t = Vec::with_capacity(48 * self.feature_table.len());
            for (kind, bit, name) in &self.feature_table {
                let mut e = [0u8; 48];
                e[0] = *kind;
                e[1] = *bit;
                let n = name.as_bytes();
                let n = &n[..n.len().min(46)];
                e[2..2 + n.len()].copy_from_slice(n);
                t.extend_from_slice(&e);
            }
            push_ext(&mut b, EXT_FEATURE_TABLE, &t);
        }
        for e in &self.other_extensions {
            push_ext(&mut b, e.kind, &e.data);
        }
        push_ext(&mut b, EXT_END, &[]);
        if let Some(name) = &self.backing_file {
            if name.len() > MAX_BACKING_NAME as usize {
                return Err(BlockError::InvalidOption(
                    "Backing file name too long".into(),
                ));
            }
            let off = b.len() as u64;
            b[8..16].copy_from_slice(&off.to_be_bytes());
            b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        if b.len() as u64 > self.cluster_size() {
            return Err(BlockError::InvalidOption(
                "Cannot fit the header and its extensions into one cluster".into(),
            ));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 16,
            size: 1 << 30,
            crypt_method: 0,
            l1_size: 2,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V3_HEADER_LEN,
            compression_type: CompressionType::Zlib,
            backing_file: Some("base.qcow2".into()),
            backing_format: Some("qcow2".into()),
            feature_table: QEMU_FEATURE_TABLE
                .iter()
                .map(|(t, b, n)| (*t, *b, n.to_string()))
                .collect(),
            other_extensions: vec![],
        }
    }

    #[test]
    fn header_round_trips_with_qemu_layout() {
        let h = sample();
        let bytes = h.serialize().unwrap();
        // QEMU puts the backing name right after the end-of-extensions marker.
        assert_eq!(&bytes[8..16], &0x210u64.to_be_bytes());
        let mut padded = bytes.clone();
        padded.resize(65536, 0);
        let back = Header::parse(&padded).unwrap();
        let mut expect = h.clone();
        expect.backing_file_offset = 0x210;
        expect.backing_file_size = 10;
        assert_eq!(back, expect);
    }

    #[test]
    fn unknown_features_are_named_like_qemu() {
        let h = sample();
        assert_eq!(
            h.unsupported_features_message(INCOMPAT_EXTL2 | (1 << 9)),
            "Unsupported qcow2 feature(s): extended L2 entries, Unknown incompatible feature: 200"
        );
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let mut b = sample().serialize().unwrap();
        b.resize(65536, 0);
        let mut bad = b.clone();
        bad[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(Header::parse(&bad).is_err());
        let mut bad = b.clone();
        bad[16..20].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        assert!(Header::parse(&bad).is_err());
        assert!(Header::parse(&b[..50]).is_err());
        let mut bad = b.clone();
        bad[0x74..0x78].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(Header::parse(&bad).is_err());
    }
}
