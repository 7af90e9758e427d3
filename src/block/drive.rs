//! The VM's drives (QEMU's block backends): each has the name QEMU gives it (`ide0-hd0`,
//! `ide1-cd0`, or the user's `id=`), the node a device reads and writes (none for an empty
//! CD-ROM drive), the device it is attached to, and the I/O statistics `query-blockstats`
//! reports. Devices and the monitor share a drive through `Arc<Drive>`; a live snapshot or a
//! stream job changes the node's chain in place, so devices never need to re-fetch it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::error::{BlockError, BlockResult};
use super::node::BlockNode;
use super::open_node;
use super::options::OpenOptions;

/// What the guest sees the drive as (`media=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveKind {
    Disk,
    Cdrom,
}

/// Where a drive is meant to be attached (`if=`, `bus=`, `unit=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveSlot {
    /// `if=ide` (or no `if=` on `pc`): IDE bus 0 or 1, unit 0 (master) or 1 (slave).
    Ide { bus: u32, unit: u32 },
    /// `if=none`: attached by `-device ide-hd,drive=ID` / `ide-cd`, or not at all.
    Unattached,
}

/// Everything needed to open one drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSpec {
    pub id: String,
    /// `None`: a CD-ROM drive with no medium.
    pub file: Option<PathBuf>,
    pub kind: DriveKind,
    pub slot: DriveSlot,
    pub open: OpenOptions,
    /// `snapshot=on`: writes go to a temporary overlay that is deleted on exit.
    pub snapshot: bool,
    /// The device the drive is attached to, as QEMU names it (a qdev id or QOM path).
    pub device: Option<String>,
}

/// I/O accounting as QEMU's `BlockAcctStats` keeps it (the fields `query-blockstats`
/// and `info blockstats` show). Devices call the `record_*` methods per guest request.
#[derive(Debug, Default)]
pub struct BlockStats {
    pub rd_bytes: AtomicU64,
    pub wr_bytes: AtomicU64,
    pub rd_operations: AtomicU64,
    pub wr_operations: AtomicU64,
    pub flush_operations: AtomicU64,
    pub unmap_operations: AtomicU64,
    pub unmap_bytes: AtomicU64,
    pub rd_total_time_ns: AtomicU64,
    pub wr_total_time_ns: AtomicU64,
    pub flush_total_time_ns: AtomicU64,
    pub unmap_total_time_ns: AtomicU64,
    pub failed_rd_operations: AtomicU64,
    pub failed_wr_operations: AtomicU64,
    pub failed_flush_operations: AtomicU64,
    pub invalid_rd_operations: AtomicU64,
    pub invalid_wr_operations: AtomicU64,
    pub invalid_flush_operations: AtomicU64,
    /// Highest byte offset written so far (QEMU's `wr_highest_offset`: end of the request).
    pub wr_highest_offset: AtomicU64,
    /// When the last request finished, for `idle_time_ns`.
    last_completion: Mutex<Option<Instant>>,
}

/// The kind of a guest request, for [`BlockStats::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
    Flush,
    Unmap,
}

impl BlockStats {
    /// Accounts one finished request of `bytes` bytes at `offset` that took `elapsed`.
    pub fn record(&self, kind: IoKind, offset: u64, bytes: u64, elapsed: Duration, ok: bool) {
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        let add = |counter: &AtomicU64, v: u64| {
            counter.fetch_add(v, Ordering::Relaxed);
        };
        match (kind, ok) {
            (IoKind::Read, true) => {
                add(&self.rd_bytes, bytes);
                add(&self.rd_operations, 1);
                add(&self.rd_total_time_ns, ns);
            }
            (IoKind::Write, true) => {
                add(&self.wr_bytes, bytes);
                add(&self.wr_operations, 1);
                add(&self.wr_total_time_ns, ns);
                self.wr_highest_offset
                    .fetch_max(offset + bytes, Ordering::Relaxed);
            }
            (IoKind::Flush, true) => {
                add(&self.flush_operations, 1);
                add(&self.flush_total_time_ns, ns);
            }
            (IoKind::Unmap, true) => {
                add(&self.unmap_operations, 1);
                add(&self.unmap_bytes, bytes);
                add(&self.unmap_total_time_ns, ns);
            }
            (IoKind::Read, false) => add(&self.failed_rd_operations, 1),
            (IoKind::Write, false) => add(&self.failed_wr_operations, 1),
            (IoKind::Flush, false) => add(&self.failed_flush_operations, 1),
            (IoKind::Unmap, false) => {}
        }
        *self.last_completion.lock().unwrap() = Some(Instant::now());
    }

