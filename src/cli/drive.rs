//! `-drive` (and `-hda`...`-hdd`, `-cdrom`, `-fda`, `-fdb`, ...): QEMU 7.2's `drive_new()`
//! checks, in its order and with its messages, producing a typed [`DriveOptions`]. The
//! block layer is another issue's work: until it lands every drive is then refused as
//! "not supported yet", but only after it passed the checks QEMU makes.
//!
//! vmscope extends QEMU's keys with those of the Freezing Time fork (`hack`, `itime`).

use std::path::PathBuf;

use crate::block::drive::{DriveKind, DriveSlot, DriveSpec};
use crate::block::qemu_drivers::QEMU_FORMATS;

use super::error::{CliError, ErrorKind, Location};
use super::qemu_opts::{parse_bool, validate_value, OptType, Opts, OptsList, OptsStore};
use super::Console;

use OptType::{Bool, Number, Size, Str};

/// `-drive` accepts any key while the command line is read; `drive_new` checks them.
pub static DRIVE_OPTS: OptsList = OptsList {
    name: "drive",
    implied: None,
    merge: false,
    descs: &[],
};

/// Keys `drive_new` itself consumes (QEMU's `qemu_legacy_drive_opts`).
const LEGACY_KEYS: &[(&str, OptType)] = &[
    ("bus", Number),
    ("unit", Number),
    ("index", Number),
    ("media", Str),
    ("if", Str),
    ("file", Str),
    ("copy-on-read", Bool),
    ("werror", Str),
    ("rerror", Str),
    ("read-only", Bool),
];

/// Keys `blockdev_init` consumes (QEMU's `qemu_common_drive_opts`).
const COMMON_KEYS: &[(&str, OptType)] = &[
    ("snapshot", Bool),
    ("aio", Str),
    ("discard", Str),
    ("cache.writeback", Bool),
    ("cache.direct", Bool),
    ("cache.no-flush", Bool),
    ("format", Str),
    ("detect-zeroes", Str),
    ("throttling.iops-total", Number),
    ("throttling.iops-read", Number),
    ("throttling.iops-write", Number),
    ("throttling.bps-total", Number),
    ("throttling.bps-read", Number),
    ("throttling.bps-write", Number),
    ("throttling.iops-total-max", Number),
    ("throttling.iops-read-max", Number),
    ("throttling.iops-write-max", Number),
    ("throttling.bps-total-max", Number),
    ("throttling.bps-read-max", Number),
    ("throttling.bps-write-max", Number),
    ("throttling.iops-size", Number),
    ("throttling.group", Str),
    ("stats-account-invalid", Bool),
    ("stats-account-failed", Bool),
];

/// Keys every block node accepts (QEMU's `bdrv_runtime_opts`).
const NODE_KEYS: &[(&str, OptType)] = &[
    ("node-name", Str),
    ("driver", Str),
    ("auto-read-only", Bool),
    ("force-share", Bool),
];

/// Runtime options of the qcow2 driver.
const QCOW2_KEYS: &[(&str, OptType)] = &[
    ("lazy-refcounts", Bool),
    ("pass-discard-request", Bool),
    ("pass-discard-snapshot", Bool),
    ("pass-discard-other", Bool),
    ("overlap-check", Str),
    ("overlap-check.template", Str),
    ("overlap-check.main-header", Bool),
    ("overlap-check.active-l1", Bool),
    ("overlap-check.active-l2", Bool),
    ("overlap-check.refcount-table", Bool),
    ("overlap-check.refcount-block", Bool),
    ("overlap-check.snapshot-table", Bool),
    ("overlap-check.inactive-l1", Bool),
    ("overlap-check.inactive-l2", Bool),
    ("overlap-check.bitmap-directory", Bool),
    ("cache-size", Size),
    ("l2-cache-size", Size),
    ("l2-cache-entry-size", Size),
    ("refcount-cache-size", Size),
    ("cache-clean-interval", Number),
    ("encrypt.key-secret", Str),
];

