//! The monitors: one command layer ([`MonitorCommands`]) acting on the machine through
//! [`VmControl`], and two front ends over chardevs that call it: HMP ([`Hmp`]) and QMP
//! ([`Qmp`]). Events (`STOP`, `SHUTDOWN`, …) go through [`MonitorEvents`] to every QMP
//! monitor.

pub mod block;
mod commands;
mod hmp;
mod mtree;
pub mod qmp;
mod qom_order;
mod qtree;
mod registers;
mod run_state;

pub use commands::{CommandError, ErrorClass, MonitorCommands, SystemReset, VcpuInfo, VmControl};
pub use hmp::Hmp;
pub use qmp::{MonitorEvents, Qmp};
pub use registers::VcpuRegisters;
pub use run_state::{RunState, StatusInfo};

/// The QEMU version vmscope emulates, as the HMP banner shows it.
pub const QEMU_VERSION: &str = "7.2.0";

/// The same version as (major, minor, micro), for QMP.
pub const QEMU_VERSION_TRIPLE: (i64, i64, i64) = (7, 2, 0);

/// The `package` string of QMP's version information.
pub const QEMU_PACKAGE: &str = concat!("vmscope ", env!("CARGO_PKG_VERSION"));