    /// Accounts a request the device refused before any I/O (out of range, bad command).
    pub fn record_invalid(&self, kind: IoKind) {
        let counter = match kind {
            IoKind::Read => &self.invalid_rd_operations,
            IoKind::Write => &self.invalid_wr_operations,
            IoKind::Flush => &self.invalid_flush_operations,
            IoKind::Unmap => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Nanoseconds since the last request finished; `None` before the first one (QEMU then
    /// omits `idle_time_ns`).
    pub fn idle_time_ns(&self) -> Option<u64> {
        self.last_completion
            .lock()
            .unwrap()
            .map(|t| t.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }
}

/// One drive of the VM.
pub struct Drive {
    spec: DriveSpec,
    node: RwLock<Option<Arc<BlockNode>>>,
    /// The qdev id or path of the device using the drive (`query-block`'s `qdev`).
    device: Mutex<Option<String>>,
    stats: BlockStats,
    /// The temporary overlay of `snapshot=on`, removed when the drive is dropped.
    temporary_overlay: Option<tempfile_path::TemporaryFile>,
}

impl Drive {
    /// Opens the drive's image (and chain). A CD-ROM drive without a file has no medium.
    pub fn open(spec: DriveSpec) -> BlockResult<Drive> {
        let mut temporary_overlay = None;
        let node = match &spec.file {
            None => None,
            Some(file) if spec.snapshot => {
                let (node, overlay) = open_with_temporary_overlay(file, &spec.open)?;
                temporary_overlay = Some(overlay);
                Some(Arc::new(node))
            }
            Some(file) => Some(Arc::new(open_node(file, &spec.open)?)),
        };
        Ok(Drive {
            device: Mutex::new(spec.device.clone()),
            spec,
            node: RwLock::new(node),
            stats: BlockStats::default(),
            temporary_overlay,
        })
    }

    /// QEMU's name for the drive (`ide0-hd0`, or `id=`).
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn kind(&self) -> DriveKind {
        self.spec.kind
    }

    pub fn slot(&self) -> DriveSlot {
        self.spec.slot
    }

    pub fn spec(&self) -> &DriveSpec {
        &self.spec
    }

    /// The medium, if one is inserted.
    pub fn node(&self) -> Option<Arc<BlockNode>> {
        self.node.read().unwrap().clone()
    }

    pub fn stats(&self) -> &BlockStats {
        &self.stats
    }

    /// Records which device uses the drive.
    pub fn attach(&self, device: &str) {
        *self.device.lock().unwrap() = Some(device.to_string());
    }

    pub fn device(&self) -> Option<String> {
        self.device.lock().unwrap().clone()
    }

    /// Whether `snapshot=on` redirected writes to a temporary overlay.
    pub fn has_temporary_overlay(&self) -> bool {
        self.temporary_overlay.is_some()
    }
}

/// `snapshot=on`: QEMU opens the image read-only below a fresh qcow2 overlay in the
/// temporary directory and deletes the overlay when done.
fn open_with_temporary_overlay(
    file: &std::path::Path,
    opts: &OpenOptions,
) -> BlockResult<(BlockNode, tempfile_path::TemporaryFile)> {
    let base = {
        let mut base_opts = opts.clone();
        base_opts.read_only = true;
        open_node(file, &base_opts)?
    };
    let size = base.virtual_size()?;
    let format = base.chain()[0].format();
    drop(base);
    let overlay = tempfile_path::TemporaryFile::new()
        .map_err(|e| BlockError::io("Could not get temporary filename", e))?;
    let absolute = std::fs::canonicalize(file).map_err(|source| BlockError::Open {
        path: file.to_path_buf(),
        source,
    })?;
    super::create_overlay(overlay.path(), &absolute.to_string_lossy(), format, size)?;
    let mut overlay_opts = opts.clone();
    overlay_opts.format = Some("qcow2".into());
    overlay_opts.read_only = false;
    let node = open_node(overlay.path(), &overlay_opts)?;
    Ok((node, overlay))
}

mod tempfile_path {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A file in `$TMPDIR` (default `/var/tmp`, as QEMU's `get_tmp_filename`) that is
    /// removed on drop.
    pub struct TemporaryFile(PathBuf);

    impl TemporaryFile {
        pub fn new() -> std::io::Result<TemporaryFile> {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp"));
            let path = dir.join(format!(
                "vl.vmscope.{}.{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            // Create it exclusively so a stale or hostile file of that name is never reused.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            Ok(TemporaryFile(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TemporaryFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// All drives of the VM, in command-line order.
#[derive(Default)]
pub struct DriveSet {
    drives: Vec<Arc<Drive>>,
}

impl DriveSet {
    pub fn new(drives: Vec<Arc<Drive>>) -> DriveSet {
        DriveSet { drives }
    }

    /// The drive named `id` (QEMU's `blk_by_name`).
    pub fn find(&self, id: &str) -> Option<&Arc<Drive>> {
        self.drives.iter().find(|d| d.id() == id)
    }

    /// The drive at an IDE position.
    pub fn ide(&self, bus: u32, unit: u32) -> Option<&Arc<Drive>> {
        self.drives
            .iter()
            .find(|d| d.slot() == DriveSlot::Ide { bus, unit })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Drive>> {
        self.drives.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.drives.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_image(bytes: &[u8]) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "vmscope-drive-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn spec(file: Option<PathBuf>, snapshot: bool) -> DriveSpec {
        DriveSpec {
            id: "ide0-hd0".into(),
            file,
            kind: DriveKind::Disk,
            slot: DriveSlot::Ide { bus: 0, unit: 0 },
            open: OpenOptions {
                format: Some("raw".into()),
                ..Default::default()
            },
            snapshot,
            device: None,
        }
    }

    #[test]
    fn snapshot_on_leaves_the_image_untouched_and_removes_the_overlay() {
        let image = raw_image(&[7u8; 65536]);
        let drive = Drive::open(spec(Some(image.clone()), true)).unwrap();
        let overlay = drive
            .temporary_overlay
            .as_ref()
            .unwrap()
            .path()
            .to_path_buf();
        let node = drive.node().unwrap();
        node.write_at(0, &[1u8; 512]).unwrap();
        let mut back = [0u8; 512];
        node.read_at(0, &mut back).unwrap();
        assert_eq!(back, [1u8; 512]);
        drop(node);
        drop(drive);
        assert!(!overlay.exists(), "temporary overlay must be deleted");
        assert_eq!(std::fs::read(&image).unwrap(), vec![7u8; 65536]);
        std::fs::remove_file(image).unwrap();
    }

    #[test]
    fn an_empty_cdrom_drive_has_no_medium() {
        let mut s = spec(None, false);
        s.kind = DriveKind::Cdrom;
        let drive = Drive::open(s).unwrap();
        assert!(drive.node().is_none());
    }

    #[test]
    fn stats_count_requests_and_the_highest_write() {
        let stats = BlockStats::default();
        assert_eq!(stats.idle_time_ns(), None);
        stats.record(IoKind::Write, 4096, 512, Duration::from_micros(3), true);
        stats.record(IoKind::Write, 0, 512, Duration::from_micros(3), true);
        stats.record(IoKind::Read, 0, 1024, Duration::from_micros(1), false);
        assert_eq!(stats.wr_operations.load(Ordering::Relaxed), 2);
        assert_eq!(stats.wr_highest_offset.load(Ordering::Relaxed), 4608);
        assert_eq!(stats.failed_rd_operations.load(Ordering::Relaxed), 1);
        assert!(stats.idle_time_ns().is_some());
    }

    #[test]
    fn drives_are_found_by_name_and_ide_position() {
        let image = raw_image(&[0u8; 4096]);
        let drive = Arc::new(Drive::open(spec(Some(image.clone()), false)).unwrap());
        let set = DriveSet::new(vec![drive]);
        assert!(set.find("ide0-hd0").is_some());
        assert!(set.find("ide0-hd1").is_none());
        assert!(set.ide(0, 0).is_some());
        assert!(set.ide(1, 0).is_none());
        std::fs::remove_file(image).unwrap();
    }
}