/// Runtime options of the raw driver.
const RAW_KEYS: &[(&str, OptType)] = &[("offset", Size), ("size", Size)];

/// The Freezing Time fork's keys (see `spec/freezing-time.md`): free-form strings in the
/// fork, which only acts on the literal `on`.
const FREEZING_TIME_KEYS: &[(&str, OptType)] = &[("hack", Str), ("itime", Str)];

/// Drivers of QEMU 7.2 that need no `file` child.
const PROTOCOL_DRIVERS: &[&str] = &[
    "file",
    "host_device",
    "host_cdrom",
    "ftp",
    "ftps",
    "http",
    "https",
    "gluster",
    "iscsi",
    "iser",
    "nbd",
    "nfs",
    "null-aio",
    "null-co",
    "nvme",
    "rbd",
    "ssh",
    "vvfat",
    "quorum",
    "replication",
    "snapshot-access",
];

/// The formats vmscope's block layer is built for.
const VMSCOPE_FORMATS: &[&str] = &["raw", "qcow2"];

/// `if=`: the controller a drive is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveInterface {
    None,
    Ide,
    Scsi,
    Floppy,
    Pflash,
    Mtd,
    Sd,
    Virtio,
    Xen,
}

impl DriveInterface {
    const ALL: [(&'static str, DriveInterface); 9] = [
        ("none", DriveInterface::None),
        ("ide", DriveInterface::Ide),
        ("scsi", DriveInterface::Scsi),
        ("floppy", DriveInterface::Floppy),
        ("pflash", DriveInterface::Pflash),
        ("mtd", DriveInterface::Mtd),
        ("sd", DriveInterface::Sd),
        ("virtio", DriveInterface::Virtio),
        ("xen", DriveInterface::Xen),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, i)| *i == self)
            .map(|(n, _)| *n)
            .unwrap_or("none")
    }

    /// QEMU's `if_max_devs`: units per bus (0: unlimited).
    fn max_devs(self) -> u32 {
        match self {
            DriveInterface::Ide => 2,
            DriveInterface::Scsi => 7,
            _ => 0,
        }
    }
}

/// `media=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveMedia {
    Disk,
    Cdrom,
}

/// One `-drive`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveOptions {
    /// `id=`, or QEMU's generated name (`ide0-hd0`, `virtio0`, ...).
    pub id: String,
    pub file: Option<PathBuf>,
    /// `format=` (or `driver=`); `None` means probe.
    pub format: Option<String>,
    pub interface: DriveInterface,
    pub media: DriveMedia,
    pub bus: u32,
    pub unit: u32,
    /// `cache=` expanded: (writeback, direct, no-flush).
    pub cache_writeback: bool,
    pub cache_direct: bool,
    pub cache_no_flush: bool,
    pub read_only: bool,
    pub snapshot: bool,
    pub copy_on_read: bool,
    pub aio: Option<String>,
    pub discard: Option<String>,
    pub detect_zeroes: Option<String>,
    pub werror: Option<String>,
    pub rerror: Option<String>,
    pub l2_cache_size: Option<u64>,
    pub l2_cache_entry_size: Option<u64>,
    pub refcount_cache_size: Option<u64>,
    pub cache_size: Option<u64>,
    pub cache_clean_interval: Option<u64>,
    /// Freezing Time: `hack=on` pauses the VM around each request batch.
    pub freezing_time_hack: bool,
    /// Freezing Time: `itime=on` injects the configured latency (with `hack=on`).
    pub freezing_time_itime: bool,
    /// Every other key (`file.driver=...`, throttling, overlap checks...), in order.
    pub other: Vec<(String, String)>,
}

/// The option `-hda` etc. stand for: (if, index, media).
fn shorthand(option: &str) -> (Option<&'static str>, Option<u32>, &'static str) {
    match option {
        "hda" => (None, Some(0), "media=disk"),
        "hdb" => (None, Some(1), "media=disk"),
        "hdc" => (None, Some(2), "media=disk"),
        "hdd" => (None, Some(3), "media=disk"),
        "cdrom" => (None, Some(2), "media=cdrom"),
        "fda" => (Some("floppy"), Some(0), ""),
        "fdb" => (Some("floppy"), Some(1), ""),
        "sd" => (Some("sd"), None, ""),
        "pflash" => (Some("pflash"), None, ""),
        _ => (Some("mtd"), None, ""),
    }
}

