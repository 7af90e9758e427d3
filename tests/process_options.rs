//! `-daemonize` and `-pidfile` behave as QEMU 7.2's: the launching process returns once the
//! VM is up, the pid file names the running VM and is locked against a second instance
//! (with QEMU's message), and it disappears when the VM ends.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmscope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hmp(socket: &Path, command: &str) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn daemonized_vm_writes_a_locked_pid_file_and_removes_it_on_quit() {
    if !common::kvm::require("daemonized_vm_writes_a_locked_pid_file_and_removes_it_on_quit") {
        return;
    }
    let dir = scratch("daemon");
    let pidfile = dir.join("vm.pid");
    let socket = dir.join("mon.sock");
    let vmscope = env!("CARGO_BIN_EXE_vmscope");
    let started = Instant::now();
    let status = Command::new(vmscope)
        .args([
            "-S",
            "-m",
            "64",
            "-display",
            "none",
            "-nodefaults",
            "-daemonize",
        ])
        .arg("-pidfile")
        .arg(&pidfile)
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", socket.display()))
        .status()
        .unwrap();
    assert!(status.success(), "the launching process reports success");
    assert!(started.elapsed() < Duration::from_secs(5));

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the VM runs as {pid}"
    );
    assert!(hmp(&socket, "info status").contains("VM status: paused (prelaunch)"));

    // A second VM with the same pid file is refused with QEMU 7.2's words.
    let second = Command::new(vmscope)
        .args(["-S", "-display", "none", "-nodefaults"])
        .arg("-pidfile")
        .arg(&pidfile)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&second.stderr),
        "vmscope: cannot create PID file: Cannot lock pid file: Resource temporarily unavailable\n"
    );

    hmp(&socket, "quit");
    wait_until("the VM exits", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    wait_until("the pid file is removed", || !pidfile.exists());
    let _ = std::fs::remove_dir_all(&dir);
    common::kvm::record_use("daemonized_vm_writes_a_locked_pid_file_and_removes_it_on_quit");
}

/// The process name `ps -A | grep qemu` finds: Linux takes it from the file name the binary
/// was started as (scripts/install.sh links `qemu-system-x86_64` to vmscope), and
/// `-name process=` overrides it, as on QEMU.
#[test]
fn process_name_follows_the_installed_name_and_name_process() {
    if !common::kvm::require("process_name_follows_the_installed_name_and_name_process") {
        return;
    }
    let dir = scratch("comm");
    let link = dir.join("qemu-system-x86_64");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vmscope"), &link).unwrap();
    for (extra, expected) in [
        (vec![], "qemu-system-x86"),
        (vec!["-name", "guest0,process=myvmproc"], "myvmproc"),
    ] {
        let mut child = Command::new(&link)
            .args(["-S", "-m", "64", "-display", "none", "-nodefaults"])
            .args(&extra)
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        wait_until("the name is set", || {
            std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == expected)
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    common::kvm::record_use("process_name_follows_the_installed_name_and_name_process");
}
