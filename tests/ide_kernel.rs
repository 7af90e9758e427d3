//! The test kernel's IDE scenarios (`ide-probe`, `ide-pio`, `ide-dma`, `ide-48bit`, `ide-errors`,
//! `atapi`, `ide-dma-bench`) on QEMU 7.2 and vmscope: the kernel drives the PIIX IDE function directly (PIO,
//! bus-master DMA, ATAPI packets, hostile requests) and prints identity words, register
//! values and checksums. As in `scenarios.rs`, per case:
//! - `<case>::qemu` checks QEMU's lines against `tests/guest/golden/ide_<case>.txt`
//!   (`VMSCOPE_BLESS=1` rewrites it) and that its qcow2 images still pass `qemu-img check`;
//! - `<case>::vmscope` runs both machines, each on its own copy of the disks, and requires
//!   the same lines, the same exit status and, afterwards, disks with the same content
//!   (`qemu-img compare`). It needs /dev/kvm (skips visibly without).
//!
//! Disks are attached as `-drive file=F,format=raw|qcow2,if=ide,index=N` and CDs as
//! `-cdrom F` (the `probe_*` cases use the other ways: `-hdX`, `-drive` with `bus=,unit=`
//! or without `if=`, `-device ide-hd/ide-cd`); QEMU's default devices stay (its empty CD-ROM at ide1-cd0 is what the
//! `atapi_empty` case talks to).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::boot_disk;
use common::guest_kernel::{kernel_lines, test_kernel};
use common::machine_run::{self, RunResult};
use common::{kvm, qemu};

const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// Every status poll and PIO word is a VM exit into an emulated guest here.
const VMSCOPE_TIMEOUT: Duration = Duration::from_secs(240);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Where the `ide-48bit` scenario reads and writes on its 160 GiB disk: the rest stays a
/// hole.
const REGIONS_48BIT: &[(u64, u64)] = &[
    (0x0fff_fff0, 32),
    (0x1000_0000, 32),
    (0x1111_1111, 32),
    (0x1200_0000, 64),
    (0x1234_0000, 320),
    (0x1234_5678, 8),
    (0x1300_0000, 8),
    (160 * GIB / 512 - 64, 64),
];

