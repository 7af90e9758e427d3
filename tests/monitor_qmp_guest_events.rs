//! QMP events caused by the guest, side by side with QEMU 7.2: poweroff (SHUTDOWN
//! `guest-shutdown`, then STOP under `-no-shutdown`) and a reset under `-no-reboot`
//! (SHUTDOWN `guest-reset`). A rebooting reset is left out: on QEMU SeaBIOS resets the
//! machine twice more while it boots the kernel, which direct boot on vmscope does not do.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::guest_kernel::test_kernel;

/// Starts `binary` paused with a QMP socket, continues it, and returns the event lines
/// (timestamps masked) seen until the process ends or `quiet_after` passes.
fn guest_events(binary: &Path, extra: &[&str], scenario: &str, tag: &str) -> Vec<String> {
    let socket = std::env::temp_dir().join(format!("vmscope-qmpev-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut vm = Command::new(binary)
        .args([
            "-S",
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "128",
            "-kernel",
        ])
        .arg(test_kernel())
        .args(["-append", scenario])
        .args(extra)
        .arg("-qmp")
        .arg(format!("unix:{},server,nowait", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{binary:?}: QMP socket: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"cont\"}\n")
        .unwrap();
    let mut events = Vec::new();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // Read until the VM exits (EOF) or it stays quiet for the read timeout.
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(at) = line.find("\"event\"") {
            events.push(line[at..].trim_end().to_string());
        }
        line.clear();
    }
    let _ = writer.write_all(b"{\"execute\": \"quit\"}\n");
    let _ = vm.wait();
    let _ = std::fs::remove_file(&socket);
    events
}

fn compare(extra: &[&str], scenario: &str, tag: &str, expected: &[&str]) {
    let qemu_args: Vec<&str> = ["-accel", "tcg"].iter().chain(extra).copied().collect();
    let qemu = guest_events(
        common::qemu::binary(),
        &qemu_args,
        scenario,
        &format!("{tag}-q"),
    );
    assert_eq!(qemu, expected, "QEMU 7.2's events");
    let ours = guest_events(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        extra,
        scenario,
        &format!("{tag}-v"),
    );
    assert_eq!(ours, qemu);
}

#[test]
fn guest_poweroff_and_reset_events_match_qemu() {
    let name = "guest_poweroff_and_reset_events_match_qemu";
    if !common::kvm::require(name) {
        return;
    }
    compare(
        &["-no-shutdown"],
        "memory",
        "noshut",
        &[
            r#""event": "RESUME"}"#,
            r#""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
            r#""event": "STOP"}"#,
        ],
    );
    compare(
        &[],
        "memory",
        "poweroff",
        &[
            r#""event": "RESUME"}"#,
            r#""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        ],
    );
    compare(
        &["-no-reboot"],
        "reset",
        "noreboot",
        &[
            r#""event": "RESUME"}"#,
            r#""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#,
        ],
    );
    common::kvm::record_use(name);
}
