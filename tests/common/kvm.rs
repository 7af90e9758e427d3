//! /dev/kvm bookkeeping. Tests that run vmscope need KVM; without it they pass with a
//! visible `SKIPPED (no /dev/kvm)` line instead of silently. Every test that ran a guest
//! under KVM and passed appends its name to `target/kvm-tests.log` (skips go to
//! `target/kvm-skipped.log`), so a summary step can count them: remove the files before
//! `cargo test`, count their lines after.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

pub const USED_LOG: &str = "kvm-tests.log";
pub const SKIPPED_LOG: &str = "kvm-skipped.log";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Whether /dev/kvm can be opened for reading and writing, as a VMM must.
pub fn available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn append(log: &str, test: &str) {
    let path = target_dir().join(log);
    // One short write with O_APPEND: lines from concurrent tests do not interleave.
    let result = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
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
    append(SKIPPED_LOG, test);
    false
}

/// Records that `test` ran a guest under KVM (call once its checks have passed).
pub fn record_use(test: &str) {
    append(USED_LOG, test);
}
