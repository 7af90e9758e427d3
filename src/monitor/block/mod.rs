//! The block commands of the command layer (QEMU 7.2's texts and shapes): drive and
//! image information (`query-block`, `query-blockstats`), live external snapshots
//! (`blockdev-snapshot-sync`, `snapshot_blkdev`, `transaction`) and block jobs
//! (`block-stream`, `block-commit`, job control, `query-block-jobs`, the job events).
//! HMP and QMP parse their arguments in [`hmp`] and [`qmp`] and call the same functions.

mod gate;
pub(crate) mod hmp;
mod info;
mod jobs;
pub(crate) mod qmp;
mod snapshot;

use std::sync::Arc;

pub use gate::EventGate;
pub use info::{BlockDeviceInfo, BlockInfo, ImageInfo};
pub use jobs::{CommitRequest, StreamRequest};
pub use snapshot::{NewImageMode, SnapshotRequest};

use crate::block::drive::Drive;
use crate::block::job::JobList;
use crate::monitor::commands::{CommandError, ErrorClass, MonitorCommands};

/// Block state the command layer keeps: the job list and the event ordering gate.
#[derive(Default)]
pub struct BlockCommandState {
    pub jobs: Arc<JobList>,
    pub gate: Arc<EventGate>,
}

/// QEMU's `id_wellformed` (job ids, node names): a letter, then letters, digits, `-`,
/// `.`, `_`.
pub(crate) fn id_wellformed(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// QEMU's `bdrv_lookup_bs` error.
pub(crate) fn cannot_find(device: Option<&str>, node: Option<&str>) -> CommandError {
    CommandError::generic(format!(
        "Cannot find device='{}' nor node-name='{}'",
        device.unwrap_or(""),
        node.unwrap_or("")
    ))
}

pub(crate) fn device_not_found(device: &str) -> CommandError {
    CommandError {
        class: ErrorClass::DeviceNotFound,
        desc: format!("Device '{device}' not found"),
    }
}

impl MonitorCommands {
    /// QEMU's `bdrv_lookup_bs(device, node_name)`: a drive by name, else the drive whose
    /// active image has that node name.
    pub(crate) fn lookup_drive(
        &self,
        device: Option<&str>,
        node: Option<&str>,
    ) -> Result<Arc<Drive>, CommandError> {
        if let Some(name) = device {
            if let Some(drive) = self.drives().find(name) {
                return Ok(drive.clone());
            }
        }
        if let Some(name) = node {
            for drive in self.drives().iter() {
                if let Some(n) = drive.node() {
                    if n.chain().first().is_some_and(|l| l.node_name == name) {
                        return Ok(drive.clone());
                    }
                }
            }
        }
        Err(cannot_find(device, node))
    }

    /// QEMU's "busy" check: a job works on the drive.
    pub(crate) fn check_not_busy(&self, drive: &Drive) -> Result<(), CommandError> {
        match self.block_state().jobs.on_drive(drive.id()) {
            Some(job) => Err(CommandError::generic(format!(
                "Node '{}' is busy: block device is in use by block job: {}",
                drive.id(),
                job.kind().as_str()
            ))),
            None => Ok(()),
        }
    }
}

/// A byte count or counter as QEMU prints it (an `int`).
pub(crate) fn int(v: u64) -> crate::monitor::qmp::QObject {
    crate::monitor::qmp::QObject::Int(i64::try_from(v).unwrap_or(i64::MAX))
}
