//! SeaBIOS end to end on IDE disks and an ATAPI CD: the `diskprobe` boot program of
//! `tests/guest/boot/` boots from each medium and drives the BIOS disk services (int 13h
//! AH=41/08/48 queries, AH=02/03 CHS and AH=42/43 LBA reads and writes spread over the whole
//! disk, requests the BIOS must refuse), printing results and checksums on COM1.
//!
//! Per medium there are two tests, as in `scenarios.rs`:
//! - `<case>::qemu` boots QEMU 7.2 (`-accel tcg`) and checks its lines against the golden
//!   transcript `tests/guest/golden/boot_<case>.txt` (`VMSCOPE_BLESS=1` rewrites it), that
//!   qcow2 images still pass `qemu-img check`, and that a backing file was not written.
//! - `<case>::vmscope` boots QEMU and vmscope, each on its own copy of the medium, and
//!   requires the same lines, the same exit status, and disks with the same content
//!   afterwards (`qemu-img compare`). It needs /dev/kvm (skips visibly without).
//!
//! Both machines get `-nographic -nodefaults -serial stdio` and the medium as QEMU's users
//! give it: `-drive file=F,format=raw|qcow2` (IDE is the default interface on `pc`), or
//! `-cdrom F -boot d`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::boot_disk::{self, boot_lines};
use common::machine_run::{self, RunResult};
use common::{kvm, qemu};

const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// SeaBIOS alone takes a few seconds on vmscope here (guest code is emulated).
const VMSCOPE_TIMEOUT: Duration = Duration::from_secs(180);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(Clone, Copy)]
enum Medium {
    /// A raw disk of this many bytes.
    Raw(u64),
    /// A standalone qcow2 disk.
    Qcow2(u64),
    /// An empty qcow2 overlay over a raw disk that carries the data.
    Qcow2OverRaw(u64),
    /// An empty qcow2 overlay over a qcow2 disk that carries the data.
    Qcow2OverQcow2(u64),
    /// A bootable ISO of this many 2048-byte blocks on the ATAPI CD-ROM.
    Cdrom(u32),
}

/// One copy of a medium, ready to boot.
struct Prepared {
    /// The image the machine opens.
    top: PathBuf,
    format: &'static str,
    /// The backing file and its format, which the guest's writes must not reach.
    backing: Option<(PathBuf, &'static str)>,
    args: Vec<String>,
}

impl Medium {
    /// A fresh copy to compare a backing file with after the run, for media that have one.
    fn pristine(self, tmp: &TempDir) -> Option<Prepared> {
        match self {
            Medium::Qcow2OverRaw(_) | Medium::Qcow2OverQcow2(_) => {
                Some(self.prepare(&tmp.sub("pristine")))
            }
            _ => None,
        }
    }

    /// Creates the medium in `dir` (which must exist).
    fn prepare(self, dir: &Path) -> Prepared {
        let raw = dir.join("disk.raw");
        let qcow2 = dir.join("disk.qcow2");
        let overlay = dir.join("overlay.qcow2");
        let (top, format, backing) = match self {
            Medium::Raw(size) => {
                boot_disk::write_raw_disk(&raw, size);
                (raw, "raw", None)
            }
            Medium::Qcow2(size) => {
                boot_disk::write_raw_disk(&raw, size);
                boot_disk::convert_to_qcow2(&raw, &qcow2);
                std::fs::remove_file(&raw).unwrap();
                (qcow2, "qcow2", None)
            }
            Medium::Qcow2OverRaw(size) => {
                boot_disk::write_raw_disk(&raw, size);
                boot_disk::create_overlay(&overlay, &raw, "raw");
                (overlay, "qcow2", Some((raw, "raw")))
            }
            Medium::Qcow2OverQcow2(size) => {
                boot_disk::write_raw_disk(&raw, size);
                boot_disk::convert_to_qcow2(&raw, &qcow2);
                std::fs::remove_file(&raw).unwrap();
                boot_disk::create_overlay(&overlay, &qcow2, "qcow2");
                (overlay, "qcow2", Some((qcow2, "qcow2")))
            }
            Medium::Cdrom(blocks) => {
                let iso = dir.join("cd.iso");
                boot_disk::write_iso(&iso, blocks);
                (iso, "raw", None)
            }
        };
        let mut args: Vec<String> = ["-nographic", "-nodefaults", "-serial", "stdio"]
            .map(String::from)
            .into();
        match self {
            Medium::Cdrom(_) => args.extend([
                "-cdrom".into(),
                top.display().to_string(),
                "-boot".into(),
                "d".into(),
            ]),
            _ => args.extend([
                "-drive".into(),
                format!("file={},format={format}", top.display()),
            ]),
        }
        Prepared {
            top,
            format,
            backing,
            args,
        }
    }
}

/// A scratch directory per test (the `qemu` and `vmscope` tests of a case run at the same
/// time in one process, so the name carries the test's kind).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("vmscope-ide-boot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn sub(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guest/golden")
        .join(format!("boot_{name}.txt"))
}

