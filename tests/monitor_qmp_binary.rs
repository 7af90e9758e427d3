//! QMP through the vmscope binary (real KVM machine, `-S`, no guest needed while paused)
//! compared with QEMU 7.2 given the same options: the libguestfs probe over `-qmp stdio`,
//! `-mon chardev=…,mode=control,pretty=on` on a unix socket with `-smp 2`, and
//! `-qmp tcp:…` with `-name`.

mod chardev_common;
mod common;
mod monitor_qmp_common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chardev_common::*;
use monitor_qmp_common::*;

const BASE_ARGS: &[&str] = &["-S", "-display", "none", "-nodefaults", "-m", "64"];

fn vmscope(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmscope"));
    cmd.args(BASE_ARGS).args(args);
    cmd
}

fn qemu(accel: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel]).args(BASE_ARGS).args(args);
    cmd
}

/// Kills a background process when the test ends, however it ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command) -> Background {
    Background(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("process starts"),
    )
}

/// Runs `cmd` with `input` on stdin; returns (stdout, exit code).
fn run_with_stdin(mut cmd: Command, input: &[u8]) -> (Vec<u8>, Option<i32>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("process starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    wait_with_timeout_output(child, Duration::from_secs(20))
}

fn wait_with_timeout_output(child: Child, timeout: Duration) -> (Vec<u8>, Option<i32>) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => (output.stdout, output.status.code()),
        Ok(Err(e)) => panic!("waiting for {pid}: {e}"),
        Err(_) => {
            // SAFETY: plain kill(2) of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("process {pid} did not exit within {timeout:?}");
        }
    }
}

#[test]
fn libguestfs_probe_over_qmp_stdio() {
    let name = "libguestfs_probe_over_qmp_stdio";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let probe = b"{ \"execute\": \"qmp_capabilities\" } { \"execute\": \"query-kvm\" } { \"execute\": \"quit\" }\n";
    let (ours, ours_status) = run_with_stdin(vmscope(&["-qmp", "stdio"]), probe);
    let (theirs, their_status) = run_with_stdin(qemu("kvm", &["-qmp", "stdio"]), probe);
    let (ours, theirs) = (mask_qmp(&ours), mask_qmp(&theirs));
    assert!(
        theirs.contains("{\"return\": {\"enabled\": true, \"present\": true}}\r\n"),
        "QEMU with KVM: {theirs}"
    );
    assert_eq!(ours, theirs, "\nvmscope:\n{ours}\nQEMU 7.2:\n{theirs}");
    assert_eq!(ours_status, Some(0));
    assert_eq!(ours_status, their_status);
    common::kvm::record_use(name);
}

