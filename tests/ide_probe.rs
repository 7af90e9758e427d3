//! The PIIX3 IDE controller seen by a driver, compared with QEMU 7.2: SeaBIOS boots a raw
//! (or qcow2) disk whose boot program (`tests/guest/ide-probe/probe.S`) drives the ATA
//! registers itself (IDENTIFY, PIO reads and writes with 28- and 48-bit addresses, READ and
//! WRITE MULTIPLE, errors, nIEN and software reset, bus-master DMA with PRD chains, short
//! PRDs, 64 KiB PRDs) and prints registers, interrupt line and checksums on COM1, then powers
//! off. Both machines must print the same lines and leave the same disk contents.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{kvm, machine_run, qemu};

const SECTORS: usize = 2048;
/// The program occupies LBA 0-15; data from LBA 16 on is `7 * sector + byte`.
const PROGRAM_SECTORS: usize = 16;
const LIMIT: Duration = Duration::from_secs(120);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vmscope-ide-{name}-{}", std::process::id()));
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

fn run_tool(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (binutils/qemu-utils): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Assembles the probe (GNU as, 16-bit) into a flat binary loaded at 0x7C00.
fn build_probe(dir: &Path) -> Vec<u8> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/ide-probe/probe.S");
    let object = dir.join("probe.o");
    let binary = dir.join("probe.bin");
    run_tool(
        "as",
        &[
            "--32",
            "-o",
            object.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
    );
    run_tool(
        "ld",
        &[
            "-m",
            "elf_i386",
            "-Ttext",
            "0x7c00",
            "--oformat",
            "binary",
            "-o",
            binary.to_str().unwrap(),
            object.to_str().unwrap(),
        ],
    );
    let program = std::fs::read(&binary).unwrap();
    assert_eq!(
        program.len(),
        PROGRAM_SECTORS * 512,
        "the probe fills LBA 0-15"
    );
    program
}

fn disk_image(program: &[u8]) -> Vec<u8> {
    let mut disk = vec![0u8; SECTORS * 512];
    disk[..program.len()].copy_from_slice(program);
    for (s, sector) in disk.chunks_exact_mut(512).enumerate().skip(PROGRAM_SECTORS) {
        for (i, byte) in sector.iter_mut().enumerate() {
            *byte = (7 * s + i) as u8;
        }
    }
    disk
}

fn vmscope() -> &'static str {
    env!("CARGO_BIN_EXE_vmscope")
}

/// The probe's lines: from its first output ("identify:") to "probe done".
fn probe_lines(serial: &str) -> Vec<String> {
    let serial = serial.replace('\r', "");
    let start = serial.find("identify:").unwrap_or(serial.len());
    serial[start..]
        .lines()
        .take_while(|l| !l.starts_with("probe done"))
        .map(str::to_owned)
        .chain(
            serial[start..]
                .lines()
                .find(|l| l.starts_with("probe done"))
                .map(str::to_owned),
        )
        .collect()
}

/// Runs the probe from `image` (format `format`) on `program` and returns its lines.
fn run_probe(program: &Path, accel: &str, image: &Path, format: &str) -> Vec<String> {
    let args: Vec<String> = [
        "-accel",
        accel,
        "-nographic",
        "-nodefaults",
        "-serial",
        "stdio",
        "-drive",
        &format!("file={},format={format}", image.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let result = machine_run::run(program, &args, None, LIMIT);
    assert_eq!(result.exit(), Ok(0), "{}", result.describe());
    let lines = probe_lines(&result.stdout);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("probe done"),
        "{}",
        result.describe()
    );
    lines
}

fn compare(test: &str, format: &str) {
    if !kvm::require(test) {
        return;
    }
    let dir = TempDir::new(format);
    let program = build_probe(&dir.0);
    let raw = dir.0.join("disk.raw");
    std::fs::write(&raw, disk_image(&program)).unwrap();
    let (ours, theirs) = match format {
        "raw" => {
            let ours = dir.0.join("vmscope.raw");
            let theirs = dir.0.join("qemu.raw");
            std::fs::copy(&raw, &ours).unwrap();
            std::fs::copy(&raw, &theirs).unwrap();
            (ours, theirs)
        }
        _ => {
            let ours = dir.0.join("vmscope.qcow2");
            let theirs = dir.0.join("qemu.qcow2");
            for out in [&ours, &theirs] {
                run_tool(
                    "qemu-img",
                    &[
                        "convert",
                        "-f",
                        "raw",
                        "-O",
                        "qcow2",
                        raw.to_str().unwrap(),
                        out.to_str().unwrap(),
                    ],
                );
            }
            (ours, theirs)
        }
    };
    let expected = run_probe(qemu::binary(), &qemu::accel(), &theirs, format);
    let got = run_probe(Path::new(vmscope()), "kvm", &ours, format);
    assert_eq!(got, expected, "probe output differs from QEMU 7.2's");
    // The writes (PIO at LBA 300, DMA at LBA 400) landed alike.
    run_tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            format,
            "-F",
            format,
            ours.to_str().unwrap(),
            theirs.to_str().unwrap(),
        ],
    );
    if format == "qcow2" {
        run_tool("qemu-img", &["check", ours.to_str().unwrap()]);
    }
    kvm::record_use(test);
}

#[test]
fn ide_registers_dma_and_errors_match_qemu_on_a_raw_disk() {
    compare(
        "ide_registers_dma_and_errors_match_qemu_on_a_raw_disk",
        "raw",
    );
}

#[test]
fn ide_registers_dma_and_errors_match_qemu_on_a_qcow2_disk() {
    compare(
        "ide_registers_dma_and_errors_match_qemu_on_a_qcow2_disk",
        "qcow2",
    );
}

#[test]
fn the_probe_lines_are_what_the_comparison_needs() {
    let serial =
        "SeaBIOS\r\nBooting from Hard Disk..identify: i=1\r\nw 0040\r\nprobe done\r\nx\r\n";
    assert_eq!(
        probe_lines(serial),
        ["identify: i=1", "w 0040", "probe done"]
    );
    assert!(probe_lines("no probe here").is_empty());
}
