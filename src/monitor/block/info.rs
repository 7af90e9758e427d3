//! `query-block` / `info block` and `query-blockstats` / `info blockstats`: what QEMU 7.2
//! reports of each drive, gathered once into typed records, then shown as JSON (members
//! inserted in QAPI schema order, which with QDict hashing gives QEMU's byte order) or as
//! HMP text.

use std::sync::atomic::Ordering;

use super::int;
use crate::block::drive::{Drive, DriveKind};
use crate::block::node::{resolve_backing_path, BlockNode, Layer};
use crate::block::options::DetectZeroes;
use crate::monitor::commands::MonitorCommands;
use crate::monitor::qmp::{QDict, QObject};

/// qcow2's `format-specific` data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2Specific {
    pub compat: &'static str,
    pub lazy_refcounts: bool,
    pub refcount_bits: u64,
    pub corrupt: bool,
    pub extended_l2: bool,
    pub compression_type: &'static str,
}

/// QEMU's `ImageInfo` of one layer (and, recursively, its backing image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub filename: String,
    pub format: &'static str,
    pub dirty_flag: bool,
    pub actual_size: Option<u64>,
    pub virtual_size: u64,
    pub cluster_size: Option<u64>,
    pub backing_filename: Option<String>,
    pub full_backing_filename: Option<String>,
    pub backing_filename_format: Option<String>,
    pub backing_image: Option<Box<ImageInfo>>,
    pub qcow2: Option<Qcow2Specific>,
}

/// QEMU's `BlockDeviceInfo` (the inserted medium).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDeviceInfo {
    pub file: String,
    pub node_name: String,
    pub ro: bool,
    pub drv: &'static str,
    pub backing_file: Option<String>,
    pub backing_file_depth: u64,
    pub detect_zeroes: &'static str,
    pub image: ImageInfo,
    pub writeback: bool,
    pub direct: bool,
    pub no_flush: bool,
}

/// QEMU's `BlockInfo` (one drive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    pub device: String,
    pub qdev: Option<String>,
    pub removable: bool,
    pub locked: bool,
    pub inserted: Option<BlockDeviceInfo>,
    pub tray_open: Option<bool>,
    pub io_status: Option<&'static str>,
}

const INCOMPAT_DIRTY: u64 = 1;
const INCOMPAT_CORRUPT: u64 = 2;
const INCOMPAT_EXTL2: u64 = 16;
const COMPAT_LAZY_REFCOUNTS: u64 = 1;

fn image_info(layers: &[std::sync::Arc<Layer>], depth: usize) -> ImageInfo {
    let layer = &layers[depth];
    let (backing_name, backing_format) = layer.current_backing();
    let (cluster_size, qcow2, dirty) = match layer.qcow2() {
        Some(q) => {
            let h = q.header();
            let spec = Qcow2Specific {
                compat: if h.version >= 3 { "1.1" } else { "0.10" },
                lazy_refcounts: h.compatible_features & COMPAT_LAZY_REFCOUNTS != 0,
                refcount_bits: 1u64 << h.refcount_order,
                corrupt: h.incompatible_features & INCOMPAT_CORRUPT != 0,
                extended_l2: h.incompatible_features & INCOMPAT_EXTL2 != 0,
                compression_type: h.compression_type.name(),
            };
            (
                Some(q.cluster_size()),
                Some(spec),
                // An image QEMU has open with lazy refcounts is marked dirty on disk; the
                // flag shown is the on-disk bit.
                h.incompatible_features & INCOMPAT_DIRTY != 0 && h.lazy_refcounts(),
            )
        }
        None => (None, None, false),
    };
    let full_backing = backing_name.as_deref().map(|b| {
        resolve_backing_path(&layer.filename, b)
            .display()
            .to_string()
    });
    ImageInfo {
        filename: layer.filename.display().to_string(),
        format: layer.format().name(),
        dirty_flag: dirty,
        actual_size: layer.file().allocated_size().ok(),
        virtual_size: layer.virtual_size().unwrap_or(0),
        cluster_size,
        backing_filename: backing_name.clone(),
        full_backing_filename: full_backing,
        backing_filename_format: backing_format.filter(|_| backing_name.is_some()),
        backing_image: (depth + 1 < layers.len()).then(|| Box::new(image_info(layers, depth + 1))),
        qcow2,
    }
}

