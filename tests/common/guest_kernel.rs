//! The no_std test kernel of `tests/guest/`, built once per test process by
//! `tests/guest/build.sh`. Test processes that run concurrently (cargo runs one per test
//! file) serialise the build on a lock file, so they never see a half-written image.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every line the test kernel prints starts with this.
pub const LINE_PREFIX: &str = "tk: ";

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// Path of the built test kernel ELF; builds it on first use. Panics with the build output
/// when the build fails: every test that boots the kernel needs it.
pub fn test_kernel() -> &'static Path {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match KERNEL.get_or_init(build) {
        Ok(path) => path,
        Err(e) => panic!("building the test kernel failed: {e}"),
    }
}

fn build() -> Result<PathBuf, String> {
    let dir = guest_dir();
    let build_dir = dir.join("build");
    fs::create_dir_all(&build_dir).map_err(|e| format!("{}: {e}", build_dir.display()))?;
    let lock_path = build_dir.join(".build.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; it is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "locking {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let output = Command::new(dir.join("build.sh"))
        .output()
        .map_err(|e| format!("running build.sh: {e}"))?;
    drop(lock);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("build.sh {}:\n{stdout}{stderr}", output.status));
    }
    let path = PathBuf::from(stdout.trim());
    if !path.is_file() {
        return Err(format!("build.sh printed {stdout:?}, which is not a file"));
    }
    Ok(path)
}

/// The kernel's lines in a serial transcript, in order, with CRs removed. Firmware output
/// (SeaBIOS and iPXE print on the same serial line under QEMU) has no prefix and is dropped.
pub fn kernel_lines(serial: &str) -> Vec<String> {
    serial
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with(LINE_PREFIX))
        .map(str::to_owned)
        .collect()
}
