//! HMP `info registers` through the vmscope binary compared with QEMU 7.2 (`-accel kvm`,
//! `-S`, `-smp 2`, firmware boot: both machines sit at the reset vector, so every register
//! is deterministic): the dump of the current CPU, `-a`, a vCPU by number or expression,
//! `human-monitor-command`'s `cpu-index` as the current CPU, and the argument errors.
//! Only vCPU thread ids (`info cpus`) are masked. Skips without /dev/kvm or QEMU 7.2.

mod chardev_common;
mod common;
mod monitor_qmp_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chardev_common::qemu_available;

/// Masks the `thread_id=N` of `info cpus`.
fn mask_thread_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find("thread_id=") {
        out.push_str(&rest[..pos + "thread_id=".len()]);
        rest = &rest[pos + "thread_id=".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push_str("TID");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn transcript(program: &str, accel: Option<&str>, input: &[u8]) -> String {
    let mut cmd = Command::new(program);
    if let Some(accel) = accel {
        cmd.args(["-accel", accel]);
    }
    let mut child = cmd
        .args([
            "-S",
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "64",
            "-smp",
            "2",
        ])
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(output)) => output,
        _ => {
            // SAFETY: plain kill(2) of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{program} did not finish");
        }
    };
    assert_eq!(output.status.code(), Some(0), "{program}");
    mask_thread_ids(&monitor_qmp_common::mask_qmp(&output.stdout))
}

#[test]
fn info_registers_matches_qemu_at_the_reset_vector() {
    let name = "info_registers_matches_qemu_at_the_reset_vector";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let hmp = |line: &str, cpu: Option<u32>| {
        match cpu {
        Some(cpu) => format!(
            "{{\"execute\": \"human-monitor-command\", \"arguments\": {{\"command-line\": \"{line}\", \"cpu-index\": {cpu}}}}}\n"
        ),
        None => format!(
            "{{\"execute\": \"human-monitor-command\", \"arguments\": {{\"command-line\": \"{line}\"}}}}\n"
        ),
    }
    };
    let mut input = String::from("{\"execute\": \"qmp_capabilities\"}\n");
    for (line, cpu) in [
        ("info registers", None),
        ("info registers -a", None),
        ("info registers 1", None),
        ("info registers 0x1", None),
        ("info registers (1+1)/2", None),
        ("info registers 5", None),
        ("info registers x", None),
        ("info registers -b", None),
        ("info registers 1 2", None),
        ("info registers", Some(1)),
        ("info cpus", Some(1)),
        ("info cpus", None),
        ("help info registers", None),
    ] {
        input.push_str(&hmp(line, cpu));
    }
    input.push_str("{\"execute\": \"quit\"}\n");
    let qemu = transcript("qemu-system-x86_64", Some("kvm"), input.as_bytes());
    let ours = transcript(env!("CARGO_BIN_EXE_vmscope"), None, input.as_bytes());
    assert!(qemu.contains("CPU#1\\r\\nEAX="), "QEMU: {qemu}");
    assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
    common::kvm::record_use(name);
}

/// While the guest runs (SeaBIOS here), `info registers` holds the vCPUs just long enough
/// to read them: the dump is complete and the VM is still running afterwards.
#[test]
fn info_registers_while_running_leaves_the_vm_running() {
    let name = "info_registers_while_running_leaves_the_vm_running";
    if !common::kvm::require(name) {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmscope"))
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "64",
            "-qmp",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin
        .write_all(
            b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info registers\"}}\n\
              {\"execute\": \"query-status\"}\n{\"execute\": \"quit\"}\n",
        )
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines[2].starts_with("{\"return\": \"\\r\\nCPU#0\\r\\n"),
        "{text}"
    );
    assert!(lines[2].contains("EFER="), "{text}");
    assert!(lines[2].contains("XMM0"), "{text}");
    assert_eq!(
        lines[3],
        "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}"
    );
    common::kvm::record_use(name);
}