fn device_info(node: &BlockNode, drive: &Drive) -> BlockDeviceInfo {
    let layers = node.chain();
    let top = &layers[0];
    let cache = node.cache_mode();
    BlockDeviceInfo {
        file: top.filename.display().to_string(),
        node_name: top.node_name.clone(),
        ro: node.is_read_only(),
        drv: top.format().name(),
        backing_file: top.current_backing().0,
        backing_file_depth: layers.len() as u64 - 1,
        detect_zeroes: match drive.spec().open.detect_zeroes {
            DetectZeroes::Off => "off",
            DetectZeroes::On => "on",
            DetectZeroes::Unmap => "unmap",
        },
        image: image_info(&layers, 0),
        writeback: !cache.writethrough(),
        direct: cache.direct(),
        no_flush: cache.no_flush(),
    }
}

/// One drive as `query-block` shows it.
pub(crate) fn block_info(drive: &Drive) -> BlockInfo {
    let qdev = drive.device();
    let inserted = drive.node().map(|n| device_info(&n, drive));
    // A device-less drive counts as removable with a closed tray and no I/O status;
    // IDE and virtio devices enable I/O status, a CD-ROM has a tray.
    let (removable, tray_open, io_status) = match (&qdev, drive.kind()) {
        (None, _) => (true, None, None),
        (Some(_), DriveKind::Cdrom) => (true, Some(false), Some("ok")),
        (Some(_), DriveKind::Disk) => (false, None, Some("ok")),
    };
    BlockInfo {
        device: drive.id().to_string(),
        qdev,
        removable,
        locked: false,
        inserted,
        tray_open,
        io_status,
    }
}

impl MonitorCommands {
    /// `query-block`.
    pub fn query_block(&self) -> Vec<BlockInfo> {
        self.drives().iter().map(|d| block_info(d)).collect()
    }
}

fn qcow2_specific(spec: &Qcow2Specific) -> QDict {
    QDict::new().with("type", "qcow2").with(
        "data",
        QDict::new()
            .with("compat", spec.compat)
            .with("lazy-refcounts", spec.lazy_refcounts)
            .with("refcount-bits", int(spec.refcount_bits))
            .with("corrupt", spec.corrupt)
            .with("extended-l2", spec.extended_l2)
            .with("compression-type", spec.compression_type),
    )
}

pub(crate) fn image_info_json(info: &ImageInfo) -> QDict {
    let mut d = QDict::new()
        .with("filename", info.filename.as_str())
        .with("format", info.format)
        .with("dirty-flag", info.dirty_flag);
    if let Some(size) = info.actual_size {
        d.put("actual-size", int(size));
    }
    d.put("virtual-size", int(info.virtual_size));
    if let Some(cs) = info.cluster_size {
        d.put("cluster-size", int(cs));
    }
    if let Some(b) = &info.backing_filename {
        d.put("backing-filename", b.as_str());
    }
    if let Some(b) = &info.full_backing_filename {
        d.put("full-backing-filename", b.as_str());
    }
    if let Some(b) = &info.backing_filename_format {
        d.put("backing-filename-format", b.as_str());
    }
    if let Some(b) = &info.backing_image {
        d.put("backing-image", image_info_json(b));
    }
    if let Some(spec) = &info.qcow2 {
        d.put("format-specific", qcow2_specific(spec));
    }
    d
}

pub(crate) fn device_info_json(info: &BlockDeviceInfo) -> QDict {
    let mut d = QDict::new()
        .with("file", info.file.as_str())
        .with("node-name", info.node_name.as_str())
        .with("ro", info.ro)
        .with("drv", info.drv);
    if let Some(b) = &info.backing_file {
        d.put("backing_file", b.as_str());
    }
    d.put("backing_file_depth", int(info.backing_file_depth));
    d.put("encrypted", false);
    d.put("detect_zeroes", info.detect_zeroes);
    for key in ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"] {
        d.put(key, int(0));
    }
    d.put("image", image_info_json(&info.image));
    d.put(
        "cache",
        QDict::new()
            .with("writeback", info.writeback)
            .with("direct", info.direct)
            .with("no-flush", info.no_flush),
    );
    d.put("write_threshold", int(0));
    d
}

