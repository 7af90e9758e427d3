//! The block job commands: `block-stream`, `block-commit`, HMP `commit`, job control and
//! `query-block-jobs`, and the conversion of job reports into QEMU's events.

use std::sync::Arc;
use std::time::Duration;

use super::{cannot_find, device_not_found, id_wellformed, int};
use crate::block::drive::Drive;
use crate::block::job::{
    CommitWork, HmpCommit, Job, JobEvent, JobEventSink, JobInfo, JobSpec, JobType, StreamWork,
};
use crate::block::node::BlockNode;
use crate::monitor::commands::{CommandError, ErrorClass, MonitorCommands};
use crate::monitor::qmp::QDict;

/// `block-stream` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    pub job_id: Option<String>,
    pub device: String,
    pub base: Option<String>,
    pub base_node: Option<String>,
    pub backing_file: Option<String>,
    pub speed: Option<i64>,
}

/// `block-commit` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitRequest {
    pub job_id: Option<String>,
    pub device: String,
    pub base_node: Option<String>,
    pub base: Option<String>,
    pub top_node: Option<String>,
    pub top: Option<String>,
    pub backing_file: Option<String>,
    pub speed: Option<i64>,
}

/// How long job commands wait for a job to react (cancel) before answering anyway.
const JOB_REACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long pause and resume wait for the job to get there (one chunk at most).
const JOB_PAUSE_WAIT: Duration = Duration::from_secs(5);

/// QEMU's `bdrv_find_backing_image`: the layer below the active one that `name` refers
/// to, as the header above it names it, as it was opened, or as the same file.
fn find_backing_image(node: &BlockNode, from: usize, name: &str) -> Option<usize> {
    let layers = node.chain();
    // An absolute name also matches the same file reached through another path.
    let wanted = std::path::Path::new(name)
        .is_absolute()
        .then(|| std::fs::canonicalize(name).ok())
        .flatten();
    for depth in from + 1..layers.len() {
        let above = &layers[depth - 1];
        let layer = &layers[depth];
        let by_header = above.current_backing().0.as_deref() == Some(name);
        let by_name = layer.filename.to_string_lossy() == name;
        let by_file = wanted.is_some() && std::fs::canonicalize(&layer.filename).ok() == wanted;
        if by_header || by_name || by_file {
            return Some(depth);
        }
    }
    None
}

fn node_index(node: &BlockNode, node_name: &str) -> Option<usize> {
    node.chain().iter().position(|l| l.node_name == node_name)
}

fn job_data(info: &JobInfo) -> QDict {
    QDict::new()
        .with("type", info.kind.as_str())
        .with("device", info.id.as_str())
        .with("len", int(info.len))
        .with("offset", int(info.offset))
        .with("speed", int(info.speed))
}

impl MonitorCommands {
    /// The event sink of the jobs started here: QEMU's job events, ordered after the
    /// reply of the command in progress.
    fn job_sink(&self) -> JobEventSink {
        let gate = self.block_state().gate.clone();
        let events = self.events_arc();
        Arc::new(move |event: JobEvent| {
            let (name, data) = match event {
                JobEvent::StatusChange { id, status } => (
                    "JOB_STATUS_CHANGE",
                    QDict::new()
                        .with("id", id.as_str())
                        .with("status", status.as_str()),
                ),
                JobEvent::Ready(info) => ("BLOCK_JOB_READY", job_data(&info)),
                JobEvent::Completed(info) => {
                    let mut data = job_data(&info);
                    if let Some(e) = &info.error {
                        if !e.is_empty() {
                            data.put("error", e.as_str());
                        }
                    }
                    ("BLOCK_JOB_COMPLETED", data)
                }
                JobEvent::Cancelled(info) => ("BLOCK_JOB_CANCELLED", job_data(&info)),
                JobEvent::IoError { id, write } => (
                    "BLOCK_JOB_ERROR",
                    QDict::new()
                        .with("device", id.as_str())
                        .with("operation", if write { "write" } else { "read" })
                        .with("action", "report"),
                ),
            };
            gate.emit(&events, name, Some(data));
        })
    }

    /// QEMU's job creation checks (id, speed), then the start.
    fn start_job(
        &self,
        drive: &Drive,
        job_id: Option<&str>,
        kind: JobType,
        speed: Option<i64>,
        work: Box<dyn crate::block::job::JobWork>,
    ) -> Result<(), CommandError> {
        let id = job_id.unwrap_or(drive.id()).to_string();
        if job_id.is_some() && !id_wellformed(&id) {
            return Err(CommandError::generic(format!("Invalid job ID '{id}'")));
        }
        let state = self.block_state();
        if state.jobs.find(&id).is_some() {
            return Err(CommandError::generic(format!(
                "Job ID '{id}' already in use"
            )));
        }
        let speed = speed.unwrap_or(0);
        if speed < 0 {
            // QEMU creates the job before it checks the speed, then drops it.
            let sink = self.job_sink();
            for status in [
                crate::block::job::JobStatus::Created,
                crate::block::job::JobStatus::Null,
            ] {
                sink(JobEvent::StatusChange {
                    id: id.clone(),
                    status,
                });
            }
            return Err(CommandError::generic(
                "Parameter 'speed' expects a non-negative value",
            ));
        }
        let spec = JobSpec {
            id,
            kind,
            drive: drive.id().to_string(),
            speed: speed as u64,
        };
        state
            .jobs
            .start(spec, work, self.job_sink())
            .map(|_| ())
            .map_err(|e| CommandError::generic(format!("Could not start the job thread: {e}")))
    }

