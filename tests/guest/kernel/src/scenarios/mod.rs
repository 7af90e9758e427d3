//! The scenarios, selected by name (the first word of the kernel command line).

use crate::start_info::StartInfo;

mod memory;
mod powerbutton;
mod reset;
mod serial_echo;
mod smp;
mod timer;

pub type Scenario = fn(&StartInfo);

const ALL: &[(&str, Scenario)] = &[
    ("memory", memory::run),
    ("smp", smp::run),
    ("serial-echo", serial_echo::run),
    ("timer", timer::run),
    ("reset", reset::run),
    ("powerbutton", powerbutton::run),
];

pub const NAMES: &[&str] = &[
    "memory",
    "smp",
    "serial-echo",
    "timer",
    "reset",
    "powerbutton",
];

pub fn find(name: &[u8]) -> Option<Scenario> {
    ALL.iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map(|&(_, run)| run)
}
