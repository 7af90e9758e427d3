//! The ACPI power button end to end, side by side with QEMU 7.2: the test kernel's
//! `powerbutton` scenario finds the PM block through the FADT and `\_S5` in the DSDT,
//! enables the button and the SCI, and waits; the test presses the button over QMP
//! (`system_powerdown`). The kernel lines, the QMP replies and events (POWERDOWN, then the
//! guest's SHUTDOWN) and the exit status must match.
//!
//! QEMU runs the tables SeaBIOS installed from QEMU's fw_cfg loader; vmscope's direct boot
//! writes the same tables itself, so the FADT fields the kernel prints compare the two.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::guest_kernel::{kernel_lines, test_kernel};

/// What one machine did.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<String>,
    /// QMP replies and events after negotiation, timestamps cut off.
    qmp: Vec<String>,
    status: Option<i32>,
}

const WAITING: &str = "waiting for the power button";

fn run(binary: &Path, extra: &[&str], tag: &str, timeout: Duration) -> Outcome {
    let base = std::env::temp_dir().join(format!("vmscope-pwrbtn-{tag}-{}", std::process::id()));
    let socket = base.with_extension("sock");
    let serial = base.with_extension("serial");
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&serial);
    let mut vm = Command::new(binary)
        .args(extra)
        .args(["-display", "none", "-nodefaults", "-m", "128"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(test_kernel())
        .args(["-append", "powerbutton"])
        .arg("-qmp")
        .arg(format!("unix:{},server,nowait", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let serial_text = || std::fs::read_to_string(&serial).unwrap_or_default();
    while !serial_text().contains(WAITING) && Instant::now() < deadline {
        if vm.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut qmp = Vec::new();
    if serial_text().contains(WAITING) {
        let stream = UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer
            .write_all(
                b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"system_powerdown\", \"id\": 1}\n",
            )
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // Until the machine exits (EOF) or stays quiet for the read timeout.
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let text = line.trim_end();
            if !text.starts_with("{\"QMP\"") {
                let text = text.find("\"event\"").map_or(text, |at| &text[at..]);
                qmp.push(text.to_string());
            }
            line.clear();
        }
    }
    let status = loop {
        if let Some(status) = vm.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = vm.kill();
            let _ = vm.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = kernel_lines(&serial_text());
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&serial);
    Outcome { lines, qmp, status }
}

#[test]
fn power_button_press_reaches_the_guest_like_on_qemu() {
    let name = "power_button_press_reaches_the_guest_like_on_qemu";
    if !common::kvm::require(name) {
        return;
    }
    let qemu = run(
        common::qemu::binary(),
        &["-accel", "tcg"],
        "qemu",
        Duration::from_secs(60),
    );
    let expected_lines = [
        "kernel: scenario powerbutton",
        "powerbutton: fadt sci 9 smi_cmd 0xb2 pm1a_evt 0x0600 pm1a_cnt 0x0604 pm_tmr 0x0608 gpe0 0xafe0 flags 0x000080a5",
        "powerbutton: dsdt \\_S5 slp_typ 0",
        "powerbutton: acpi mode, sci_en 1",
        "powerbutton: sci irq 9 -> gsi 9 flags 0x000d",
        "powerbutton: pwrbtn_en 1, waiting for the power button",
        "powerbutton: sci, pwrbtn_sts 1, after acknowledging 0",
        "powerbutton: powering off through S5",
    ];
    let expected_qmp = [
        r#"{"return": {}}"#,
        r#""event": "POWERDOWN"}"#,
        r#"{"return": {}, "id": 1}"#,
        r#""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
    ];
    let expected_lines: Vec<String> = expected_lines.iter().map(|l| format!("tk: {l}")).collect();
    assert_eq!(qemu.lines, expected_lines, "QEMU 7.2: {qemu:?}");
    assert_eq!(qemu.qmp, expected_qmp, "QEMU 7.2: {qemu:?}");
    assert_eq!(qemu.status, Some(0));
    let ours = run(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        &[],
        "vmscope",
        Duration::from_secs(120),
    );
    assert_eq!(ours, qemu);
    common::kvm::record_use(name);
}
