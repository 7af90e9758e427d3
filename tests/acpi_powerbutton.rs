//! ACPI power management end to end, side by side with QEMU 7.2. The power button: the test
//! kernel's `powerbutton` scenario finds the PM block through the FADT and `\_S5` in the
//! DSDT, enables the button and the SCI, and waits; the test presses the button over QMP
//! (`system_powerdown`). S4: `suspend-disk` enters the DSDT's `\_S4`. The kernel lines, the
//! QMP replies and events (POWERDOWN or SUSPEND_DISK, then the guest's SHUTDOWN) and the
//! exit status must match.
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

/// Runs the test kernel's `scenario` with a QMP client connected from the start; with
/// `press`, presses the power button (`system_powerdown`) once the kernel waits for it.
fn run(
    binary: &Path,
    extra: &[&str],
    tag: &str,
    scenario: &str,
    press: bool,
    timeout: Duration,
) -> Outcome {
    let base = std::env::temp_dir().join(format!("vmscope-pwrbtn-{tag}-{}", std::process::id()));
    let socket = base.with_extension("sock");
    let serial = base.with_extension("serial");
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&serial);
    let mut vm = Command::new(binary)
        .args(extra)
        .args(["-S", "-display", "none", "-nodefaults", "-m", "128"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(test_kernel())
        .args(["-append", scenario])
        .arg("-qmp")
        .arg(format!("unix:{},server,nowait", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => panic!("{binary:?}: QMP socket: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Started paused (-S) so that the client sees everything from the first instruction.
    writer
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"cont\"}\n")
        .unwrap();
    // Replies and events until the machine exits (EOF).
    let reader = std::thread::spawn(move || {
        let mut qmp = Vec::new();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let text = line.trim_end();
            if !text.starts_with("{\"QMP\"") {
                let text = text.find("\"event\"").map_or(text, |at| &text[at..]);
                qmp.push(text.to_string());
            }
            line.clear();
        }
        qmp
    });
    let serial_text = || std::fs::read_to_string(&serial).unwrap_or_default();
    if press {
        while !serial_text().contains(WAITING) && Instant::now() < deadline {
            if vm.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if serial_text().contains(WAITING) {
            writer
                .write_all(b"{\"execute\": \"system_powerdown\", \"id\": 1}\n")
                .unwrap();
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
    let qmp = reader.join().unwrap();
    let lines = kernel_lines(&serial_text());
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&serial);
    Outcome { lines, qmp, status }
}

/// Runs `scenario` on QEMU 7.2 (checked against the expected transcript) and on vmscope
/// (the same).
fn compare(scenario: &str, press: bool, expected_lines: &[&str], expected_qmp: &[&str]) {
    let qemu = run(
        common::qemu::binary(),
        &["-accel", "tcg"],
        &format!("{scenario}-qemu"),
        scenario,
        press,
        Duration::from_secs(60),
    );
    let expected_lines: Vec<String> = expected_lines.iter().map(|l| format!("tk: {l}")).collect();
    assert_eq!(qemu.lines, expected_lines, "QEMU 7.2: {qemu:?}");
    assert_eq!(qemu.qmp, expected_qmp, "QEMU 7.2: {qemu:?}");
    assert_eq!(qemu.status, Some(0));
    let ours = run(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        &[],
        &format!("{scenario}-vmscope"),
        scenario,
        press,
        Duration::from_secs(120),
    );
    assert_eq!(ours, qemu);
}

#[test]
fn power_button_press_reaches_the_guest_like_on_qemu() {
    let name = "power_button_press_reaches_the_guest_like_on_qemu";
    if !common::kvm::require(name) {
        return;
    }
    compare(
        "powerbutton",
        true,
        &[
            "kernel: scenario powerbutton",
            "powerbutton: fadt sci 9 smi_cmd 0xb2 pm1a_evt 0x0600 pm1a_cnt 0x0604 pm_tmr 0x0608 gpe0 0xafe0 flags 0x000080a5",
            "powerbutton: dsdt \\_S5 slp_typ 0",
            "powerbutton: acpi mode, sci_en 1",
            "powerbutton: sci irq 9 -> gsi 9 flags 0x000d",
            "powerbutton: pwrbtn_en 1, waiting for the power button",
            "powerbutton: sci, pwrbtn_sts 1, after acknowledging 0",
            "powerbutton: powering off through S5",
        ],
        &[
            r#"{"return": {}}"#,
            r#""event": "RESUME"}"#,
            r#"{"return": {}}"#,
            r#""event": "POWERDOWN"}"#,
            r#"{"return": {}, "id": 1}"#,
            r#""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        ],
    );
    common::kvm::record_use(name);
}

#[test]
fn suspend_to_disk_turns_the_machine_off_like_on_qemu() {
    let name = "suspend_to_disk_turns_the_machine_off_like_on_qemu";
    if !common::kvm::require(name) {
        return;
    }
    compare(
        "suspend-disk",
        false,
        &[
            "kernel: scenario suspend-disk",
            "suspend-disk: dsdt \\_S4 slp_typ 2",
        ],
        &[
            r#"{"return": {}}"#,
            r#""event": "RESUME"}"#,
            r#"{"return": {}}"#,
            r#""event": "SUSPEND_DISK"}"#,
            r#""event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        ],
    );
    common::kvm::record_use(name);
}
