//! Disks for the IDE tests: the `diskprobe` boot program of `tests/guest/boot/` (built once
//! per test process by its build.sh), raw/qcow2 images and ISOs that carry it plus known
//! data at the sectors it visits, patterned disks for the test kernel's IDE scenarios, and
//! the `qemu-img` calls that create, check and compare them.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::iso9660;

/// Every line the boot program prints starts with this.
pub const LINE_PREFIX: &str = "bt: ";

/// The boot program's probe points: LBA k * ((sectors - 1) / 15) for k = 0..15, and the
/// last sector (see `diskprobe.S`).
pub fn probe_lbas(sectors: u64) -> Vec<u64> {
    let step = (sectors - 1) / 15;
    let mut lbas: Vec<u64> = (0..16).map(|k| k * step).collect();
    lbas.push(sectors - 1);
    lbas
}

/// The initial content of sector `lba` (of `size` bytes): distinct for every sector.
pub fn sector_pattern(lba: u64, size: usize) -> Vec<u8> {
    let mut x = (lba as u32).wrapping_mul(0x9e37_79b1) ^ 0x5bd1_e995;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The boot program's lines in a serial transcript, CRs removed.
pub fn boot_lines(serial: &str) -> Vec<String> {
    serial
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with(LINE_PREFIX))
        .map(str::to_owned)
        .collect()
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// The assembled boot program (8 KiB: the boot sector and 15 more sectors).
pub fn diskprobe() -> &'static [u8] {
    static PROGRAM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    match PROGRAM.get_or_init(|| build_boot_program("diskprobe")) {
        Ok(bytes) => bytes,
        Err(e) => panic!("building the boot program failed: {e}"),
    }
}

fn build_boot_program(name: &str) -> Result<Vec<u8>, String> {
    let dir = guest_dir();
    let build_dir = dir.join("build");
    fs::create_dir_all(&build_dir).map_err(|e| format!("{}: {e}", build_dir.display()))?;
    let lock_path = build_dir.join(".boot.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "locking {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let output = Command::new(dir.join("boot/build.sh"))
        .arg(name)
        .output()
        .map_err(|e| format!("running boot/build.sh: {e}"))?;
    drop(lock);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "boot/build.sh {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = PathBuf::from(stdout.trim());
    fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A sparse raw disk of `size` bytes: the boot program at sector 0, the first 4 MiB after it
/// patterned (the CHS probes land there), and 8 patterned sectors at every probe point.
pub fn write_raw_disk(path: &Path, size: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.set_len(size).unwrap();
    let program = diskprobe();
    f.write_all(program).unwrap();
    let sectors = size / 512;
    let mut put = |lba: u64| {
        if lba * 512 >= program.len() as u64 && lba < sectors {
            f.seek(SeekFrom::Start(lba * 512)).unwrap();
            f.write_all(&sector_pattern(lba, 512)).unwrap();
        }
    };
    for lba in 0..(4 << 20) / 512 {
        put(lba);
    }
    for probe in probe_lbas(sectors) {
        for lba in probe.saturating_sub(3)..probe + 5 {
            put(lba);
        }
    }
}

/// A bootable ISO of `blocks` 2048-byte blocks; every block after the boot image patterned.
pub fn write_iso(path: &Path, blocks: u32) {
    let (mut iso, first_free) = iso9660::bootable_iso(diskprobe(), blocks);
    for block in first_free..blocks {
        let at = block as usize * iso9660::BLOCK;
        iso[at..at + iso9660::BLOCK]
            .copy_from_slice(&sector_pattern(u64::from(block), iso9660::BLOCK));
    }
    fs::write(path, iso).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Runs `qemu-img ARGS`; returns its exit code and output.
pub fn qemu_img(args: &[&str]) -> (i32, String) {
    let output = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("qemu-img {args:?}: {e} (install qemu-utils)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn qemu_img_ok(args: &[&str]) {
    let (code, text) = qemu_img(args);
    assert_eq!(code, 0, "qemu-img {args:?} failed: {text}");
}

/// `qemu-img convert -O qcow2 raw qcow2`.
pub fn convert_to_qcow2(raw: &Path, qcow2: &Path) {
    qemu_img_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &raw.display().to_string(),
        &qcow2.display().to_string(),
    ]);
}

/// An empty qcow2 overlay over `backing` (absolute path) of format `backing_format`.
pub fn create_overlay(overlay: &Path, backing: &Path, backing_format: &str) {
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        &backing.display().to_string(),
        "-F",
        backing_format,
        &overlay.display().to_string(),
    ]);
}

/// `qemu-img check` of a qcow2 image: panics with its report when it finds anything.
pub fn check_qcow2(image: &Path) {
    qemu_img_ok(&["check", "-q", "-f", "qcow2", &image.display().to_string()]);
}

/// Whether two images (with their backing chains) have the same guest-visible content:
/// `qemu-img compare` (not strict: an unallocated cluster equals zeros, so two VMMs may
/// allocate differently). Err carries qemu-img's report.
pub fn compare_images(a: &Path, b: &Path, format: &str) -> Result<(), String> {
    let (code, text) = qemu_img(&[
        "compare",
        "-f",
        format,
        "-F",
        format,
        &a.display().to_string(),
        &b.display().to_string(),
    ]);
    if code == 0 {
        Ok(())
    } else {
        Err(text)
    }
}

/// A raw disk of `size` bytes (a multiple of 512) in which every sector holds
/// [`sector_pattern`] of its LBA: for the test kernel's IDE scenarios.
pub fn write_patterned_raw(path: &Path, size: u64) {
    let mut data = Vec::with_capacity(size as usize);
    for lba in 0..size / 512 {
        data.extend_from_slice(&sector_pattern(lba, 512));
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A sparse raw disk of `size` bytes with [`sector_pattern`] only in `regions` (first LBA,
/// sector count): for disks too large to fill.
pub fn write_sparse_raw(path: &Path, size: u64, regions: &[(u64, u64)]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.set_len(size).unwrap();
    for &(first, count) in regions {
        f.seek(SeekFrom::Start(first * 512)).unwrap();
        for lba in first..first + count {
            f.write_all(&sector_pattern(lba, 512)).unwrap();
        }
    }
}