/// QEMU's `drive_add` for `-hda FILE` and friends.
pub fn drive_add(
    store: &mut OptsStore,
    option: &str,
    file: &str,
    location: &Location,
    console: &mut Console,
) -> Result<(), CliError> {
    let (interface, index, optstr) = shorthand(option);
    let i = match store.parse_noisily(optstr, false, location, console) {
        Ok(super::qemu_opts::Parsed::Opts(i)) => i,
        Ok(super::qemu_opts::Parsed::HelpWanted) => return Ok(()),
        Err(e) => return Err(CliError::at(location, e)),
    };
    let opts = &mut store.entries[i];
    if let Some(interface) = interface {
        opts.set("if", interface);
    }
    if let Some(index) = index {
        opts.set("index", &index.to_string());
    }
    opts.set("file", file);
    Ok(())
}

/// The outcome of checking one drive.
pub enum DriveCheck {
    Valid(Box<DriveOptions>),
    /// `format=help` was printed; QEMU then fails the drive without a message.
    HelpPrinted,
}

/// Drives already placed, to find free units and collisions (`drive_get`).
#[derive(Default)]
pub struct DriveTable {
    placed: Vec<(DriveInterface, u32, u32)>,
    ids: Vec<String>,
}

/// Keys with their own [`DriveOptions`] field; the rest go to `other`.
const TYPED_KEYS: &[&str] = &[
    "bus",
    "unit",
    "index",
    "media",
    "if",
    "file",
    "copy-on-read",
    "werror",
    "rerror",
    "read-only",
    "snapshot",
    "aio",
    "discard",
    "cache.writeback",
    "cache.direct",
    "cache.no-flush",
    "format",
    "driver",
    "detect-zeroes",
    "l2-cache-size",
    "l2-cache-entry-size",
    "refcount-cache-size",
    "cache-size",
    "cache-clean-interval",
    "hack",
    "itime",
];

/// Keys the named format accepts beyond the generic ones.
fn format_keys(format: &str) -> &'static [(&'static str, OptType)] {
    match format {
        "qcow2" => QCOW2_KEYS,
        "raw" => RAW_KEYS,
        _ => &[],
    }
}

/// `bdrv_parse_cache_mode`: (writeback, direct, no-flush).
fn cache_mode(mode: &str) -> Option<(bool, bool, bool)> {
    match mode {
        "off" | "none" => Some((true, true, false)),
        "directsync" => Some((false, true, false)),
        "writeback" => Some((true, false, false)),
        "unsafe" => Some((true, false, true)),
        "writethrough" => Some((false, false, false)),
        _ => None,
    }
}

/// The C library's text for an errno (what QEMU prints after "Could not open").
fn os_error_text(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The format QEMU's probing would pick: qcow2 by its magic, otherwise raw.
fn probe_format(path: &str) -> &'static str {
    use std::io::Read;
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) if magic == *b"QFI\xfb" => "qcow2",
        _ => "raw",
    }
}

impl DriveTable {
    fn get(&self, interface: DriveInterface, bus: u32, unit: u32) -> bool {
        self.placed.contains(&(interface, bus, unit))
    }