#[derive(Clone, Copy)]
enum Image {
    /// Raw, every sector patterned.
    Raw(u64),
    /// qcow2, every sector patterned.
    Qcow2(u64),
    /// qcow2, sparse, patterned only in these regions (first LBA, sectors).
    SparseQcow2(u64, &'static [(u64, u64)]),
    /// An ISO of this many 2048-byte blocks, patterned after its boot image.
    Iso(u32),
}

#[derive(Clone, Copy)]
enum Attach {
    /// `-drive if=ide,index=N`.
    Ide(u8),
    /// `-cdrom`.
    Cdrom,
    /// `-hda`..`-hdd` (the letter).
    Hd(char),
    /// `-drive file=F,format=FMT` and these options (none: QEMU's default interface).
    Drive(&'static str),
    /// `-drive if=none,id=..,file=F,format=FMT` and `-device` with these properties.
    Device(&'static str),
}

struct Case {
    name: &'static str,
    scenario: &'static str,
    media: &'static [(Image, Attach)],
}

/// One copy of a case's media.
struct Media {
    /// Each image with its format.
    images: Vec<(PathBuf, &'static str)>,
    args: Vec<String>,
}

impl Case {
    fn prepare(&self, dir: &Path) -> Media {
        std::fs::create_dir_all(dir).unwrap();
        let mut images = Vec::new();
        let mut args = Vec::new();
        for (i, (image, attach)) in self.media.iter().enumerate() {
            let raw = dir.join(format!("disk{i}.raw"));
            let qcow2 = dir.join(format!("disk{i}.qcow2"));
            let (path, format) = match *image {
                Image::Raw(size) => {
                    boot_disk::write_patterned_raw(&raw, size);
                    (raw, "raw")
                }
                Image::Qcow2(size) => {
                    boot_disk::write_patterned_raw(&raw, size);
                    boot_disk::convert_to_qcow2(&raw, &qcow2);
                    std::fs::remove_file(&raw).unwrap();
                    (qcow2, "qcow2")
                }
                Image::SparseQcow2(size, regions) => {
                    boot_disk::write_sparse_raw(&raw, size, regions);
                    boot_disk::convert_to_qcow2(&raw, &qcow2);
                    std::fs::remove_file(&raw).unwrap();
                    (qcow2, "qcow2")
                }
                Image::Iso(blocks) => {
                    let iso = dir.join(format!("cd{i}.iso"));
                    boot_disk::write_iso(&iso, blocks);
                    (iso, "raw")
                }
            };
            match attach {
                Attach::Ide(index) => args.extend([
                    "-drive".to_owned(),
                    format!(
                        "file={},format={format},if=ide,index={index}",
                        path.display()
                    ),
                ]),
                Attach::Cdrom => args.extend(["-cdrom".to_owned(), path.display().to_string()]),
                Attach::Hd(letter) => {
                    args.extend([format!("-hd{letter}"), path.display().to_string()])
                }
                Attach::Drive(options) => {
                    let mut drive = format!("file={},format={format}", path.display());
                    if !options.is_empty() {
                        drive = format!("{drive},{options}");
                    }
                    args.extend(["-drive".to_owned(), drive]);
                }
                Attach::Device(properties) => args.extend([
                    "-drive".to_owned(),
                    format!(
                        "if=none,id=drive{i},file={},format={format}",
                        path.display()
                    ),
                    "-device".to_owned(),
                    format!("{properties},drive=drive{i}"),
                ]),
            }
            images.push((path, format));
        }
        Media { images, args }
    }

    fn machine_args(&self, media: &Media) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-nographic".into(),
            "-no-user-config".into(),
            "-kernel".into(),
            test_kernel().display().to_string(),
            "-append".into(),
            self.scenario.into(),
        ];
        args.extend(media.args.iter().cloned());
        args
    }

    fn golden_path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/guest/golden")
            .join(format!("ide_{}.txt", self.name))
    }

    fn run_qemu(&self, media: &Media) -> RunResult {
        let mut args = vec!["-accel".to_owned(), qemu::accel()];
        args.extend(self.machine_args(media));
        machine_run::run(qemu::binary(), &args, None, QEMU_TIMEOUT)
    }

    fn run_vmscope(&self, media: &Media) -> RunResult {
        let vmscope = PathBuf::from(env!("CARGO_BIN_EXE_vmscope"));
        machine_run::run(&vmscope, &self.machine_args(media), None, VMSCOPE_TIMEOUT)
    }
}

/// A scratch directory per test (the `qemu` and `vmscope` tests of a case run at the same
/// time in one process, so the name carries the test's kind).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("vmscope-ide-kernel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_images(media: &Media) {
    for (path, format) in &media.images {
        if *format == "qcow2" {
            boot_disk::check_qcow2(path);
        }
    }
}

fn qemu_lines(run: &RunResult) -> Vec<String> {
    assert_eq!(
        run.exit(),
        Ok(0),
        "QEMU did not finish the scenario\n{}",
        run.describe()
    );
    let lines = kernel_lines(&run.stdout);
    assert!(
        lines.last().is_some_and(|l| l == "tk: kernel: done"),
        "the scenario did not run to its end\n{}",
        run.describe()
    );
    lines
}

fn check_qemu(case: &Case) {
    let tmp = TempDir::new(&format!("{}-qemu", case.name));
    let media = case.prepare(&tmp.0.join("qemu"));
    let run = case.run_qemu(&media);
    let lines = qemu_lines(&run);
    check_images(&media);
    let mut text = lines.join("\n");
    text.push('\n');
    let path = case.golden_path();
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
        "QEMU's kernel lines differ from {}\n--- golden ---\n{golden}--- QEMU ---\n{text}\n{}",
        path.display(),
        run.describe()
    );
}

