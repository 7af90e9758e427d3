//! HMP `info qtree` and `info mtree` through the vmscope binary compared with QEMU 7.2
//! (`-accel kvm -S`, firmware boot, nothing run yet: every BAR is unassigned and PAM is at
//! its power-on value on both), and once more after SeaBIOS ran on both (BARs assigned,
//! the PM block enabled, the BIOS area shadowed: the run-time parts of the description). QEMU runs on KVM too, so both use KVM's in-kernel interrupt
//! controllers and PIT, which QEMU then names `kvm-ioapic`, `kvm-i8259`, `kvm-pit`.
//!
//! What is masked, and why (everything else must match line for line):
//! - devices vmscope does not model, with their buses and regions: HPET, the ISA DMA
//!   controllers, floppy controller, PC speaker, VMware port and mouse, the PIIX4 SMBus with
//!   its EEPROMs, kvmvapic (QEMU's TPR patching ROM), kvmclock (QEMU's migration helper for
//!   the KVM clock), the POST/diagnostic sink ports 0x80 and 0xF0, the option ROM area
//!   `pc.rom`, and the ACPI PCI/CPU hotplug register blocks;
//! - without `-nodefaults`: QEMU's default VGA, e1000 NIC, parallel port, floppy drive and
//!   CD-ROM drive (vmscope has none of them);
//! - with `-nodefaults`: vmscope's COM1, which it always wires and QEMU then leaves out;
//! - the PIIX4 PM properties that say what the ACPI tables offer (`disable_s3`, hotplug
//!   support): vmscope offers neither S3 nor hotplug, and says so;
//! - the order of `info mtree`'s groups: QEMU walks a hash table keyed by pointers, so its
//!   order changes from run to run; the groups are compared as sorted lists.
//!
//! Skips without /dev/kvm or QEMU 7.2.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("version 7.2"))
}

