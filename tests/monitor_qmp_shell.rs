//! QEMU's `qmp-shell` (from the `qemu.qmp` Python package that scripts/setup-debian.sh
//! installs) driving vmscope and QEMU 7.2 (`-accel kvm -S`) with the same input, in QMP
//! mode and in HMP mode (`-H`, which wraps each line in `human-monitor-command`): the
//! transcripts must match. Masked: the micro version in qmp-shell's banner and the
//! temporary directory. Skips when qmp-shell, /dev/kvm or QEMU 7.2 is missing.

mod chardev_common;
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_common::{qemu_available, wait_for, TempDir};

/// `qmp-shell` from PATH or from pip's user script directory.
fn qmp_shell() -> Option<PathBuf> {
    let candidates = [
        Some(PathBuf::from("qmp-shell")),
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/bin/qmp-shell")),
    ];
    candidates.into_iter().flatten().find(|path| {
        Command::new(path)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `shell [flags] socket` with `input` against `program`; returns qmp-shell's stdout.
fn session(
    shell: &Path,
    flags: &[&str],
    program: &str,
    accel: Option<&str>,
    dir: &TempDir,
    input: &str,
) -> String {
    let sock = dir.join(if accel.is_some() {
        "qemu.sock"
    } else {
        "ours.sock"
    });
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new(program);
    if let Some(accel) = accel {
        cmd.args(["-accel", accel]);
    }
    let mut vm = cmd
        .args(["-S", "-display", "none", "-nodefaults", "-m", "64", "-qmp"])
        .arg(format!("unix:{},server,nowait", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_for("the QMP socket", || sock.exists());
    let mut client = Command::new(shell)
        .args(flags)
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qmp-shell starts");
    client
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = client.wait_with_output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = vm.kill();
            panic!("{program} did not quit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = String::from_utf8_lossy(&output.stdout)
        .replace(&sock.display().to_string(), "SOCK")
        .replace(&dir.0.display().to_string(), "DIR");
    mask_banner_version(&text)
}

/// `Connected to QEMU 7.2.22` -> `Connected to QEMU 7.2.N`.
fn mask_banner_version(text: &str) -> String {
    const BANNER: &str = "Connected to QEMU 7.2.";
    match text.find(BANNER) {
        Some(pos) => {
            let start = pos + BANNER.len();
            let end = start
                + text[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len() - start);
            format!("{}N{}", &text[..start], &text[end..])
        }
        None => text.to_string(),
    }
}

fn setup(name: &str) -> Option<PathBuf> {
    if !common::kvm::require(name) {
        return None;
    }
    let Some(shell) = qmp_shell() else {
        eprintln!("SKIPPED: qmp-shell not found (pip install qemu.qmp)");
        return None;
    };
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return None;
    }
    Some(shell)
}

fn compare(name: &str, flags: &[&str], input: &str, expect_in_qemu: &str) {
    let Some(shell) = setup(name) else {
        return;
    };
    let dir = TempDir::new("qmpshell");
    let qemu = session(
        &shell,
        flags,
        "qemu-system-x86_64",
        Some("kvm"),
        &dir,
        input,
    );
    let ours = session(
        &shell,
        flags,
        env!("CARGO_BIN_EXE_vmscope"),
        None,
        &dir,
        input,
    );
    assert!(qemu.contains(expect_in_qemu), "QEMU: {qemu}");
    assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
    common::kvm::record_use(name);
}

#[test]
fn qmp_shell_qmp_mode_transcript() {
    compare(
        "qmp_shell_qmp_mode_transcript",
        &[],
        "query-status\nquery-name\nquery-kvm\nstop\ncont\nquery-status\nnope\n\
         query-chardev\nhuman-monitor-command command-line=stop\nquery-status\n\
         query-status x=1\nquit\n",
        "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}",
    );
}

#[test]
fn qmp_shell_hmp_mode_transcript() {
    compare(
        "qmp_shell_hmp_mode_transcript",
        &["-H"],
        "info status\nstop\ninfo status\ninfo chardev\ninfo registers\nfoo\nhelp stop\n\
         info kvm\nquit\n",
        "VM status: paused",
    );
}

#[test]
fn banner_masking() {
    assert_eq!(
        mask_banner_version("Connected to QEMU 7.2.22\n"),
        "Connected to QEMU 7.2.N\n"
    );
}
