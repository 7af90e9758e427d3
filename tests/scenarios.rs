//! Differential tests of the machine: the test kernel of `tests/guest/` runs each scenario
//! on QEMU 7.2 (the reference) and on vmscope with the same command line, and the kernel's
//! serial lines must be identical.
//!
//! Per case there are two tests:
//! - `<case>::qemu` runs QEMU alone and checks its lines against the golden transcript in
//!   `tests/guest/golden/<case>.txt` (verified by reading; it pins what the kernel and the
//!   reference do, so that a kernel which printed nothing could not make the differential
//!   test pass). `VMSCOPE_BLESS=1` rewrites the golden files from QEMU's output instead.
//! - `<case>::vmscope` runs QEMU and vmscope and requires the same lines and exit status.
//!   It needs /dev/kvm: without it, it says `SKIPPED (no /dev/kvm)` and passes.
//!
//! QEMU runs with `-accel tcg` (`VMSCOPE_QEMU_ACCEL` overrides, for investigation only: the
//! golden files are TCG's, and under `-accel kvm` QEMU's memory map has one more reserved
//! entry, 0xfeffc000-0xfeffffff for KVM's TSS and identity map); vmscope gets the same
//! arguments without `-accel`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::guest_kernel::{kernel_lines, test_kernel};
use common::machine_run::{self, RunResult, SerialInput};
use common::{kvm, qemu};

const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// vmscope's guest code is emulated by the KVM here (about 1M instructions/s).
const VMSCOPE_TIMEOUT: Duration = Duration::from_secs(120);

struct Case {
    name: &'static str,
    scenario: &'static str,
    smp: u32,
    /// A full `-smp` value with topology, instead of the bare vCPU count.
    topology: Option<&'static str>,
    /// `-m`, when not the default (128 MiB).
    memory: Option<&'static str>,
    /// `-no-reboot`: a guest reset ends the process (status 0) instead of rebooting.
    no_reboot: bool,
    /// Lines typed on the serial console once the kernel says it is ready.
    input: Option<SerialInput>,
}

impl Case {
    fn new(name: &'static str, scenario: &'static str, smp: u32) -> Case {
        Case {
            name,
            scenario,
            smp,
            topology: None,
            memory: None,
            no_reboot: false,
            input: None,
        }
    }

    fn topology(mut self, smp: &'static str) -> Case {
        self.topology = Some(smp);
        self
    }

    fn memory(mut self, size: &'static str) -> Case {
        self.memory = Some(size);
        self
    }

    fn no_reboot(mut self) -> Case {
        self.no_reboot = true;
        self
    }

    fn input(mut self, after: &str, input: &str) -> Case {
        self.input = Some(SerialInput {
            after: after.to_owned(),
            input: input.to_owned(),
        });
        self
    }

    /// The arguments both machines get.
    fn machine_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-nographic".into(),
            "-no-user-config".into(),
            "-kernel".into(),
            test_kernel().display().to_string(),
            "-append".into(),
            self.scenario.into(),
            "-smp".into(),
            self.topology
                .map_or_else(|| self.smp.to_string(), str::to_string),
        ];
        if let Some(size) = self.memory {
            args.extend(["-m".into(), size.into()]);
        }
        if self.no_reboot {
            args.push("-no-reboot".into());
        }
        args
    }

    fn golden_path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/guest/golden")
            .join(format!("{}.txt", self.name))
    }

    fn run_qemu(&self) -> RunResult {
        let mut args = vec!["-accel".to_owned(), qemu::accel()];
        args.extend(self.machine_args());
        machine_run::run(qemu::binary(), &args, self.input.as_ref(), QEMU_TIMEOUT)
    }

    fn run_vmscope(&self) -> RunResult {
        let vmscope = PathBuf::from(env!("CARGO_BIN_EXE_vmscope"));
        machine_run::run(
            &vmscope,
            &self.machine_args(),
            self.input.as_ref(),
            VMSCOPE_TIMEOUT,
        )
    }
}

/// QEMU's kernel lines, after checking that QEMU exited normally.
fn qemu_lines(case: &Case) -> (RunResult, Vec<String>) {
    let run = case.run_qemu();
    assert_eq!(
        run.exit(),
        Ok(0),
        "QEMU did not finish the scenario\n{}",
        run.describe()
    );
    let lines = kernel_lines(&run.stdout);
    (run, lines)
}

