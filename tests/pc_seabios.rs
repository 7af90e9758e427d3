//! Firmware boot: SeaBIOS (Debian's `bios-256k.bin`) runs on vmscope's `pc` machine (PCI
//! config mechanism #1, i440FX PAM shadowing, PIIX3/PIIX4, fw_cfg with DMA, CMOS) until it
//! finds no bootable device, and prints what it prints on QEMU 7.2.
//!
//! The differential test runs the same command line on QEMU 7.2 and vmscope and compares
//! SeaBIOS's debug log (isa-debugcon at 0x402) and its serial console after dropping the
//! lines of the deviations listed in [`known_deviation`], each with its reason.

mod common;

use common::temp_dir::TempDir;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const END_MARKER: &str = "No bootable device.";
/// QEMU under KVM reached a boot sector in 7.7 s here; SeaBIOS alone takes ~4 s on vmscope.
const LIMIT: Duration = Duration::from_secs(60);

struct FirmwareRun {
    command: String,
    /// The exit code when the process ended by itself.
    exit_code: Option<i32>,
    debug_log: String,
    serial: String,
    stderr: String,
    elapsed: Duration,
}

impl FirmwareRun {
    fn describe(&self) -> String {
        format!(
            "command: {}\nafter {:.1?}\n--- debug log ---\n{}\n--- serial ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.elapsed,
            self.debug_log,
            self.serial.replace('\x1b', "<ESC>"),
            self.stderr
        )
    }
}

/// Runs `program` with SeaBIOS's debug port and COM1 going to files until the debug log
/// shows [`END_MARKER`] (SeaBIOS then waits forever) or [`LIMIT`] passes; then kills it.
fn run_firmware(program: &Path, accel: &str, extra: &[&str], dir: &Path, tag: &str) -> FirmwareRun {
    run_firmware_until(program, accel, extra, dir, tag, &|log| {
        log.contains(END_MARKER)
    })
}