fn check_vmscope(case: &Case) {
    let test = format!("ide_kernel::{}::vmscope", case.name);
    if !kvm::require(&test) {
        return;
    }
    let tmp = TempDir::new(&format!("{}-vmscope", case.name));
    let qemu_media = case.prepare(&tmp.0.join("qemu"));
    let vmscope_media = case.prepare(&tmp.0.join("vmscope"));
    let qemu_run = case.run_qemu(&qemu_media);
    let expected = qemu_lines(&qemu_run);
    let run = case.run_vmscope(&vmscope_media);
    let lines = kernel_lines(&run.stdout);
    assert!(
        lines == expected && run.exit() == qemu_run.exit(),
        "vmscope differs from QEMU 7.2\n{}\n=== vmscope ===\n{}\n=== QEMU ===\n{}",
        line_diff(&expected, &lines),
        run.describe(),
        qemu_run.describe()
    );
    check_images(&vmscope_media);
    for ((q, format), (v, _)) in qemu_media.images.iter().zip(&vmscope_media.images) {
        if let Err(report) = boot_disk::compare_images(q, v, format) {
            panic!(
                "{} differs after the run from QEMU's copy {}: {report}",
                v.display(),
                q.display()
            );
        }
    }
    kvm::record_use(&test);
}

/// The lines side by side, marking the first difference.
fn line_diff(qemu: &[String], vmscope: &[String]) -> String {
    let mut out = String::from("kernel lines (QEMU | vmscope):\n");
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

macro_rules! ide_tests {
    ($($name:ident => $scenario:expr, $media:expr;)*) => {
        $(
            mod $name {
                use super::*;

                fn case() -> Case {
                    Case { name: stringify!($name), scenario: $scenario, media: $media }
                }

                #[test]
                fn qemu() {
                    check_qemu(&case());
                }

                #[test]
                fn vmscope() {
                    check_vmscope(&case());
                }
            }
        )*
    };
}

ide_tests! {
    // Drive mapping: which file lands at which position, as a driver enumerates them (the
    // disks differ in size; QEMU's default empty CD-ROM sits at ide1-cd0 unless replaced).
    probe_hda_hdb_hdd => "ide-probe", &[
        (Image::Raw(MIB), Attach::Hd('a')),
        (Image::Raw(2 * MIB), Attach::Hd('b')),
        (Image::Raw(3 * MIB), Attach::Hd('d')),
    ];
    probe_drive_bus_unit => "ide-probe", &[
        (Image::Raw(MIB), Attach::Drive("if=ide,bus=1,unit=1")),
        (Image::Raw(2 * MIB), Attach::Drive("")),
        (Image::Iso(64), Attach::Cdrom),
        (Image::Raw(3 * MIB), Attach::Drive("if=ide,bus=0,unit=1,media=disk")),
    ];
    probe_device => "ide-probe", &[
        (Image::Raw(MIB), Attach::Device("ide-hd,bus=ide.0,unit=1")),
        (Image::Iso(64), Attach::Device("ide-cd,bus=ide.1,unit=1")),
        (Image::Raw(2 * MIB), Attach::Device("ide-hd,bus=ide.0,unit=0")),
    ];
    // Master raw, slave qcow2.
    pio => "ide-pio", &[(Image::Raw(16 * MIB), Attach::Ide(0)), (Image::Qcow2(8 * MIB), Attach::Ide(1))];
    dma => "ide-dma", &[(Image::Raw(16 * MIB), Attach::Ide(0))];
    lba48 => "ide-48bit", &[(Image::SparseQcow2(160 * GIB, REGIONS_48BIT), Attach::Ide(0))];
    errors => "ide-errors", &[(Image::Raw(16 * MIB), Attach::Ide(0))];
    atapi => "atapi", &[(Image::Iso(2048), Attach::Cdrom)];
    // No -cdrom: QEMU's default empty drive answers "medium not present".
    atapi_empty => "atapi", &[];
    // scripts/bench-boot's transfer: 64 MiB by DMA, all commands must succeed.
    dma_bench => "ide-dma-bench", &[(Image::Raw(64 * MIB), Attach::Ide(0))];
}
