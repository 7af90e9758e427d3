//! The scenarios, selected by name (the first word of the kernel command line).

use crate::start_info::StartInfo;

mod memory;
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
];

pub fn find(name: &[u8]) -> Option<Scenario> {
    ALL.iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map(|&(_, run)| run)
}