    /// `block-stream` / `block_stream`.
    pub fn block_stream(&self, r: &StreamRequest) -> Result<(), CommandError> {
        if r.base.is_some() && r.base_node.is_some() {
            return Err(CommandError::generic(
                "'base' and 'base-node' cannot be specified at the same time",
            ));
        }
        let drive = self.lookup_drive(Some(&r.device), Some(&r.device))?;
        let node = drive.node().ok_or_else(|| {
            CommandError::generic(format!("Device '{}' has no medium", drive.id()))
        })?;
        let chain_len = node.chain_len();
        let base_depth = if let Some(base) = &r.base {
            find_backing_image(&node, 0, base).ok_or_else(|| {
                CommandError::generic(format!("Can't find '{base}' in the backing chain"))
            })?
        } else if let Some(base_node) = &r.base_node {
            let depth =
                node_index(&node, base_node).ok_or_else(|| cannot_find(None, Some(base_node)))?;
            if depth == 0 {
                return Err(CommandError::generic(format!(
                    "Node '{base_node}' is not a backing image of '{}'",
                    r.device
                )));
            }
            depth
        } else {
            chain_len
        };
        self.check_not_busy(&drive)?;
        if node.is_read_only() {
            // QEMU 7.2 reopens the image read-write for the job; vmscope does not.
            return Err(CommandError::generic(format!(
                "vmscope cannot stream into the read-only drive '{}'",
                drive.id()
            )));
        }
        let new_backing = if base_depth < chain_len {
            let layers = node.chain();
            let base = &layers[base_depth];
            let name = r
                .backing_file
                .clone()
                .unwrap_or_else(|| base.filename.to_string_lossy().into_owned());
            Some((name, base.format()))
        } else {
            None
        };
        let work = StreamWork::new(node, base_depth, new_backing)
            .map_err(|e| CommandError::generic(e.to_string()))?;
        self.start_job(
            &drive,
            r.job_id.as_deref(),
            JobType::Stream,
            r.speed,
            Box::new(work),
        )
    }

    /// `block-commit`.
    pub fn block_commit(&self, r: &CommitRequest) -> Result<(), CommandError> {
        let drive = self
            .lookup_drive(Some(&r.device), Some(&r.device))
            .map_err(|_| device_not_found(&r.device))?;
        let node = drive.node().ok_or_else(|| device_not_found(&r.device))?;
        if self
            .block_state()
            .jobs
            .on_drive(drive.id())
            .is_some_and(|j| j.kind() == JobType::Commit)
        {
            // QEMU 7.2's commit job puts a filter node on top of the drive, so the drive no
            // longer starts at a root node.
            return Err(CommandError::generic("Need a root block node"));
        }
        self.check_not_busy(&drive)?;
        let layers = node.chain();
        let top = if let Some(top_node) = &r.top_node {
            node_index(&node, top_node).ok_or_else(|| cannot_find(None, Some(top_node)))?
        } else if let Some(top) = &r.top {
            if layers[0].filename.to_string_lossy() == top.as_str() {
                0
            } else {
                find_backing_image(&node, 0, top).ok_or_else(|| {
                    CommandError::generic(format!("Top image file {top} not found"))
                })?
            }
        } else {
            0
        };
        let base = if let Some(base_node) = &r.base_node {
            let depth =
                node_index(&node, base_node).ok_or_else(|| cannot_find(None, Some(base_node)))?;
            if depth <= top {
                return Err(CommandError::generic(format!(
                    "Node '{base_node}' is not a backing image of '{}'",
                    layers[top].node_name
                )));
            }
            depth
        } else if let Some(base) = &r.base {
            find_backing_image(&node, top, base).ok_or_else(|| {
                CommandError::generic(format!("Can't find '{base}' in the backing chain"))
            })?
        } else {
            layers.len() - 1
        };
        if base == top {
            return Err(CommandError::generic("cannot commit an image into itself"));
        }
        if r.backing_file.is_some() {
            return Err(CommandError::generic(
                "vmscope does not implement block-commit's 'backing-file'",
            ));
        }
        let work =
            CommitWork::new(node, top, base).map_err(|e| CommandError::generic(e.to_string()))?;
        self.start_job(
            &drive,
            r.job_id.as_deref(),
            JobType::Commit,
            r.speed,
            Box::new(work),
        )
    }

