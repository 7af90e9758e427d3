//! Run-state transitions seen through the HMP, side by side with QEMU 7.2: `-S` then `cont`,
//! guest poweroff under `-no-shutdown`, and `stop`/`cont` of a powered-off VM.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guest_kernel::test_kernel;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmscope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends one HMP line on a fresh connection and returns what the monitor answered to it
/// (banner and prompts stripped).
fn hmp(socket: &Path, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("monitor {socket:?}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    // The answer is what follows the echoed command line, up to the next prompt.
    let after_echo = text.rsplit_once("\u{1b}[K\r\n").map_or("", |(_, a)| a);
    after_echo.trim_end_matches("(qemu) ").to_string()
}

fn start(binary: &Path, extra: &[&str], socket: &Path) -> Child {
    Command::new(binary)
        .args(["-display", "none", "-nodefaults", "-m", "128"])
        .args(extra)
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_status(socket: &Path, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = hmp(socket, "info status");
        if status == expected || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same conversation with QEMU 7.2 and with vmscope: both must answer alike.
fn conversation(binary: &Path, extra: &[&str], dir: &Path) -> Vec<String> {
    let socket = dir.join("mon.sock");
    let mut vm = start(binary, extra, &socket);
    let mut transcript = vec![hmp(&socket, "info status")];
    transcript.push(hmp(&socket, "cont"));
    // The test kernel's `memory` scenario powers off once done.
    transcript.push(wait_for_status(&socket, "VM status: paused (shutdown)\r\n"));
    transcript.push(hmp(&socket, "stop"));
    transcript.push(hmp(&socket, "info status"));
    transcript.push(hmp(&socket, "quit"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = vm.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{binary:?} did not quit");
        std::thread::sleep(Duration::from_millis(20));
    };
    transcript.push(format!("exit {:?}", status.code()));
    transcript
}

#[test]
fn prelaunch_cont_poweroff_with_no_shutdown_matches_qemu() {
    if !common::kvm::require("prelaunch_cont_poweroff_with_no_shutdown_matches_qemu") {
        return;
    }
    let kernel = test_kernel().display().to_string();
    let args = [
        "-S",
        "-no-shutdown",
        "-kernel",
        &kernel,
        "-append",
        "memory",
    ];
    let qemu_dir = scratch("runctl-qemu");
    let mut qemu_args = vec!["-accel", "tcg"];
    qemu_args.extend(args);
    let qemu = conversation(common::qemu::binary(), &qemu_args, &qemu_dir);
    let ours_dir = scratch("runctl-vmscope");
    let ours = conversation(Path::new(env!("CARGO_BIN_EXE_vmscope")), &args, &ours_dir);
    assert_eq!(
        qemu,
        [
            "VM status: paused (prelaunch)\r\n",
            "",
            "VM status: paused (shutdown)\r\n",
            "",
            "VM status: paused (shutdown)\r\n",
            "",
            "exit Some(0)",
        ]
    );
    assert_eq!(ours, qemu);
    let _ = std::fs::remove_dir_all(&qemu_dir);
    let _ = std::fs::remove_dir_all(&ours_dir);
    common::kvm::record_use("prelaunch_cont_poweroff_with_no_shutdown_matches_qemu");
}