    /// QEMU's `drive_new` up to opening the image.
    pub fn check(&mut self, opts: &Opts, console: &mut Console) -> Result<DriveCheck, CliError> {
        let at = |kind| CliError::at(&opts.location, kind);
        let msg = |text: String| CliError::at(&opts.location, ErrorKind::message(text));
        // Legacy spellings (`readonly`, `iops`, ...) and the last value of each key.
        let mut items: Vec<(String, String)> = Vec::new();
        for (key, value) in opts.items() {
            let key = match key {
                "readonly" => "read-only".to_string(),
                "iops" => "throttling.iops-total".into(),
                "iops_rd" => "throttling.iops-read".into(),
                "iops_wr" => "throttling.iops-write".into(),
                "bps" => "throttling.bps-total".into(),
                "bps_rd" => "throttling.bps-read".into(),
                "bps_wr" => "throttling.bps-write".into(),
                "iops_max" => "throttling.iops-total-max".into(),
                "iops_rd_max" => "throttling.iops-read-max".into(),
                "iops_wr_max" => "throttling.iops-write-max".into(),
                "bps_max" => "throttling.bps-total-max".into(),
                "bps_rd_max" => "throttling.bps-read-max".into(),
                "bps_wr_max" => "throttling.bps-write-max".into(),
                "iops_size" => "throttling.iops-size".into(),
                "group" => "throttling.group".into(),
                other => other.to_string(),
            };
            items.retain(|(k, _)| *k != key);
            items.push((key, value.to_string()));
        }
        let get = |key: &str| -> Option<String> {
            items.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };

        let mut cache = (true, false, false);
        if let Some(mode) = get("cache") {
            cache = cache_mode(&mode).ok_or_else(|| msg("invalid cache option".into()))?;
        }
        items.retain(|(k, _)| k != "cache");
        let get = |key: &str| -> Option<String> {
            items.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };
        // Typed legacy keys are checked as QEMU absorbs them.
        for (key, ty) in LEGACY_KEYS {
            if let Some(value) = get(key) {
                validate_value(key, *ty, &value).map_err(at)?;
            }
        }
        let flag = |key: &str, default: bool| -> bool {
            get(key)
                .and_then(|v| parse_bool(&v).ok())
                .unwrap_or(default)
        };
        let number = |key: &str| -> Option<u64> {
            get(key).and_then(|v| super::numbers::strtou64(&v, 0).ok())
        };

        let media = match get("media").as_deref() {
            None | Some("disk") => DriveMedia::Disk,
            Some("cdrom") => DriveMedia::Cdrom,
            Some(other) => return Err(msg(format!("'{other}' invalid media"))),
        };
        let read_only = media == DriveMedia::Cdrom || flag("read-only", false);
        let mut copy_on_read = flag("copy-on-read", false);
        if read_only && copy_on_read {
            console.warn(super::error::Warning::new(
                &opts.location,
                "disabling copy-on-read on read-only drive",
            ));
            copy_on_read = false;
        }

        let interface = match get("if") {
            None => DriveInterface::Ide,
            Some(name) => DriveInterface::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, i)| *i)
                .ok_or_else(|| msg(format!("unsupported bus type '{name}'")))?,
        };
        // C ints: QEMU reads these as int, -1 meaning "not given".
        let mut bus = number("bus").unwrap_or(0) as i32;
        let mut unit = number("unit").map(|u| u as i32).unwrap_or(-1);
        let index = number("index").map(|i| i as i32).unwrap_or(-1);
        let max_devs = interface.max_devs() as i32;
        if index != -1 {
            if bus != 0 || unit != -1 {
                return Err(msg("index cannot be used with bus and unit".into()));
            }
            if max_devs == 0 {
                bus = 0;
                unit = index;
            } else {
                bus = index / max_devs;
                unit = index % max_devs;
            }
        }
        if unit == -1 {
            unit = 0;
            while self.get(interface, bus as u32, unit as u32) {
                unit += 1;
                if max_devs != 0 && unit >= max_devs {
                    unit -= max_devs;
                    bus += 1;
                }
            }
        }
        if max_devs != 0 && unit >= max_devs {
            return Err(msg(format!(
                "unit {unit} too big (max is {})",
                max_devs - 1
            )));
        }
        if self.get(interface, bus as u32, unit as u32) {
            return Err(msg(format!(
                "drive with bus={bus}, unit={unit} (index={index}) exists"
            )));
        }
        let id = match &opts.id {
            Some(id) => id.clone(),
            None => {
                let media_name = match (interface, media) {
                    (DriveInterface::Ide | DriveInterface::Scsi, DriveMedia::Cdrom) => "-cd",
                    (DriveInterface::Ide | DriveInterface::Scsi, DriveMedia::Disk) => "-hd",
                    _ => "",
                };
                if max_devs != 0 {
                    format!("{}{bus}{media_name}{unit}", interface.name())
                } else {
                    format!("{}{media_name}{unit}", interface.name())
                }
            }
        };
        let error_buses = [
            DriveInterface::Ide,
            DriveInterface::Scsi,
            DriveInterface::Virtio,
            DriveInterface::None,
        ];
        if get("werror").is_some() && !error_buses.contains(&interface) {
            return Err(msg("werror is not supported by this bus type".into()));
        }
        if get("rerror").is_some() && !error_buses.contains(&interface) {
            return Err(msg("rerror is not supported by this bus type".into()));
        }

        // blockdev_init: the common options.
        if self.ids.contains(&id) {
            return Err(at(ErrorKind::DuplicateId {
                id,
                group: "drive".into(),
            }));
        }
        for (key, ty) in COMMON_KEYS {
            if let Some(value) = get(key) {
                validate_value(key, *ty, &value).map_err(at)?;
            }
        }
        if let Some(aio) = get("aio") {
            if !matches!(aio.as_str(), "threads" | "native" | "io_uring") {
                return Err(msg("invalid aio option".into()));
            }
        }
        if let Some(discard) = get("discard") {
            if !matches!(discard.as_str(), "ignore" | "off" | "unmap" | "on") {
                return Err(msg("Invalid discard option".into()));
            }
        }
        if let Some(dz) = get("detect-zeroes") {
            if !matches!(dz.as_str(), "off" | "on" | "unmap") {
                return Err(msg(format!("invalid parameter value: {dz}")));
            }
        }
        let mut format = get("format");
        if let Some(f) = &format {
            if f == "help" || f == "?" {
                let list = QEMU_FORMATS.join(" ");
                console.print(&format!(
                    "Supported formats: {list}\nSupported formats (read-only): {list}\n"
                ));
                return Ok(DriveCheck::HelpPrinted);
            }
            if get("driver").is_some() {
                return Err(msg("Cannot specify both 'driver' and 'format'".into()));
            }
        }
        if let Some(werror) = get("werror") {
            if !matches!(werror.as_str(), "ignore" | "report" | "stop" | "enospc") {
                return Err(msg(format!("'{werror}' invalid write error action")));
            }
        }
        if let Some(rerror) = get("rerror") {
            if !matches!(rerror.as_str(), "ignore" | "report" | "stop") {
                return Err(msg(format!("'{rerror}' invalid read error action")));
            }
        }
        if format.is_none() {
            format = get("driver");
        }

        // Opening: file and format, then the format's own options.
        let file = get("file").filter(|f| !f.is_empty());
        let extra_keys: Vec<&(String, String)> = items
            .iter()
            .filter(|(k, _)| {
                !LEGACY_KEYS.iter().any(|(n, _)| n == k) && !COMMON_KEYS.iter().any(|(n, _)| n == k)
            })
            .collect();
        let nested_file = items.iter().any(|(k, _)| k.starts_with("file."));
        if file.is_none() && format.is_none() && !nested_file && !extra_keys.is_empty() {
            return Err(msg("Must specify either driver or file".into()));
        }
        if let Some(f) = &format {
            if !QEMU_FORMATS.contains(&f.as_str()) {
                return Err(msg(format!("Unknown driver '{f}'")));
            }
            // Image formats sit on a protocol node given by `file`.
            if file.is_none() && !nested_file && !PROTOCOL_DRIVERS.contains(&f.as_str()) {
                return Err(msg("A block device must be specified for \"file\"".into()));
            }
        }
        if let Some(node_name) = get("node-name") {
            if !super::qemu_opts::id_wellformed(&node_name) {
                return Err(msg(format!("Invalid node-name: '{node_name}'")));
            }
        }
        if let Some(path) = &file {
            if format.as_deref() != Some("file") && !path.contains(':') {
                if let Err(e) = std::fs::File::open(path) {
                    return Err(msg(format!(
                        "Could not open '{path}': {}",
                        os_error_text(&e)
                    )));
                }
            }
        }
        let effective_format = match (&format, &file) {
            (Some(f), _) => f.clone(),
            (None, Some(path)) => probe_format(path).to_string(),
            (None, None) => String::new(),
        };
        // With only a nested `file.*` spec the format is found by opening it; vmscope
        // leaves those keys to the block layer.
        let format_known = file.is_some() || format.is_some();
        for (key, value) in &extra_keys {
            let nested = key.starts_with("file.")
                || key.starts_with("backing.")
                || key.starts_with("data-file.");
            let accepted = NODE_KEYS
                .iter()
                .chain(FREEZING_TIME_KEYS)
                .chain(format_keys(&effective_format))
                .find(|(n, _)| n == key);
            match accepted {
                Some((_, ty)) => validate_value(key, *ty, value).map_err(at)?,
                None if nested || !format_known => {}
                None => {
                    return Err(msg(format!(
                        "Block format '{effective_format}' does not support the option '{key}'"
                    )))
                }
            }
        }
        let other: Vec<(String, String)> = items
            .iter()
            .filter(|(k, _)| !TYPED_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();

        self.placed.push((interface, bus as u32, unit as u32));
        self.ids.push(id.clone());
        let size =
            |key: &str| get(key).and_then(|v| super::numbers::strtosz(&v).ok().map(|s| s.bytes));
        Ok(DriveCheck::Valid(Box::new(DriveOptions {
            id,
            file: file.map(PathBuf::from),
            format,
            interface,
            media,
            bus: bus as u32,
            unit: unit as u32,
            cache_writeback: flag("cache.writeback", cache.0),
            cache_direct: flag("cache.direct", cache.1),
            cache_no_flush: flag("cache.no-flush", cache.2),
            read_only,
            snapshot: flag("snapshot", false),
            copy_on_read,
            aio: get("aio"),
            discard: get("discard"),
            detect_zeroes: get("detect-zeroes"),
            werror: get("werror"),
            rerror: get("rerror"),
            l2_cache_size: size("l2-cache-size"),
            l2_cache_entry_size: size("l2-cache-entry-size"),
            refcount_cache_size: size("refcount-cache-size"),
            cache_size: size("cache-size"),
            cache_clean_interval: number("cache-clean-interval"),
            freezing_time_hack: get("hack").as_deref() == Some("on"),
            freezing_time_itime: get("itime").as_deref() == Some("on"),
            other,
        })))
    }
}

