//! `-drive` images are opened at start-up as QEMU 7.2 opens them: a broken or unsupported
//! image ends the process with QEMU's message, prefixed by the option, and exit status 1;
//! a good `if=none` drive (no device) lets the VM start.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmscope-drive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn qemu_img(args: &[&str]) {
    let status = Command::new("qemu-img").args(args).status().unwrap();
    assert!(status.success(), "qemu-img {args:?}");
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Runs `binary` with `drive` as the only device; returns (exit status, stderr with the
/// program name replaced).
fn start_with_drive(binary: &str, dir: &Path, drive: &str) -> (Option<i32>, String) {
    let out = Command::new(binary)
        .current_dir(dir)
        .args(["-nodefaults", "-display", "none", "-S", "-drive", drive])
        .output()
        .unwrap();
    let name = Path::new(binary).file_name().unwrap().to_string_lossy();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&format!("{name}: "), "PROG: ");
    (out.status.code(), stderr)
}

#[test]
fn unusable_images_are_refused_with_qemus_message() {
    let dir = scratch("refused");
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();

    // An unknown incompatible feature bit.
    qemu_img(&["create", "-q", "-f", "qcow2", &p("feature.qcow2"), "1M"]);
    patch(&dir.join("feature.qcow2"), 72, &[0x80]);
    // A version QEMU does not know.
    std::fs::write(dir.join("version.qcow2"), b"QFI\xfb\0\0\0\x09").unwrap();
    // A backing file that does not exist.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "missing.qcow2",
        "-F",
        "qcow2",
        &p("orphan.qcow2"),
        "1M",
    ]);
    // Two images backing each other.
    qemu_img(&["create", "-q", "-f", "qcow2", &p("a.qcow2"), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        &p("b.qcow2"),
    ]);
    qemu_img(&[
        "rebase",
        "-q",
        "-u",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        &p("a.qcow2"),
    ]);

    let drives = [
        "if=none,id=d0,file=feature.qcow2",
        "if=none,file=version.qcow2,format=qcow2",
        "if=none,file=orphan.qcow2",
        "if=none,file=feature.qcow2,format=qcow2,aio=native",
    ];
    // QEMU reports this loop through its image locking ("Failed to get shared \"write\"
    // lock"), an accident of its open order; vmscope names the loop.
    let looped = start_with_drive(env!("CARGO_BIN_EXE_vmscope"), &dir, "if=none,file=b.qcow2");
    assert_eq!(looped.0, Some(1));
    assert!(
        looped.1.contains("creates an infinite loop"),
        "{}",
        looped.1
    );
    for drive in drives {
        let qemu = start_with_drive(common::qemu::binary().to_str().unwrap(), &dir, drive);
        let ours = start_with_drive(env!("CARGO_BIN_EXE_vmscope"), &dir, drive);
        assert_eq!(qemu.0, Some(1), "QEMU accepted {drive}: {}", qemu.1);
        assert_eq!(ours, qemu, "-drive {drive}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_drive_without_a_device_lets_the_vm_start() {
    if !common::kvm::require("a_drive_without_a_device_lets_the_vm_start") {
        return;
    }
    let dir = scratch("accepted");
    let image = dir.join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1M"]);
    let out = Command::new(env!("CARGO_BIN_EXE_vmscope"))
        .args(["-nodefaults", "-display", "none", "-S", "-monitor", "stdio"])
        .arg("-drive")
        .arg(format!("if=none,id=disk0,file={}", image.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"quit\n")?;
            child.wait_with_output()
        })
        .unwrap();
    common::kvm::record_use("a_drive_without_a_device_lets_the_vm_start");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("QEMU 7.2.0 monitor"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qcow2_cache_options_are_checked_as_qemu_checks_them() {
    let dir = scratch("cache-options");
    let image = dir.join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "4M"]);
    let refused = [
        "l2-cache-size=1M,refcount-cache-size=1M,cache-size=1M",
        "cache-size=1M,l2-cache-size=2M",
        "cache-size=1M,refcount-cache-size=2M",
        "cache-size=1M,l2-cache-size=512K,refcount-cache-size=768K",
        "l2-cache-entry-size=100",
        "l2-cache-entry-size=1M",
        "l2-cache-entry-size=3000",
        "cache-clean-interval=4294967296",
        "cache-clean-interval=-1",
        "l2-cache-size=abc",
    ];
    for options in refused {
        let drive = format!("if=none,file=disk.qcow2,{options}");
        let qemu = start_with_drive(common::qemu::binary().to_str().unwrap(), &dir, &drive);
        let ours = start_with_drive(env!("CARGO_BIN_EXE_vmscope"), &dir, &drive);
        assert_eq!(qemu.0, Some(1), "QEMU accepted {drive}: {}", qemu.1);
        assert_eq!(ours, qemu, "-drive {drive}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