#[test]
fn mon_chardev_control_pretty_with_two_vcpus() {
    let name = "mon_chardev_control_pretty_with_two_vcpus";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let dir = TempDir::new("qmpbin");
    let run = |sock: &std::path::Path| {
        let chunks: &[&[u8]] = &[
            b"{\"execute\": \"qmp_capabilities\"}\n",
            b"{\"execute\": \"query-status\", \"id\": [1, {\"a\": null}]}\n",
            b"{\"execute\": \"query-cpus-fast\"}\n",
            b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info status\"}}\n",
            b"{\"execute\": \"nope\"}\n",
            b"{\"execute\": \"stop\"}\n",
        ];
        converse_qmp(sock, chunks, false)
    };
    let args = |sock: &std::path::Path| -> Vec<String> {
        vec![
            "-smp".into(),
            "2".into(),
            "-chardev".into(),
            format!("socket,id=qmp0,path={},server=on,wait=off", sock.display()),
            "-mon".into(),
            "chardev=qmp0,mode=control,pretty=on".into(),
        ]
    };
    let ours_sock = dir.join("ours.sock");
    let qemu_sock = dir.join("qemu.sock");
    let ours_args = args(&ours_sock);
    let qemu_args = args(&qemu_sock);
    let ours_proc = spawn(vmscope(
        &ours_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let _qemu_proc = spawn(qemu(
        "tcg",
        &qemu_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let ours_raw = run(&ours_sock);
    let theirs = mask_qmp(&run(&qemu_sock));
    let ours = mask_qmp(&ours_raw);
    assert!(theirs.contains("\"cpu-index\": 1"), "QEMU: {theirs}");
    assert_eq!(ours, theirs, "\nvmscope:\n{ours}\nQEMU 7.2:\n{theirs}");

    // The reported thread ids are vmscope's vCPU threads.
    let text = String::from_utf8_lossy(&ours_raw);
    let pid = ours_proc.0.id();
    let (_, tids) = vcpu_thread_ids(&text);
    assert_eq!(tids.len(), 2, "{text}");
    for tid in tids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .unwrap_or_else(|e| panic!("thread {tid} of {pid}: {e}"));
        assert!(comm.starts_with("CPU "), "thread {tid} is {comm:?}");
    }
    common::kvm::record_use(name);
}

#[test]
fn qmp_over_tcp_with_name() {
    let name = "qmp_over_tcp_with_name";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let conversation = |port: u16| {
        let stream = connect_tcp(port).short_timeout();
        converse_qmp_stream(
            stream,
            &[
                b"{'execute': 'qmp_capabilities'} {'execute': 'query-name'}\n",
                b"{\"execute\": \"query-version\"}\n",
                b"{\"execute\": \"quit\"}\n",
            ],
            false,
        )
    };
    let ours_port = free_tcp_port();
    let qemu_port = free_tcp_port();
    let mut ours_proc = spawn(vmscope(&[
        "-name",
        "guest \"one\"",
        "-qmp",
        &format!("tcp:127.0.0.1:{ours_port},server,nowait"),
    ]));
    let _qemu_proc = spawn(qemu(
        "tcg",
        &[
            "-name",
            "guest \"one\"",
            "-qmp",
            &format!("tcp:127.0.0.1:{qemu_port},server,nowait"),
        ],
    ));
    let ours = mask_qmp(&conversation(ours_port));
    let theirs = mask_qmp(&conversation(qemu_port));
    assert!(
        theirs.contains("\"name\": \"guest \\\"one\\\"\""),
        "QEMU: {theirs}"
    );
    assert_eq!(ours, theirs, "\nvmscope:\n{ours}\nQEMU 7.2:\n{theirs}");
    let status = ours_proc.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "quit ends vmscope with status 0");
    common::kvm::record_use(name);
}

#[test]
fn system_reset_over_stdio_with_and_without_no_reboot() {
    let name = "system_reset_over_stdio_with_and_without_no_reboot";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let input = b"{'execute': 'qmp_capabilities'} {'execute': 'system_reset'} {'execute': 'query-status'} {'execute': 'quit'}\n";
    for extra in [&[][..], &["-no-reboot"][..]] {
        let args: Vec<&str> = extra.iter().copied().chain(["-qmp", "stdio"]).collect();
        let (ours, ours_status) = run_with_stdin(vmscope(&args), input);
        let (theirs, their_status) = run_with_stdin(qemu("kvm", &args), input);
        let (ours, theirs) = (mask_qmp(&ours), mask_qmp(&theirs));
        assert!(theirs.contains("host-qmp-system-reset"), "QEMU: {theirs}");
        assert_eq!(
            ours, theirs,
            "\n{extra:?} vmscope:\n{ours}\nQEMU 7.2:\n{theirs}"
        );
        assert_eq!(ours_status, their_status);
    }
    common::kvm::record_use(name);
}

#[test]
fn termination_signal_sends_shutdown_host_signal() {
    let name = "termination_signal_sends_shutdown_host_signal";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let dir = TempDir::new("qmpsig");
    let transcript = |mut cmd: Command, sock: &std::path::Path| {
        let unix = format!("unix:{},server,nowait", sock.display());
        cmd.args(["-qmp", &unix]);
        let mut process = spawn(cmd);
        let mut s = connect_unix(sock).short_timeout();
        let mut out = read_until(&mut s, QUIET, Duration::from_secs(10), |b| {
            b.ends_with(b"\r\n")
        });
        s.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
            .unwrap();
        out.extend(read_quiet(&mut s, QUIET, Duration::from_secs(10)));
        // SAFETY: plain kill(2) of the child this test started.
        unsafe { libc::kill(process.0.id() as i32, libc::SIGTERM) };
        out.extend(read_quiet(
            &mut s,
            Duration::from_secs(2),
            Duration::from_secs(10),
        ));
        let status = process.0.wait().unwrap();
        (mask_qmp(&out), status.code())
    };
    let ours = transcript(vmscope(&[]), &dir.join("ours.sock"));
    let theirs = transcript(qemu("tcg", &[]), &dir.join("qemu.sock"));
    assert!(
        theirs.0.contains("\"reason\": \"host-signal\""),
        "QEMU: {theirs:?}"
    );
    assert_eq!(ours, theirs);
    common::kvm::record_use(name);
}