pub(crate) fn block_info_json(info: &BlockInfo) -> QObject {
    let mut d = QDict::new().with("device", info.device.as_str());
    if let Some(q) = &info.qdev {
        d.put("qdev", q.as_str());
    }
    d.put("type", "unknown");
    d.put("removable", info.removable);
    d.put("locked", info.locked);
    if let Some(ins) = &info.inserted {
        d.put("inserted", device_info_json(ins));
    }
    if let Some(t) = info.tray_open {
        d.put("tray_open", t);
    }
    if let Some(s) = info.io_status {
        d.put("io-status", s);
    }
    QObject::Dict(d)
}

/// `info block [-n] [-v] [device]`'s text for the drives (QEMU 7.2's layout).
pub(crate) fn info_block_text(infos: &[BlockInfo], device: Option<&str>, verbose: bool) -> String {
    let mut out = String::new();
    for (index, info) in infos.iter().enumerate() {
        if device.is_some_and(|d| d != info.device) {
            continue;
        }
        // QEMU separates by position in the whole list, even when filtering.
        if index > 0 {
            out.push('\n');
        }
        out.push_str(&info.device);
        if let Some(ins) = &info.inserted {
            out.push_str(&format!(" ({})", ins.node_name));
        }
        match &info.inserted {
            Some(ins) => out.push_str(&format!(
                ": {} ({}{})\n",
                ins.file,
                ins.drv,
                if ins.ro { ", read-only" } else { "" }
            )),
            None => out.push_str(": [not inserted]\n"),
        }
        if let Some(q) = &info.qdev {
            out.push_str(&format!("    Attached to:      {q}\n"));
        }
        if info.removable {
            out.push_str(&format!(
                "    Removable device: {}locked, tray {}\n",
                if info.locked { "" } else { "not " },
                if info.tray_open == Some(true) {
                    "open"
                } else {
                    "closed"
                }
            ));
        }
        let Some(ins) = &info.inserted else { continue };
        out.push_str(&format!(
            "    Cache mode:       {}{}{}\n",
            if ins.writeback {
                "writeback"
            } else {
                "writethrough"
            },
            if ins.direct { ", direct" } else { "" },
            if ins.no_flush { ", ignore flushes" } else { "" }
        ));
        if let Some(b) = &ins.backing_file {
            out.push_str(&format!(
                "    Backing file:     {b} (chain depth: {})\n",
                ins.backing_file_depth
            ));
        }
        if ins.detect_zeroes != "off" {
            out.push_str(&format!("    Detect zeroes:    {}\n", ins.detect_zeroes));
        }
        if verbose {
            out.push_str("\nImages:\n");
            let mut image = Some(&ins.image);
            while let Some(img) = image {
                out.push_str(&image_dump(img));
                image = img.backing_image.as_deref();
            }
        }
    }
    out
}

/// `qemu-img info`-style dump of one image, as `info block -v` prints it.
fn image_dump(img: &ImageInfo) -> String {
    let mut out = format!(
        "image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\n",
        img.filename,
        img.format,
        size_to_str(img.virtual_size),
        img.virtual_size
    );
    if let Some(a) = img.actual_size {
        out.push_str(&format!("disk size: {}\n", size_to_str(a)));
    }
    if let Some(cs) = img.cluster_size {
        out.push_str(&format!("cluster_size: {cs}\n"));
    }
    if let Some(b) = &img.backing_filename {
        out.push_str(&format!("backing file: {b}"));
        if let Some(full) = &img.full_backing_filename {
            if full != b {
                out.push_str(&format!(" (actual path: {full})"));
            }
        }
        out.push('\n');
        if let Some(f) = &img.backing_filename_format {
            out.push_str(&format!("backing file format: {f}\n"));
        }
    }
    if let Some(s) = &img.qcow2 {
        out.push_str(&format!(
            "Format specific information:\n    compat: {}\n    compression type: {}\n    lazy refcounts: {}\n    refcount bits: {}\n    corrupt: {}\n    extended l2: {}\n",
            s.compat, s.compression_type, s.lazy_refcounts, s.refcount_bits, s.corrupt, s.extended_l2
        ));
    }
    out
}