fn check_qemu(case: &Case) {
    let (run, lines) = qemu_lines(case);
    let golden_path = case.golden_path();
    let mut text = lines.join("\n");
    text.push('\n');
    if std::env::var_os("VMSCOPE_BLESS").is_some() {
        std::fs::write(&golden_path, &text)
            .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
        return;
    }
    let golden = std::fs::read_to_string(&golden_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (VMSCOPE_BLESS=1 writes it from QEMU's output)",
            golden_path.display()
        )
    });
    assert!(
        text == golden,
        "QEMU's kernel lines differ from {}\n--- golden ---\n{golden}--- QEMU ---\n{text}\n{}",
        golden_path.display(),
        run.describe()
    );
}

fn check_vmscope(case: &Case) {
    let test = format!("scenarios::{}::vmscope", case.name);
    if !kvm::require(&test) {
        return;
    }
    let (qemu_run, expected) = qemu_lines(case);
    let run = case.run_vmscope();
    let lines = kernel_lines(&run.stdout);
    assert!(
        lines == expected && run.exit() == qemu_run.exit(),
        "vmscope differs from QEMU 7.2\n{}\n=== vmscope ===\n{}\n=== QEMU ===\n{}",
        line_diff(&expected, &lines),
        run.describe(),
        qemu_run.describe()
    );
    kvm::record_use(&test);
}

/// The lines side by side, marking the first difference.
fn line_diff(qemu: &[String], vmscope: &[String]) -> String {
    let mut out = String::from("kernel lines (QEMU | vmscope):\n");
    let mut marked = false;
    for i in 0..qemu.len().max(vmscope.len()) {
        let q = qemu.get(i).map_or("<none>", String::as_str);
        let v = vmscope.get(i).map_or("<none>", String::as_str);
        let mark = if q != v && !marked {
            marked = true;
            ">>"
        } else {
            "  "
        };
        out.push_str(&format!("{mark} {q:<60} | {v}\n"));
    }
    out
}

const ECHO_READY: &str = "serial-echo: ready";
const ECHO_INPUT: &str = "hello\nsecond line, with words\r\n\nquit\n";

macro_rules! scenario_tests {
    ($($name:ident => $case:expr;)*) => {
        $(
            mod $name {
                use super::*;

                fn case() -> Case {
                    let name = stringify!($name);
                    $case(name)
                }

                #[test]
                fn qemu() {
                    check_qemu(&case());
                }

                #[test]
                fn vmscope() {
                    check_vmscope(&case());
                }
            }
        )*
    };
}

scenario_tests! {
    memory_smp1 => |n| Case::new(n, "memory", 1);
    memory_smp4 => |n| Case::new(n, "memory", 4);
    memory_512m => |n| Case::new(n, "memory", 1).memory("512M");
    memory_1g => |n| Case::new(n, "memory", 1).memory("1G");
    memory_3g => |n| Case::new(n, "memory", 1).memory("3G");
    memory_4g => |n| Case::new(n, "memory", 1).memory("4G");
    memory_6g_smp4 => |n| Case::new(n, "memory", 4).memory("6G");
    smp_smp1 => |n| Case::new(n, "smp", 1);
    smp_smp4 => |n| Case::new(n, "smp", 4);
    // APIC ids encode sockets, cores and threads with power-of-two widths: 2 sockets of 3
    // cores number 0-2 and 4-6.
    smp_2_sockets_3_cores => |n| Case::new(n, "smp", 6).topology("6,sockets=2,cores=3");
    smp_2_cores_2_threads => |n| Case::new(n, "smp", 4).topology("4,sockets=1,cores=2,threads=2");
    // ACPI PM timer overflow SCIs (TMR_EN), through the SCI route the tables give.
    pm_timer => |n| Case::new(n, "pm-timer", 1);
    // Possible but absent vCPUs are in the MADT, disabled.
    smp_maxcpus => |n| Case::new(n, "smp", 2).topology("2,maxcpus=4");
    serial_echo_smp1 => |n| Case::new(n, "serial-echo", 1).input(ECHO_READY, ECHO_INPUT);
    serial_echo_smp4 => |n| Case::new(n, "serial-echo", 4).input(ECHO_READY, ECHO_INPUT);
    timer_smp1 => |n| Case::new(n, "timer", 1);
    timer_smp4 => |n| Case::new(n, "timer", 4);
    reset_smp1 => |n| Case::new(n, "reset", 1);
    reset_smp4 => |n| Case::new(n, "reset", 4);
    reset_no_reboot_smp1 => |n| Case::new(n, "reset", 1).no_reboot();
    reset_no_reboot_smp4 => |n| Case::new(n, "reset", 4).no_reboot();
    unknown_scenario => |n| Case::new(n, "no-such-scenario", 1);
}