/// The block layer's description of a valid drive, or what vmscope lacks to run it (the
/// text of the "not supported yet" refusal).
pub fn to_spec(drive: &DriveOptions) -> Result<DriveSpec, String> {
    use crate::block::{AioMode, CacheMode, DetectZeroes, OpenOptions, Qcow2CacheOptions};
    if let Some(f) = &drive.format {
        if !VMSCOPE_FORMATS.contains(&f.as_str()) {
            return Err(format!("block devices; format '{f}'"));
        }
    }
    if drive.freezing_time_hack || drive.freezing_time_itime {
        return Err("Freezing Time (-drive hack=on,itime=on)".into());
    }
    let slot = match drive.interface {
        DriveInterface::None => DriveSlot::Unattached,
        DriveInterface::Ide => DriveSlot::Ide {
            bus: drive.bus,
            unit: drive.unit,
        },
        other => return Err(format!("drives with if={}", other.name())),
    };
    if drive.file.is_none() && drive.media == DriveMedia::Disk {
        return Err("drives without a medium (no file=)".into());
    }
    if drive.copy_on_read {
        return Err("copy-on-read=on".into());
    }
    for (key, value) in [("werror", &drive.werror), ("rerror", &drive.rerror)] {
        if let Some(value) = value {
            if value != "report" {
                return Err(format!("{key}={value}"));
            }
        }
    }
    let mut node_name = None;
    let mut auto_read_only = false;
    for (key, value) in &drive.other {
        match key.as_str() {
            "node-name" => node_name = Some(value.clone()),
            "auto-read-only" => auto_read_only = value == "on",
            _ => return Err(format!("-drive option '{key}'")),
        }
    }
    let cache = match (
        drive.cache_writeback,
        drive.cache_direct,
        drive.cache_no_flush,
    ) {
        (true, false, false) => CacheMode::Writeback,
        (false, false, false) => CacheMode::Writethrough,
        (true, true, false) => CacheMode::None,
        (false, true, false) => CacheMode::Directsync,
        (true, false, true) => CacheMode::Unsafe,
        (wb, direct, no_flush) => {
            return Err(format!(
                "cache.writeback={} with cache.direct={} and cache.no-flush={}",
                on_off(wb),
                on_off(direct),
                on_off(no_flush)
            ))
        }
    };
    let aio = match &drive.aio {
        Some(a) => AioMode::parse(a).map_err(|e| e.to_string())?,
        None => AioMode::Threads,
    };
    let discard_unmap = matches!(drive.discard.as_deref(), Some("unmap" | "on"));
    let detect_zeroes = match &drive.detect_zeroes {
        Some(d) => DetectZeroes::parse(d, discard_unmap).map_err(|e| e.to_string())?,
        None => DetectZeroes::Off,
    };
    Ok(DriveSpec {
        id: drive.id.clone(),
        file: drive.file.clone(),
        kind: match drive.media {
            DriveMedia::Disk => DriveKind::Disk,
            DriveMedia::Cdrom => DriveKind::Cdrom,
        },
        slot,
        open: OpenOptions {
            // A CD-ROM is read-only whatever the options say (QEMU's ide-cd).
            read_only: drive.read_only || drive.media == DriveMedia::Cdrom,
            auto_read_only,
            cache,
            aio,
            format: drive.format.clone(),
            node_name,
            detect_zeroes,
            qcow2_cache: Qcow2CacheOptions {
                l2_cache_size: drive.l2_cache_size,
                l2_cache_entry_size: drive.l2_cache_entry_size,
                refcount_cache_size: drive.refcount_cache_size,
                cache_size: drive.cache_size,
                cache_clean_interval: drive.cache_clean_interval,
            },
            ..Default::default()
        },
        snapshot: drive.snapshot,
        device: None,
    })
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all(args: &[&str]) -> Result<Vec<DriveOptions>, String> {
        let mut store = OptsStore::new(&DRIVE_OPTS);
        let mut console = Console::capture("q");
        for a in args {
            let loc = Location::words(["-drive", a]);
            store
                .parse_noisily(a, false, &loc, &mut console)
                .map_err(|e| e.to_string())?;
        }
        let mut table = DriveTable::default();
        let mut out = Vec::new();
        for opts in &store.entries {
            match table.check(opts, &mut console).map_err(|e| e.to_string())? {
                DriveCheck::Valid(d) => out.push(*d),
                DriveCheck::HelpPrinted => {}
            }
        }
        Ok(out)
    }

    fn image() -> tempfile_path::TempImage {
        tempfile_path::TempImage::new(b"QFI\xfb\0\0\0\x03")
    }

    /// A small self-cleaning image file for these tests.
    mod tempfile_path {
        pub struct TempImage(pub std::path::PathBuf);
        impl TempImage {
            pub fn new(contents: &[u8]) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "vmscope-cli-drive-{}-{}.img",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, contents).unwrap();
                TempImage(path)
            }
            pub fn path(&self) -> &str {
                self.0.to_str().unwrap()
            }
        }
        impl Drop for TempImage {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn launch_vm_drive_is_ide0_hd0_with_cache_none() {
        let img = image();
        let d = check_all(&[&format!("format=qcow2,file={},cache=none", img.path())]).unwrap();
        assert_eq!(d[0].id, "ide0-hd0");
        assert_eq!(d[0].interface, DriveInterface::Ide);
        assert_eq!(d[0].format.as_deref(), Some("qcow2"));
        assert!(d[0].cache_direct && d[0].cache_writeback && !d[0].cache_no_flush);
    }

    #[test]
    fn freezing_time_and_cache_keys() {
        let img = image();
        let d = check_all(&[&format!(
            "file={},format=raw,if=none,id=drive0,cache=none,aio=native,hack=on,itime=on",
            img.path()
        )])
        .unwrap();
        assert_eq!(d[0].id, "drive0");
        assert!(d[0].freezing_time_hack && d[0].freezing_time_itime);
        assert_eq!(d[0].aio.as_deref(), Some("native"));
        let d = check_all(&[&format!(
            "file={},format=qcow2,cache=none,l2-cache-size=1792K,l2-cache-entry-size=512",
            img.path()
        )])
        .unwrap();
        assert_eq!(d[0].l2_cache_size, Some(1792 << 10));
        assert_eq!(d[0].l2_cache_entry_size, Some(512));
    }

    #[test]
    fn qemu_errors() {
        let img = image();
        let p = img.path();
        let e = |a: &str| check_all(&[a]).unwrap_err();
        assert_eq!(
            e("foo=bar"),
            "-drive foo=bar: Must specify either driver or file"
        );
        assert_eq!(
            e(&format!("file={p},format=qcow2,foo=bar")),
            format!("-drive file={p},format=qcow2,foo=bar: Block format 'qcow2' does not support the option 'foo'")
        );
        assert_eq!(
            e(&format!("file={p},foo=bar")),
            format!(
                "-drive file={p},foo=bar: Block format 'qcow2' does not support the option 'foo'"
            )
        );
        assert!(e(&format!("file={p},format=qcow2,l2-cache-size=")).contains(
            "Parameter 'l2-cache-size' expects a non-negative number below 2^64\nOptional suffix"
        ));
        assert!(e(&format!("file={p},if=bogus")).ends_with("unsupported bus type 'bogus'"));
        assert!(e(&format!("file={p},cache=bogus")).ends_with("invalid cache option"));
        assert!(e(&format!("file={p},media=tape")).ends_with("'tape' invalid media"));
        assert!(e(&format!("file={p},if=ide,unit=5")).ends_with("unit 5 too big (max is 1)"));
        assert!(e(&format!("file={p},format=bogus")).ends_with("Unknown driver 'bogus'"));
        assert!(e("file=/nonexistent/x.img")
            .ends_with("Could not open '/nonexistent/x.img': No such file or directory"));
        assert!(e(&format!("file={p},readonly=maybe"))
            .ends_with("Parameter 'read-only' expects 'on' or 'off'"));
        assert!(e(&format!("file={p},driver=qcow2,format=qcow2"))
            .ends_with("Cannot specify both 'driver' and 'format'"));
    }

    #[test]
    fn second_ide_drive_takes_the_next_unit() {
        let img = image();
        let a = format!("file={},format=qcow2", img.path());
        let d = check_all(&[&a, &a, &a]).unwrap();
        let ids: Vec<_> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["ide0-hd0", "ide0-hd1", "ide1-hd0"]);
    }

    #[test]
    fn libguestfs_drives() {
        let img = image();
        let p = img.path();
        let d = check_all(&[
            &format!("file={p},cache=writeback,id=hd0,if=none"),
            &format!("file={p},snapshot=on,id=appliance,cache=unsafe,if=none,format=raw"),
            &format!("file.file.filename={p},file.driver=qcow2,file.backing.file.locking=off,cache=unsafe,id=hd1,if=none"),
        ])
        .unwrap();
        assert_eq!(d[1].id, "appliance");
        assert!(d[1].snapshot && d[1].cache_no_flush);
        assert_eq!(
            d[2].other[0],
            ("file.file.filename".to_string(), p.to_string())
        );
    }
}