    /// HMP `commit DEVICE|all`: QEMU 7.2's synchronous commit of the active image into its
    /// backing file. The text is what HMP prints (no `Error:` prefix, as QEMU).
    pub fn hmp_commit(&self, device: &str) -> Result<(), String> {
        let commit = |drive: &Drive, node: &BlockNode, name: &str| -> Result<(), String> {
            let unsupported = || format!("'commit' error for '{name}': Operation not supported");
            // Nothing to commit into without a backing file.
            if node.chain_len() < 2 {
                return Err(unsupported());
            }
            if node.is_read_only() {
                return Err(format!(
                    "Block node is read-only\n'commit' error for '{name}': Operation not permitted"
                ));
            }
            if self.block_state().jobs.on_drive(drive.id()).is_some() {
                return Err(format!(
                    "'commit' error for '{name}': Device or resource busy"
                ));
            }
            HmpCommit::run(node).map_err(|e| format!("'commit' error for '{name}': {e}"))
        };
        if device == "all" {
            for drive in self.drives().iter() {
                if let Some(node) = drive.node() {
                    if node.chain_len() > 1 {
                        commit(drive, &node, "all")?;
                    }
                }
            }
            return Ok(());
        }
        let Some(drive) = self.drives().find(device).cloned() else {
            return Err(format!("Device '{device}' not found"));
        };
        let Some(node) = drive.node() else {
            return Err(format!("Device '{device}' has no medium"));
        };
        commit(&drive, &node, device)
    }

    fn find_job(&self, id: &str) -> Result<Arc<Job>, CommandError> {
        self.block_state()
            .jobs
            .find(id)
            .ok_or_else(|| CommandError {
                class: ErrorClass::DeviceNotActive,
                desc: format!("Block job '{id}' not found"),
            })
    }

    /// `block-job-cancel`: answers once the job has ended, its events sent first (as
    /// QEMU, whose job finishes within the command).
    pub fn block_job_cancel(&self, id: &str, force: bool) -> Result<(), CommandError> {
        let job = self.find_job(id)?;
        job.cancel(force)
            .map_err(|e| CommandError::generic(e.to_string()))?;
        let state = self.block_state();
        let events = self.events_arc();
        state.gate.open_until(&events, id, &["null"], || {
            job.wait_finished(JOB_REACTION_TIMEOUT)
        });
        Ok(())
    }

    /// `block-job-pause`: QEMU's job reaches its pause point (and says so) before the
    /// command returns, unless it is in the middle of a copy.
    pub fn block_job_pause(&self, id: &str) -> Result<(), CommandError> {
        let job = self.find_job(id)?;
        job.pause()
            .map_err(|e| CommandError::generic(e.to_string()))?;
        let events = self.events_arc();
        self.block_state()
            .gate
            .open_until(&events, id, &["paused", "standby"], || {
                job.wait_paused(JOB_PAUSE_WAIT)
            });
        Ok(())
    }

    /// `block-job-resume`: the job runs again before the command returns.
    pub fn block_job_resume(&self, id: &str) -> Result<(), CommandError> {
        let job = self.find_job(id)?;
        job.resume()
            .map_err(|e| CommandError::generic(e.to_string()))?;
        let events = self.events_arc();
        self.block_state()
            .gate
            .open_until(&events, id, &["running", "ready"], || {
                job.wait_running(JOB_PAUSE_WAIT)
            });
        Ok(())
    }

    /// `block-job-complete`.
    pub fn block_job_complete(&self, id: &str) -> Result<(), CommandError> {
        self.find_job(id)?
            .complete()
            .map_err(|e| CommandError::generic(e.to_string()))
    }

    /// `block-job-set-speed`.
    pub fn block_job_set_speed(&self, id: &str, speed: i64) -> Result<(), CommandError> {
        self.find_job(id)?
            .set_speed(speed)
            .map_err(|e| CommandError::generic(e.to_string()))
    }

    /// `query-block-jobs`.
    pub fn query_block_jobs(&self) -> Vec<JobInfo> {
        self.block_state()
            .jobs
            .list()
            .iter()
            .map(|j| j.info())
            .collect()
    }
}

/// `BlockJobInfo` as JSON (QAPI order).
pub(crate) fn job_info_json(info: &JobInfo) -> QDict {
    QDict::new()
        .with("type", info.kind.as_str())
        .with("device", info.id.as_str())
        .with("len", int(info.len))
        .with("offset", int(info.offset))
        .with("busy", info.busy)
        .with("paused", info.paused)
        .with("speed", int(info.speed))
        .with("io-status", "ok")
        .with("ready", info.ready)
        .with("status", info.status.as_str())
        .with("auto-finalize", true)
        .with("auto-dismiss", true)
}

/// `info block-jobs`.
pub(crate) fn info_block_jobs_text(jobs: &[JobInfo]) -> String {
    if jobs.is_empty() {
        return "No active jobs\n".into();
    }
    let mut out = String::new();
    for j in jobs {
        if j.kind == JobType::Stream {
            out.push_str(&format!(
                "Streaming device {}: Completed {} of {} bytes, speed limit {} bytes/s\n",
                j.id, j.offset, j.len, j.speed
            ));
        } else {
            out.push_str(&format!(
                "Type {}, device {}: Completed {} of {} bytes, speed limit {} bytes/s\n",
                j.kind.as_str(),
                j.id,
                j.offset,
                j.len,
                j.speed
            ));
        }
    }
    out
}
