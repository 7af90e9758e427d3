//! The monitors: one command layer ([`MonitorCommands`]) acting on the machine through
//! [`VmControl`], and front ends over chardevs that call it. HMP ([`Hmp`]) is here; QMP
//! will sit next to it on the same command layer.

mod commands;
mod hmp;
mod run_state;

pub use commands::{CommandError, ErrorClass, MonitorCommands, VmControl};
pub use hmp::Hmp;
pub use run_state::{RunState, StatusInfo};

/// The QEMU version vmscope emulates, as the HMP banner shows it.
pub const QEMU_VERSION: &str = "7.2.0";