fn run_qemu(disk: &Prepared) -> RunResult {
    let mut args = vec!["-accel".to_owned(), qemu::accel()];
    args.extend(disk.args.iter().cloned());
    machine_run::run(qemu::binary(), &args, None, QEMU_TIMEOUT)
}

fn run_vmscope(disk: &Prepared) -> RunResult {
    let vmscope = PathBuf::from(env!("CARGO_BIN_EXE_vmscope"));
    machine_run::run(&vmscope, &disk.args, None, VMSCOPE_TIMEOUT)
}

/// The checks every run's disk must pass: qcow2 still consistent, backing file untouched
/// (compared with a fresh copy of the medium made in `pristine`).
fn check_disk_after(disk: &Prepared, pristine: Option<&Prepared>, who: &str) {
    if disk.format == "qcow2" {
        boot_disk::check_qcow2(&disk.top);
    }
    let fresh_backing = pristine.and_then(|p| p.backing.as_ref());
    if let (Some((backing, format)), Some((fresh, _))) = (&disk.backing, fresh_backing) {
        if let Err(report) = boot_disk::compare_images(backing, fresh, format) {
            panic!(
                "{who} wrote to the backing file {}: {report}",
                backing.display()
            );
        }
    }
}

fn qemu_lines(run: &RunResult) -> Vec<String> {
    assert_eq!(
        run.exit(),
        Ok(0),
        "QEMU did not finish the boot program\n{}",
        run.describe()
    );
    boot_lines(&run.stdout)
}

fn check_qemu(name: &str, medium: Medium) {
    let tmp = TempDir::new(&format!("{name}-qemu"));
    let disk = medium.prepare(&tmp.sub("qemu"));
    let pristine = medium.pristine(&tmp);
    let run = run_qemu(&disk);
    let lines = qemu_lines(&run);
    check_disk_after(&disk, pristine.as_ref(), "QEMU");
    let mut text = lines.join("\n");
    text.push('\n');
    let path = golden_path(name);
    if std::env::var_os("VMSCOPE_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (VMSCOPE_BLESS=1 writes it from QEMU's output)",
            path.display()
        )
    });
    assert!(
        text == golden,
        "QEMU's boot program lines differ from {}\n--- golden ---\n{golden}--- QEMU ---\n{text}\n{}",
        path.display(),
        run.describe()
    );
}

fn check_vmscope(name: &str, medium: Medium) {
    let test = format!("ide_boot::{name}::vmscope");
    if !kvm::require(&test) {
        return;
    }
    let tmp = TempDir::new(&format!("{name}-vmscope"));
    let qemu_disk = medium.prepare(&tmp.sub("qemu"));
    let vmscope_disk = medium.prepare(&tmp.sub("vmscope"));
    let pristine = medium.pristine(&tmp);
    let qemu_run = run_qemu(&qemu_disk);
    let expected = qemu_lines(&qemu_run);
    let run = run_vmscope(&vmscope_disk);
    let lines = boot_lines(&run.stdout);
    assert!(
        lines == expected && run.exit() == qemu_run.exit(),
        "vmscope differs from QEMU 7.2\n{}\n=== vmscope ===\n{}\n=== QEMU ===\n{}",
        line_diff(&expected, &lines),
        run.describe(),
        qemu_run.describe()
    );
    check_disk_after(&vmscope_disk, pristine.as_ref(), "vmscope");
    if let Err(report) =
        boot_disk::compare_images(&qemu_disk.top, &vmscope_disk.top, qemu_disk.format)
    {
        panic!("the disks differ after the run (QEMU's, vmscope's): {report}");
    }
    kvm::record_use(&test);
}

/// The lines side by side, marking the first difference.
fn line_diff(qemu: &[String], vmscope: &[String]) -> String {
    let mut out = String::from("boot program lines (QEMU | vmscope):\n");
    let mut marked = false;
    for i in 0..qemu.len().max(vmscope.len()) {
        let q = qemu.get(i).map_or("<none>", String::as_str);
        let v = vmscope.get(i).map_or("<none>", String::as_str);
        let mark = if q != v && !marked {
            marked = true;
            ">>"
        } else {
            "  "
        };
        out.push_str(&format!("{mark} {q:<70} | {v}\n"));
    }
    out
}

macro_rules! boot_tests {
    ($($name:ident => $medium:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[test]
                fn qemu() {
                    check_qemu(stringify!($name), $medium);
                }

                #[test]
                fn vmscope() {
                    check_vmscope(stringify!($name), $medium);
                }
            }
        )*
    };
}

boot_tests! {
    // Within CHS reach: SeaBIOS uses the disk's own geometry (130/16/63).
    raw_64m => Medium::Raw(64 * MIB);
    // Beyond 528 MB: SeaBIOS translates the geometry (LBA translation).
    qcow2_1g => Medium::Qcow2(GIB);
    qcow2_over_raw_256m => Medium::Qcow2OverRaw(256 * MIB);
    // Beyond 2^28 sectors: the upper probe points need 48-bit commands.
    qcow2_over_qcow2_160g => Medium::Qcow2OverQcow2(160 * GIB);
    // 4 MiB ISO, El Torito no-emulation boot; reads in 2048-byte blocks, writes refused.
    cdrom => Medium::Cdrom(2048);
}
