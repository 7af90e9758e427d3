//! The scenarios, selected by name (the first word of the kernel command line).

use crate::start_info::StartInfo;

mod ide;
mod memory;
mod pm_timer;
mod powerbutton;
mod reset;
mod rtc;
mod serial_echo;
mod smp;
mod suspend_disk;
mod timer;

pub type Scenario = fn(&StartInfo);

const ALL: &[(&str, Scenario)] = &[
    ("memory", memory::run),
    ("smp", smp::run),
    ("serial-echo", serial_echo::run),
    ("timer", timer::run),
    ("reset", reset::run),
    ("rtc", rtc::run),
    ("powerbutton", powerbutton::run),
    ("suspend-disk", suspend_disk::run),
    ("ide-probe", ide::run_probe),
    ("ide-pio", ide::run_pio),
    ("ide-dma", ide::run_dma),
    ("ide-48bit", ide::run_48bit),
    ("ide-errors", ide::run_errors),
    ("atapi", ide::run_atapi),
    ("ide-dma-bench", ide::run_dma_bench),
    ("pm-timer", pm_timer::run),
];

pub const NAMES: &[&str] = &[
    "memory",
    "smp",
    "serial-echo",
    "timer",
    "reset",
    "rtc",
    "powerbutton",
    "suspend-disk",
    "ide-probe",
    "ide-pio",
    "ide-dma",
    "ide-48bit",
    "ide-errors",
    "atapi",
    "ide-dma-bench",
    "pm-timer",
];

pub fn find(name: &[u8]) -> Option<Scenario> {
    ALL.iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map(|&(_, run)| run)
}