/// [`run_firmware`] until `done(debug log)`, or until the process exits by itself.
fn run_firmware_until(
    program: &Path,
    accel: &str,
    extra: &[&str],
    dir: &Path,
    tag: &str,
    done: &dyn Fn(&str) -> bool,
) -> FirmwareRun {
    let debug = dir.join(format!("{tag}-debug.txt"));
    let serial = dir.join(format!("{tag}-serial.txt"));
    let mut args: Vec<String> = vec![
        "-accel".into(),
        accel.into(),
        "-nographic".into(),
        "-nodefaults".into(),
        "-serial".into(),
        format!("file:{}", serial.display()),
        "-chardev".into(),
        format!("file,id=seabios,path={}", debug.display()),
        "-device".into(),
        "isa-debugcon,iobase=0x402,chardev=seabios".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let command = format!("{} {}", program.display(), args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    loop {
        let log = std::fs::read_to_string(&debug).unwrap_or_default();
        if done(&log) || start.elapsed() > LIMIT {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed();
    // SeaBIOS writes its serial console after the debug port: let it settle (unchanged for
    // 300 ms, 3 s at most) before stopping the machine.
    let settle = Instant::now();
    let mut last = std::fs::read(&serial).unwrap_or_default();
    while settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(300));
        let now = std::fs::read(&serial).unwrap_or_default();
        if now == last {
            break;
        }
        last = now;
    }
    // Only the process this test started, by its own handle.
    let exited_by_itself = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    FirmwareRun {
        exit_code: if exited_by_itself {
            output.status.code()
        } else {
            None
        },
        command,
        debug_log: std::fs::read_to_string(&debug).unwrap_or_default(),
        serial: std::fs::read_to_string(&serial).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed,
    }
}

/// Debug-log lines that differ between vmscope and QEMU 7.2 for a known reason.
fn known_deviation(line: &str) -> bool {
    const PATTERNS: &[&str] = &[
        // Accelerator: under KVM SeaBIOS finds kvmclock, under TCG the PM timer.
        "Running on KVM",
        "kvmclock:",
        "CPU Mhz=",
        "Using pmtimer",
        // ACPI tables through fw_cfg (etc/table-loader) are not provided yet: SeaBIOS builds
        // its own, keeps the PM block at its default base and allocates differently.
        "Moving pm_base",
        "Copying MPTABLE",
        "Copying SMBIOS",
        "table(",
        "ACPI",
        // vmscope's i8042 does not run the keyboard self-test SeaBIOS sends.
        "PS2 keyboard",
        "i8042",
        // QEMU's kvmvapic option ROM (not loaded by vmscope) and the space it takes.
        "kvmvapic",
        "Running option rom",
        "Space available for UMB",
        "ZoneHigh",
        // Where SeaBIOS's threads finish depends on the keyboard timeout above.
        "All threads complete",
    ];
    PATTERNS.iter().any(|p| line.contains(p))
}

/// The final e820 map lines that must match: below 1 MiB and from the BIOS ROM up. The top
/// of low RAM differs by the size of the ACPI tables, and QEMU under KVM reserves KVM's
/// identity map page (see machine::e820).
fn e820_line_compared(line: &str) -> bool {
    let Some((_, range)) = line.trim_start().split_once(": ") else {
        return true;
    };
    let Some(start) = range
        .split_whitespace()
        .next()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
    else {
        return true;
    };
    !(0x10_0000..0xfffc_0000).contains(&start)
}

/// The boot attempts (their order follows the BCV of QEMU's kvmvapic ROM) are compared as a
/// sorted list; everything else in order.
struct Normalized {
    ordered: Vec<String>,
    boot_attempts: Vec<String>,
}

fn normalize_debug_log(log: &str) -> Normalized {
    let mut ordered = Vec::new();
    let mut boot_attempts = Vec::new();
    let mut in_boot = false;
    for line in log.lines() {
        if line.starts_with("enter handle_19") {
            in_boot = true;
        }
        if known_deviation(line) || line.starts_with("e820 map has") {
            continue;
        }
        let mut line = line.to_string();
        if line.starts_with("  ") && line.contains(" = ") {
            if !e820_line_compared(&line) {
                continue;
            }
            // Entry numbers shift with the entries left out above.
            if let Some((_, entry)) = line.split_once(": ") {
                line = format!("e820: {entry}");
            }
        }
        if in_boot {
            boot_attempts.push(line);
        } else {
            ordered.push(line);
        }
    }
    boot_attempts.sort();
    // Application processors start in any order: their lines are compared sorted.
    if let Some(first) = ordered.iter().position(|l| l.starts_with("handle_smp:")) {
        let mut aps: Vec<String> = ordered
            .iter()
            .filter(|l| l.starts_with("handle_smp:"))
            .cloned()
            .collect();
        aps.sort();
        ordered.retain(|l| !l.starts_with("handle_smp:"));
        ordered.splice(first..first, aps);
    }
    Normalized {
        ordered,
        boot_attempts,
    }
}

/// Serial console lines without terminal escapes and CRs, boot attempts sorted.
fn normalize_serial(serial: &str) -> Vec<String> {
    let mut lines: Vec<String> = serial
        .replace('\r', "")
        .lines()
        .map(|line| match line.rfind("\x1b[0m") {
            Some(i) => line[i + 4..].to_string(),
            None => line.to_string(),
        })
        .collect();
    let first = if lines.is_empty() { 0 } else { 1 };
    lines[first..].sort();
    lines
}

fn compare_with_qemu(test: &str, extra: &[&str]) {
    if !common::kvm::require(test) {
        return;
    }
    let dir = TempDir::new(&format!("pc-{test}"));
    let accel = common::qemu::accel();
    let qemu_binary = common::qemu::binary().clone();
    let qemu_dir = dir.0.clone();
    let qemu_extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let qemu = std::thread::spawn(move || {
        let extra: Vec<&str> = qemu_extra.iter().map(String::as_str).collect();
        run_firmware(&qemu_binary, &accel, &extra, &qemu_dir, "qemu")
    });
    let ours = run_firmware(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        "kvm",
        extra,
        &dir.0,
        "vmscope",
    );
    let qemu = qemu.join().unwrap();
    assert!(
        qemu.debug_log.contains(END_MARKER),
        "QEMU did not get there:\n{}",
        qemu.describe()
    );
    assert!(
        ours.debug_log.contains(END_MARKER),
        "SeaBIOS did not finish on vmscope:\n{}",
        ours.describe()
    );
    let (q, o) = (
        normalize_debug_log(&qemu.debug_log),
        normalize_debug_log(&ours.debug_log),
    );
    assert_eq!(
        o.ordered,
        q.ordered,
        "debug log differs\n=== vmscope ===\n{}\n=== QEMU ===\n{}",
        ours.describe(),
        qemu.describe()
    );
    assert_eq!(o.boot_attempts, q.boot_attempts);
    assert_eq!(
        normalize_serial(&ours.serial),
        normalize_serial(&qemu.serial),
        "serial console differs\n=== vmscope ===\n{}\n=== QEMU ===\n{}",
        ours.describe(),
        qemu.describe()
    );
    common::kvm::record_use(test);
}

#[test]
fn seabios_reaches_no_bootable_device_like_qemu() {
    compare_with_qemu("seabios_128m", &["-m", "128"]);
}

#[test]
fn seabios_sees_ram_above_4g_and_two_cpus_like_qemu() {
    compare_with_qemu("seabios_4g_smp2", &["-m", "4G", "-smp", "2"]);
}

#[test]
fn seabios_counts_cpus_of_a_topology_with_apic_id_holes_like_qemu() {
    // APIC ids 0-2 and 4-6: QEMU reports 7 as the maximum.
    compare_with_qemu("seabios_smp6_topology", &["-smp", "6,sockets=2,cores=3"]);
}

#[test]
fn seabios_offers_its_boot_menu_like_qemu() {
    // fw_cfg's boot-menu flag and etc/boot-menu-wait: SeaBIOS prints its prompt on the
    // serial console and waits the splash time for a key before booting.
    compare_with_qemu(
        "seabios_boot_menu",
        &["-m", "128", "-boot", "menu=on,splash-time=300"],
    );
}

/// How often SeaBIOS's banner appears in a debug log.
fn banners(log: &str) -> usize {
    log.matches("SeaBIOS (version").count()
}

#[test]
fn seabios_reboot_with_no_reboot_ends_the_process_like_qemu() {
    let test = "seabios_reboot_no_reboot";
    if !common::kvm::require(test) {
        return;
    }
    let dir = TempDir::new(&format!("pc-{test}"));
    let extra = ["-m", "128", "-boot", "reboot-timeout=0", "-no-reboot"];
    let never = |_: &str| false;
    let qemu = run_firmware_until(
        common::qemu::binary(),
        &common::qemu::accel(),
        &extra,
        &dir.0,
        "qemu",
        &never,
    );
    let ours = run_firmware_until(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        "kvm",
        &extra,
        &dir.0,
        "vmscope",
        &never,
    );
    assert_eq!(qemu.exit_code, Some(0), "{}", qemu.describe());
    assert_eq!(ours.exit_code, Some(0), "{}", ours.describe());
    for run in [&qemu, &ours] {
        assert!(
            run.debug_log
                .contains("No bootable device.  Retrying in 0 seconds.\nRebooting.\n"),
            "{}",
            run.describe()
        );
        assert!(
            run.debug_log
                .trim_end()
                .ends_with("Attempting a hard reboot"),
            "{}",
            run.describe()
        );
    }
    common::kvm::record_use(test);
}

#[test]
fn a_reset_runs_the_firmware_again_from_rom() {
    let test = "seabios_reset_reruns";
    if !common::kvm::require(test) {
        return;
    }
    let dir = TempDir::new(&format!("pc-{test}"));
    // SeaBIOS resets the machine each time nothing boots; PAM must be back at power-on
    // state (the ROM alias at 0xF0000) for the next run to start from scratch.
    let ours = run_firmware_until(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        "kvm",
        &["-m", "128", "-boot", "reboot-timeout=0"],
        &dir.0,
        "vmscope",
        &|log| log.matches("Attempting a hard reboot").count() >= 2 && banners(log) >= 6,
    );
    assert!(banners(&ours.debug_log) >= 6, "{}", ours.describe());
    // Every run prints the same lines as the first.
    let runs: Vec<&str> = ours.debug_log.split("Attempting a hard reboot\n").collect();
    assert!(runs.len() >= 3, "{}", ours.describe());
    let first = normalize_debug_log(runs[0]).ordered;
    let second = normalize_debug_log(runs[1]).ordered;
    assert_eq!(second, first, "{}", ours.describe());
    common::kvm::record_use(test);
}

#[test]
fn a_missing_bios_file_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_vmscope"))
        .args(["-display", "none", "-bios", "/nonexistent/bios.bin"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not load PC BIOS '/nonexistent/bios.bin'"),
        "{stderr}"
    );
}

#[test]
fn bios_with_kernel_is_checked_and_said_to_be_unused() {
    let run = |bios: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_vmscope"))
            .args(["-display", "none", "-nodefaults", "-S"])
            .args(["-kernel", "/nonexistent/kernel", "-bios", bios])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = run("/nonexistent/bios.bin");
    assert!(
        missing.contains("could not load PC BIOS '/nonexistent/bios.bin'"),
        "{missing}"
    );
    let present = run("bios-256k.bin");
    assert!(
        present
            .contains("warning: -bios bios-256k.bin is not run: vmscope enters -kernel directly"),
        "{present}"
    );
}

#[test]
fn l_directories_are_searched_before_the_system_ones() {
    let dir = TempDir::new("pc-data-dir");
    let bogus = dir.0.join("bios-256k.bin");
    std::fs::write(&bogus, [0u8; 1000]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vmscope"))
        .args(["-display", "none", "-L"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("could not load PC BIOS '{}'", bogus.display())),
        "{stderr}"
    );
}

#[test]
fn normalization_keeps_what_must_match() {
    let log = "SeaBIOS (version 1)\nRunning on KVM\nFound 3 PCI devices (max PCI bus is 00)\n\
               PCI: init bdf=00:01.3 id=8086:7113\ne820 map has 7 items:\n\
               \x20 0: 0000000000000000 - 000000000009fc00 = 1 RAM\n\
               \x20 3: 0000000000100000 - 0000000007ffe000 = 1 RAM\n\
               enter handle_19:\nBooting from Floppy...\nBooting from Hard Disk...\n";
    let n = normalize_debug_log(log);
    assert_eq!(
        n.ordered,
        [
            "SeaBIOS (version 1)",
            "Found 3 PCI devices (max PCI bus is 00)",
            "PCI: init bdf=00:01.3 id=8086:7113",
            "e820: 0000000000000000 - 000000000009fc00 = 1 RAM"
        ]
    );
    assert_eq!(
        n.boot_attempts,
        [
            "Booting from Floppy...",
            "Booting from Hard Disk...",
            "enter handle_19:"
        ]
    );
}