/// Runs `program` with `args` and the HMP `lines` through QMP's `human-monitor-command`,
/// returning each command's text.
fn hmp_outputs(program: &str, args: &[&str], lines: &[&str]) -> Vec<String> {
    let mut input = String::from("{\"execute\": \"qmp_capabilities\"}\n");
    for line in lines {
        input.push_str(&format!(
            "{{\"execute\": \"human-monitor-command\", \"arguments\": {{\"command-line\": \"{line}\"}}}}\n"
        ));
    }
    input.push_str("{\"execute\": \"quit\"}\n");
    let mut cmd = Command::new(program);
    if program == "qemu-system-x86_64" {
        cmd.args(["-accel", "kvm"]);
    }
    if !args.contains(&"-m") {
        cmd.args(["-m", "128"]);
    }
    let mut child = cmd
        .args(["-S", "-display", "none"])
        .args(args)
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
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
    let texts: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|reply| reply.get("return")?.as_str().map(str::to_string))
        .collect();
    assert_eq!(texts.len(), lines.len(), "{program}: {output:?}");
    texts
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Drops every line `masked` picks, with the lines indented deeper that follow it (a
/// device's properties and buses, a region's subregions).
fn drop_subtrees(text: &str, masked: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut skipping_below: Option<usize> = None;
    for line in text.lines() {
        let indent = indent_of(line);
        if let Some(level) = skipping_below {
            if indent > level && !line.trim().is_empty() {
                continue;
            }
            skipping_below = None;
        }
        if masked(line.trim_start()) {
            skipping_below = Some(indent);
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// Device types only QEMU has (see the module comment).
const QEMU_ONLY_DEVICES: &[&str] = &[
    "hpet",
    "vmmouse",
    "vmport",
    "isa-fdc",
    "isa-pcspk",
    "i8257",
    "kvmclock",
    "kvmvapic",
    // QEMU's defaults without -nodefaults.
    "VGA",
    "e1000",
    "isa-parallel",
    "ide-cd",
];

/// PIIX4 PM properties describing ACPI features vmscope does not offer, and the SMBus
/// base (vmscope has no SMBus controller; QEMU's value follows firmware's programming of
/// it, so the two agree only until SeaBIOS runs).
const ACPI_FEATURE_PROPS: &[&str] = &[
    "smb_io_base =",
    "disable_s3 =",
    "acpi-pci-hotplug-with-bridge-support =",
    "acpi-root-pci-hotplug =",
    "memory-hotplug-support =",
];

fn normalise_qtree(text: &str, drop_serial: bool) -> Vec<String> {
    drop_subtrees(text, &|line| {
        let device = line
            .strip_prefix("dev: ")
            .and_then(|rest| rest.split(',').next());
        device.is_some_and(|t| QEMU_ONLY_DEVICES.contains(&t) || (drop_serial && t == "isa-serial"))
            || line == "bus: i2c"
            || ACPI_FEATURE_PROPS.iter().any(|p| line.starts_with(p))
    })
}

/// Region names only QEMU has (see the module comment).
const QEMU_ONLY_REGIONS: &[&str] = &[
    "hpet",
    "dma-chan",
    "dma-cont",
    "dma-page",
    "pcspk",
    "kvmvapic",
    // Where kvmvapic maps its option ROM once SeaBIOS ran.
    "kvmvapic-rom",
    "ioport80",
    "ioportF0",
    "fdc",
    "vmport",
    "acpi-pci-hotplug",
    "acpi-cpu-hotplug",
    "pm-smbus",
    "pc.rom",
    // QEMU's defaults without -nodefaults: VGA and the parallel port.
    "vga-lowmem",
    "vga",
    "vbe",
    "qemu extended regs",
    "parallel",
];

/// The name of a region line: after `): `, without alias details or ` [disabled]`.
fn region_name(line: &str) -> Option<&str> {
    let rest = &line[line.find("): ")? + 3..];
    let rest = rest.strip_prefix("alias ").unwrap_or(rest);
    Some(rest.split([' ', '@']).next().unwrap_or(rest))
}

/// `info mtree` as sorted address-space groups and sorted `memory-region:` blocks, with
/// the masked regions (and address spaces of QEMU-only devices) left out.
fn normalise_mtree(text: &str, drop_serial: bool) -> (Vec<String>, Vec<String>) {
    let lines = drop_subtrees(text, &|line| {
        region_name(line).is_some_and(|name| {
            QEMU_ONLY_REGIONS.contains(&name) || (drop_serial && name == "serial")
        })
    });
    let mut spaces = Vec::new();
    let mut regions = Vec::new();
    for block in lines.join("\n").split("\n\n") {
        let block = block.trim_matches('\n').to_string();
        if block.is_empty() {
            continue;
        }
        if block.starts_with("memory-region: ") {
            regions.push(block);
        } else if !block.contains("address-space: VGA") && !block.contains("address-space: e1000") {
            spaces.push(block);
        }
    }
    spaces.sort();
    regions.sort();
    (spaces, regions)
}

fn compare(name: &str, args: &[&str]) {
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let lines = ["info qtree", "info mtree", "info mtree -D"];
    let qemu = hmp_outputs("qemu-system-x86_64", args, &lines);
    let ours = hmp_outputs(env!("CARGO_BIN_EXE_vmscope"), args, &lines);
    let nodefaults = args.contains(&"-nodefaults");
    let qtree = (
        normalise_qtree(&qemu[0], false),
        normalise_qtree(&ours[0], nodefaults),
    );
    assert!(qtree.0.len() > 100, "QEMU: {}", qemu[0]);
    assert_eq!(
        qtree.1.join("\n"),
        qtree.0.join("\n"),
        "\nvmscope:\n{}\nQEMU 7.2:\n{}",
        ours[0],
        qemu[0]
    );
    for i in [1, 2] {
        let theirs = normalise_mtree(&qemu[i], false);
        let mine = normalise_mtree(&ours[i], nodefaults);
        assert!(theirs.0.len() >= 5, "QEMU: {}", qemu[i]);
        assert_eq!(
            mine, theirs,
            "\n{}:\nvmscope:\n{}\nQEMU 7.2:\n{}",
            lines[i], ours[i], qemu[i]
        );
    }
    common::kvm::record_use(name);
}

#[test]
fn qtree_and_mtree_match_qemu_with_nodefaults() {
    compare(
        "qtree_and_mtree_match_qemu_with_nodefaults",
        &["-nodefaults"],
    );
}

#[test]
fn qtree_and_mtree_match_qemu_with_two_cpus_a_disk_and_debugcon() {
    let dir = std::env::temp_dir().join(format!("vmscope-qtree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.raw");
    // 16 MiB: QEMU guesses 32 cylinders, 16 heads, 63 sectors, no translation.
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let drive = format!("file={},format=raw", disk.display());
    let debugcon = format!("file:{}", dir.join("debugcon.txt").display());
    compare(
        "qtree_and_mtree_match_qemu_with_two_cpus_a_disk_and_debugcon",
        &[
            "-nodefaults",
            "-smp",
            "2",
            "-drive",
            &drive,
            "-debugcon",
            &debugcon,
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mtree_matches_qemu_with_ram_above_4g() {
    // 4 GiB: 3 GiB below the PCI hole, the rest at 4 GiB (`ram-above-4g`).
    compare(
        "mtree_matches_qemu_with_ram_above_4g",
        &["-nodefaults", "-m", "4096"],
    );
}

#[test]
fn qtree_and_mtree_match_qemu_with_defaults() {
    compare("qtree_and_mtree_match_qemu_with_defaults", &[]);
}

#[test]
fn mtree_flag_errors_match_qemu() {
    let name = "mtree_flag_errors_match_qemu";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let lines = [
        "info mtree -x",
        "info mtree -D -f",
        "info mtree -fd",
        "info mtree x",
        "info qtree x",
        "help info qtree",
        "help info mtree",
    ];
    let qemu = hmp_outputs("qemu-system-x86_64", &["-nodefaults"], &lines);
    let ours = hmp_outputs(env!("CARGO_BIN_EXE_vmscope"), &["-nodefaults"], &lines);
    assert_eq!(ours, qemu);
    common::kvm::record_use(name);
}

/// A QMP session over a child's stdio, for commands that depend on each other's timing.
struct QmpSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl QmpSession {
    fn start(program: &str, args: &[&str]) -> QmpSession {
        let mut cmd = Command::new(program);
        if program == "qemu-system-x86_64" {
            cmd.args(["-accel", "kvm"]);
        }
        let mut child = cmd
            .args(["-display", "none", "-m", "128"])
            .args(args)
            .args(["-qmp", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut session = QmpSession {
            child,
            stdin,
            lines,
        };
        session.execute("{\"execute\": \"qmp_capabilities\"}");
        session
    }

    /// Sends `request` and returns its reply, skipping the greeting and events.
    fn execute(&mut self, request: &str) -> serde_json::Value {
        writeln!(self.stdin, "{request}").unwrap();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("a reply within 30 s");
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if value.get("return").is_some() || value.get("error").is_some() {
                return value;
            }
        }
    }

    fn hmp(&mut self, line: &str) -> String {
        let reply = self.execute(&format!(
            "{{\"execute\": \"human-monitor-command\", \"arguments\": {{\"command-line\": \"{line}\"}}}}"
        ));
        reply["return"].as_str().expect("HMP text").to_string()
    }

    /// Polls `info mtree` until SeaBIOS made the BIOS segment read-only, which it does last
    /// in its POST (after PCI setup and shadowing).
    fn wait_for_post(&mut self, what: &str) {
        let done = "alias pam-rom @pc.ram 00000000000f0000";
        for _ in 0..240 {
            if self.hmp("info mtree").contains(done) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{what}: SeaBIOS did not finish its POST within 120 s");
    }
}

impl Drop for QmpSession {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{{\"execute\": \"quit\"}}");
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn qtree_and_mtree_match_qemu_after_seabios_ran() {
    let name = "qtree_and_mtree_match_qemu_after_seabios_ran";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmscope-qtree-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let drive = format!("file={},format=raw", disk.display());
    let args = ["-nodefaults", "-drive", &drive];
    let mut qemu = QmpSession::start("qemu-system-x86_64", &args);
    let mut ours = QmpSession::start(env!("CARGO_BIN_EXE_vmscope"), &args);
    qemu.wait_for_post("QEMU");
    ours.wait_for_post("vmscope");
    let (qemu_qtree, ours_qtree) = (qemu.hmp("info qtree"), ours.hmp("info qtree"));
    // The IDE bus-master BAR is where SeaBIOS put it on both.
    assert!(
        qemu_qtree.contains("bar 4: i/o at 0xc000 [0xc00f]"),
        "{qemu_qtree}"
    );
    assert_eq!(
        normalise_qtree(&ours_qtree, true).join("\n"),
        normalise_qtree(&qemu_qtree, false).join("\n"),
        "\nvmscope:\n{ours_qtree}\nQEMU 7.2:\n{qemu_qtree}"
    );
    let (qemu_mtree, ours_mtree) = (qemu.hmp("info mtree"), ours.hmp("info mtree"));
    assert!(qemu_mtree.contains("piix4-pm"), "{qemu_mtree}");
    assert_eq!(
        normalise_mtree(&ours_mtree, true),
        normalise_mtree(&qemu_mtree, false),
        "\nvmscope:\n{ours_mtree}\nQEMU 7.2:\n{qemu_mtree}"
    );
    drop((qemu, ours));
    let _ = std::fs::remove_dir_all(&dir);
    common::kvm::record_use(name);
}