/// QEMU's `size_to_str`: the unit is chosen so the value stays below 1000 of it, then
/// printed with `%0.3g` (three significant digits, no trailing zeros).
fn size_to_str(v: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    while i + 1 < UNITS.len() && v as f64 >= 1000.0 * (1u64 << (10 * i)) as f64 {
        i += 1;
    }
    let value = v as f64 / (1u64 << (10 * i)) as f64;
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text} {}", UNITS[i])
}

/// `query-blockstats` data of one drive (QAPI `BlockDeviceStats` order).
pub(crate) fn blockstats_json(drive: &Drive) -> QObject {
    let s = drive.stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut stats = QDict::new()
        .with("rd_bytes", int(get(&s.rd_bytes)))
        .with("wr_bytes", int(get(&s.wr_bytes)))
        .with("unmap_bytes", int(get(&s.unmap_bytes)))
        .with("rd_operations", int(get(&s.rd_operations)))
        .with("wr_operations", int(get(&s.wr_operations)))
        .with("unmap_operations", int(get(&s.unmap_operations)))
        .with("flush_operations", int(get(&s.flush_operations)))
        .with("rd_total_time_ns", int(get(&s.rd_total_time_ns)))
        .with("wr_total_time_ns", int(get(&s.wr_total_time_ns)))
        .with("unmap_total_time_ns", int(get(&s.unmap_total_time_ns)))
        .with("flush_total_time_ns", int(get(&s.flush_total_time_ns)))
        .with("wr_highest_offset", int(get(&s.wr_highest_offset)))
        .with("rd_merged", int(0))
        .with("wr_merged", int(0))
        .with("unmap_merged", int(0));
    if let Some(idle) = s.idle_time_ns() {
        stats.put("idle_time_ns", int(idle));
    }
    stats.put("failed_rd_operations", int(get(&s.failed_rd_operations)));
    stats.put("failed_wr_operations", int(get(&s.failed_wr_operations)));
    stats.put("failed_unmap_operations", int(0));
    stats.put(
        "failed_flush_operations",
        int(get(&s.failed_flush_operations)),
    );
    stats.put("invalid_rd_operations", int(get(&s.invalid_rd_operations)));
    stats.put("invalid_wr_operations", int(get(&s.invalid_wr_operations)));
    stats.put("invalid_unmap_operations", int(0));
    stats.put(
        "invalid_flush_operations",
        int(get(&s.invalid_flush_operations)),
    );
    stats.put("account_invalid", true);
    stats.put("account_failed", true);
    stats.put("timed_stats", QObject::List(Vec::new()));
    let mut d = QDict::new().with("device", drive.id());
    if let Some(q) = drive.device() {
        d.put("qdev", q.as_str());
    }
    if let Some(node) = drive.node() {
        if let Some(top) = node.chain().first() {
            d.put("node-name", top.node_name.as_str());
        }
    }
    d.put("stats", stats);
    QObject::Dict(d)
}

/// `info blockstats` (QEMU 7.2: one line per drive).
pub(crate) fn info_blockstats_text(drives: &[std::sync::Arc<Drive>]) -> String {
    let mut out = String::new();
    for drive in drives {
        let s = drive.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        out.push_str(&format!(
            "{}: rd_bytes={} wr_bytes={} rd_operations={} wr_operations={} flush_operations={} wr_total_time_ns={} rd_total_time_ns={} flush_total_time_ns={} rd_merged=0 wr_merged=0 idle_time_ns={}\n",
            drive.id(),
            get(&s.rd_bytes),
            get(&s.wr_bytes),
            get(&s.rd_operations),
            get(&s.wr_operations),
            get(&s.flush_operations),
            get(&s.wr_total_time_ns),
            get(&s.rd_total_time_ns),
            get(&s.flush_total_time_ns),
            s.idle_time_ns().unwrap_or(0)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::size_to_str;

    #[test]
    fn sizes_as_qemu_prints_them() {
        assert_eq!(size_to_str(4194304), "4 MiB");
        assert_eq!(size_to_str(1380352), "1.32 MiB");
        assert_eq!(size_to_str(200704), "196 KiB");
        assert_eq!(size_to_str(512), "512 B");
    }
}
