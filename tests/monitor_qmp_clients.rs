//! Real QMP clients against the vmscope binary, compared with QEMU 7.2 (KVM, `-S`): QEMU's
//! Python library `qemu.qmp` (tests/monitor_qmp_common/qmp_client.py) and `socat` with a
//! half-closed stdin. Skips when the client or QEMU is not installed.

mod chardev_common;
mod common;
mod monitor_qmp_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use chardev_common::*;
use monitor_qmp_common::mask_qmp;

fn start(program: &str, accel: Option<&str>, sock: &std::path::Path) -> std::process::Child {
    let mut cmd = Command::new(program);
    if let Some(accel) = accel {
        cmd.args(["-accel", accel]);
    }
    cmd.args(["-S", "-display", "none", "-nodefaults", "-m", "64", "-qmp"])
        .arg(format!("unix:{},server,nowait", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts")
}

fn wait_for_socket(sock: &std::path::Path) {
    wait_for("the QMP socket", || sock.exists());
}

/// Runs `client` against vmscope and QEMU; returns (vmscope, QEMU) outputs.
fn both(tag: &str, client: impl Fn(&std::path::Path) -> Vec<u8>) -> (String, String) {
    let dir = TempDir::new(tag);
    let mut outputs = Vec::new();
    for (program, accel) in [
        (env!("CARGO_BIN_EXE_vmscope"), None),
        ("qemu-system-x86_64", Some("kvm")),
    ] {
        let sock = dir.join(if accel.is_none() {
            "ours.sock"
        } else {
            "qemu.sock"
        });
        let mut child = start(program, accel, &sock);
        wait_for_socket(&sock);
        outputs.push(mask_qmp(&client(&sock)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{program} did not exit after quit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let qemu = outputs.pop().unwrap();
    (outputs.pop().unwrap(), qemu)
}

#[test]
fn python_qemu_qmp_library_session() {
    let name = "python_qemu_qmp_library_session";
    if !common::kvm::require(name) {
        return;
    }
    let have_library = Command::new("python3")
        .args(["-c", "import qemu.qmp"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_library || !qemu_available() {
        eprintln!("SKIPPED: needs python3 with qemu.qmp (pip install qemu.qmp) and QEMU 7.2");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/monitor_qmp_common/qmp_client.py"
    );
    let (ours, qemu) = both("qmppy", |sock| {
        let out = Command::new("python3")
            .arg(script)
            .arg(sock)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    });
    assert!(qemu.contains("event SHUTDOWN"), "QEMU: {qemu}");
    assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
    common::kvm::record_use(name);
}

#[test]
fn socat_with_half_closed_input() {
    let name = "socat_with_half_closed_input";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() || Command::new("socat").arg("-V").output().is_err() {
        eprintln!("SKIPPED: needs socat and QEMU 7.2");
        return;
    }
    let (ours, qemu) = both("qmpsocat", |sock| {
        shell(&format!(
            "printf '%s\\n' \"{{'execute':'qmp_capabilities'}} {{'execute': 'query-status'}}\" \
             '{{\"execute\": \"stop\"}}' '{{\"execute\": \"quit\"}}' | socat - UNIX-CONNECT:{}",
            sock.display()
        ))
    });
    assert!(qemu.contains("host-qmp-quit"), "QEMU: {qemu}");
    assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
    common::kvm::record_use(name);
}
