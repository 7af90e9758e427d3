//! The reference: QEMU 7.2's `qemu-system-x86_64` from Debian.
//!
//! Not looked up in PATH first: once vmscope is installed under that name (scripts/install.sh)
//! PATH may lead to vmscope itself. `VMSCOPE_QEMU` overrides the path; the binary must report
//! version 7.2 and must not be vmscope.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const DEFAULT_PATH: &str = "/usr/bin/qemu-system-x86_64";

/// Path of QEMU 7.2; panics with the reason when there is none (the Debian package
/// `qemu-system-x86` provides it; `.ci/run` installs it).
pub fn binary() -> &'static PathBuf {
    static QEMU: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match QEMU.get_or_init(find) {
        Ok(path) => path,
        Err(e) => panic!("no reference QEMU: {e}"),
    }
}

fn find() -> Result<PathBuf, String> {
    let path = PathBuf::from(std::env::var("VMSCOPE_QEMU").unwrap_or_else(|_| DEFAULT_PATH.into()));
    let output = Command::new(&path).arg("-version").output().map_err(|e| {
        format!(
            "{}: {e} (install qemu-system-x86 and qemu-utils)",
            path.display()
        )
    })?;
    let version = String::from_utf8_lossy(&output.stdout);
    if !version.starts_with("QEMU emulator version 7.2") || version.contains("vmscope") {
        return Err(format!(
            "{} is not QEMU 7.2: {}",
            path.display(),
            version.lines().next().unwrap_or("")
        ));
    }
    Ok(path)
}

/// The accelerator QEMU runs with: TCG (QEMU's own emulation), or `VMSCOPE_QEMU_ACCEL` (e.g.
/// `kvm`, to see what QEMU shows under the same KVM as vmscope).
pub fn accel() -> String {
    std::env::var("VMSCOPE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".to_owned())
}
