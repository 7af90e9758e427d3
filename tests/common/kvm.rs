//! /dev/kvm bookkeeping. Tests that run vmscope need KVM; without it they pass with a
//! visible `SKIPPED (no /dev/kvm)` line instead of silently. Every test that ran a guest
//! under KVM and passed appends its name to the file named by `VMSCOPE_KVM_LOG` (default
//! `target/kvm-tests.log`; skips go to `kvm-skipped.log` next to it), so a summary step can
//! count them: remove the files before `cargo test`, count their lines after.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

const DEFAULT_USED_LOG: &str = "kvm-tests.log";
const SKIPPED_LOG: &str = "kvm-skipped.log";

/// Where tests that used KVM are recorded.
pub fn used_log() -> PathBuf {
    match std::env::var_os("VMSCOPE_KVM_LOG") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join(DEFAULT_USED_LOG),
    }
}

/// Where tests skipped for want of KVM are recorded.
pub fn skipped_log() -> PathBuf {
    used_log().with_file_name(SKIPPED_LOG)
}

/// Whether /dev/kvm can be opened for reading and writing, as a VMM must.
pub fn available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn append(path: &Path, test: &str) {
    // One short write with O_APPEND: lines from concurrent tests do not interleave.
    let result = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{test}\n").as_bytes()));
    if let Err(e) = result {
        panic!("recording KVM use in {}: {e}", path.display());
    }
}

/// Call at the start of a test that needs KVM: `false` means skip (the skip is announced on
/// the real stderr, past libtest's output capture, and logged).
pub fn require(test: &str) -> bool {
    if available() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED (no /dev/kvm): {test}");
    append(&skipped_log(), test);
    false
}

/// Records that `test` ran a guest under KVM (call once its checks have passed).
pub fn record_use(test: &str) {
    append(&used_log(), test);
}
