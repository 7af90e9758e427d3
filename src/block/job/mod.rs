//! Background block jobs (QEMU's `block-stream` and `block-commit`): each runs on its own
//! thread, copies in chunks with a rate limit, can be paused, resumed, cancelled and (when
//! it waits for it) completed, and reports QEMU's job status transitions through an event
//! sink. What a job copies is its [`JobWork`]; this module only drives the life cycle:
//!
//! `created → running ⇄ paused → (ready →) waiting → pending → concluded → null`, or
//! `… → aborting → concluded → null` on cancel or error.

mod commit;
mod rate_limit;
mod stream;

pub use commit::{CommitWork, HmpCommit};
pub use stream::StreamWork;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::BlockResult;
use rate_limit::RateLimit;

/// QEMU's `JobType` (the ones vmscope runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobType {
    Stream,
    Commit,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Stream => "stream",
            JobType::Commit => "commit",
        }
    }
}

/// QEMU's `JobStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Created,
    Running,
    Paused,
    Ready,
    Standby,
    Waiting,
    Pending,
    Aborting,
    Concluded,
    Null,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Ready => "ready",
            JobStatus::Standby => "standby",
            JobStatus::Waiting => "waiting",
            JobStatus::Pending => "pending",
            JobStatus::Aborting => "aborting",
            JobStatus::Concluded => "concluded",
            JobStatus::Null => "null",
        }
    }
}

/// A job as `query-block-jobs` and the job events show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub kind: JobType,
    pub len: u64,
    pub offset: u64,
    pub speed: u64,
    pub busy: bool,
    pub paused: bool,
    pub ready: bool,
    pub status: JobStatus,
    /// The error that ended the job, if any (`BLOCK_JOB_COMPLETED`'s `error`).
    pub error: Option<String>,
}

/// What a job reports, in order; the monitor turns these into QMP events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    StatusChange {
        id: String,
        status: JobStatus,
    },
    Ready(JobInfo),
    Completed(JobInfo),
    Cancelled(JobInfo),
    /// An I/O error stopped the job (`on-error=report`); `write` tells which side failed.
    IoError {
        id: String,
        write: bool,
    },
}

/// Receives a job's events (from the job's thread, or from the thread of the command that
/// started, cancelled or completed it).
pub type JobEventSink = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// Why a step failed: QEMU's `BLOCK_JOB_ERROR` tells reads from writes.
#[derive(Debug)]
pub struct StepError {
    pub write: bool,
    pub error: super::BlockError,
}

/// What a job copies.
pub trait JobWork: Send + 'static {
    /// QEMU's `len` at start (progress total).
    fn total_len(&self) -> u64;
    /// True when there is nothing to go through at all: QEMU then finishes the job before
    /// the starting command returns.
    fn is_trivial(&self) -> bool {
        false
    }
    /// Goes through the range at `offset` (at most one chunk). Returns the progress made
    /// and the bytes actually copied (those count against the speed limit).
    fn step(&mut self, offset: u64) -> Result<(u64, u64), StepError>;
    /// Whether the job goes `ready` once through and waits for `block-job-complete`
    /// (active commit), rather than finishing by itself.
    fn waits_for_completion(&self) -> bool {
        false
    }
    /// Called now and then while the job is `ready` (active commit keeps the base in
    /// step with guest writes, so the final switch has little left to copy).
    fn sync_while_ready(&mut self) -> BlockResult<()> {
        Ok(())
    }
    /// The final switch of a successful job (backing file rewrite, pivot).
    fn finish(&mut self) -> BlockResult<()>;
}

#[derive(Debug)]
struct State {
    status: JobStatus,
    len: u64,
    offset: u64,
    speed: u64,
    busy: bool,
    /// `block-job-pause` is in effect (0 or 1, as QEMU's `user_paused`).
    user_pauses: u32,
    cancel: bool,
    force_cancel: bool,
    complete: bool,
    /// The job thread has ended (the job is gone from the list).
    finished: bool,
    /// The speed changed: the rate limit restarts.
    speed_changed: bool,
    /// Drains in progress (QEMU pauses jobs while a command drains their node).
    drains: u32,
}

impl State {
    fn wants_pause(&self) -> bool {
        self.user_pauses > 0 || self.drains > 0
    }
}

/// One running job.
pub struct Job {
    id: String,
    kind: JobType,
    /// The drive whose node the job works on (busy while the job exists).
    drive: String,
    state: Mutex<State>,
    wake: Condvar,
    sink: JobEventSink,
}

/// Errors of the job-control commands, with QEMU's texts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobControlError {
    #[error("Job '{0}' in state '{1}' cannot accept command verb '{2}'")]
    BadState(String, &'static str, &'static str),
    #[error("Job is already paused")]
    AlreadyPaused,
    #[error("Can't resume a job that was not paused")]
    NotPaused,
    #[error("Parameter 'speed' expects a non-negative value")]
    NegativeSpeed,
}

impl Job {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn drive(&self) -> &str {
        &self.drive
    }

    pub fn kind(&self) -> JobType {
        self.kind
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job's current state for `query-block-jobs`.
    pub fn info(&self) -> JobInfo {
        let st = self.lock();
        self.info_of(&st, None)
    }

    fn info_of(&self, st: &State, error: Option<String>) -> JobInfo {
        JobInfo {
            id: self.id.clone(),
            kind: self.kind,
            len: st.len,
            offset: st.offset,
            speed: st.speed,
            busy: st.busy,
            paused: st.user_pauses > 0,
            ready: matches!(st.status, JobStatus::Ready | JobStatus::Standby),
            status: st.status,
            error,
        }
    }

    fn set_status(&self, st: &mut State, status: JobStatus) {
        st.status = status;
        (self.sink)(JobEvent::StatusChange {
            id: self.id.clone(),
            status,
        });
    }

    /// `block-job-set-speed`.
    pub fn set_speed(&self, speed: i64) -> Result<(), JobControlError> {
        if speed < 0 {
            return Err(JobControlError::NegativeSpeed);
        }
        let mut st = self.lock();
        st.speed = speed as u64;
        st.speed_changed = true;
        self.wake.notify_all();
        Ok(())
    }

    /// `block-job-pause`: the job stops at its next pause point.
    pub fn pause(&self) -> Result<(), JobControlError> {
        let mut st = self.lock();
        if matches!(
            st.status,
            JobStatus::Waiting
                | JobStatus::Pending
                | JobStatus::Aborting
                | JobStatus::Concluded
                | JobStatus::Null
        ) {
            return Err(JobControlError::BadState(
                self.id.clone(),
                st.status.as_str(),
                "pause",
            ));
        }
        if st.user_pauses > 0 {
            return Err(JobControlError::AlreadyPaused);
        }
        st.user_pauses = 1;
        self.wake.notify_all();
        Ok(())
    }

    /// `block-job-resume`.
    pub fn resume(&self) -> Result<(), JobControlError> {
        let mut st = self.lock();
        if matches!(
            st.status,
            JobStatus::Waiting
                | JobStatus::Pending
                | JobStatus::Aborting
                | JobStatus::Concluded
                | JobStatus::Null
        ) {
            return Err(JobControlError::BadState(
                self.id.clone(),
                st.status.as_str(),
                "resume",
            ));
        }
        if st.user_pauses == 0 {
            return Err(JobControlError::NotPaused);
        }
        st.user_pauses -= 1;
        self.wake.notify_all();
        Ok(())
    }

    /// `block-job-complete`: only a `ready` job accepts it.
    pub fn complete(&self) -> Result<(), JobControlError> {
        let mut st = self.lock();
        if st.status != JobStatus::Ready && st.status != JobStatus::Standby {
            return Err(JobControlError::BadState(
                self.id.clone(),
                st.status.as_str(),
                "complete",
            ));
        }
        st.complete = true;
        self.wake.notify_all();
        Ok(())
    }

    /// `block-job-cancel`. A ready job cancelled without `force` ends as completed
    /// without its final switch, as QEMU's mirror-based jobs do.
    pub fn cancel(&self, force: bool) -> Result<(), JobControlError> {
        let mut st = self.lock();
        if matches!(
            st.status,
            JobStatus::Aborting | JobStatus::Concluded | JobStatus::Null
        ) {
            return Err(JobControlError::BadState(
                self.id.clone(),
                st.status.as_str(),
                "cancel",
            ));
        }
        st.cancel = true;
        st.force_cancel |= force;
        self.wake.notify_all();
        Ok(())
    }

    /// Waits until the job thread has ended (after a cancel or complete), at most
    /// `timeout`: QEMU's job commands return once the job reacted.
    pub fn wait_finished(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.finished {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until a resumed job runs again (or has ended), at most `timeout`.
    pub fn wait_running(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.finished && matches!(st.status, JobStatus::Paused | JobStatus::Standby) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A command drains the job's node (QEMU's `bdrv_drained_begin`/`_end` around a
    /// snapshot): the job pauses at its next pause point for the duration of `f`, and runs
    /// again before this returns. A job already paused by the user stays as it is.
    pub fn drained<R>(&self, f: impl FnOnce() -> R) -> R {
        const BOUND: Duration = Duration::from_secs(30);
        let deadline = Instant::now() + BOUND;
        let mut st = self.lock();
        let visible = st.user_pauses == 0
            && matches!(st.status, JobStatus::Running | JobStatus::Ready)
            && !st.finished;
        st.drains += 1;
        self.wake.notify_all();
        while visible
            && !st.finished
            && !matches!(st.status, JobStatus::Paused | JobStatus::Standby)
            && Instant::now() < deadline
        {
            st = self
                .wake
                .wait_timeout(st, deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(st);
        let result = f();
        let mut st = self.lock();
        st.drains -= 1;
        self.wake.notify_all();
        while visible
            && !st.finished
            && matches!(st.status, JobStatus::Paused | JobStatus::Standby)
            && Instant::now() < deadline
        {
            st = self
                .wake
                .wait_timeout(st, deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        result
    }

    /// Waits until the job has paused or ended (for `block-job-pause`), at most `timeout`.
    pub fn wait_paused(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.finished && !matches!(st.status, JobStatus::Paused | JobStatus::Standby) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The jobs of a VM (QEMU's job list): job ids are unique, and a drive is busy while a
/// job works on it.
#[derive(Default)]
pub struct JobList {
    jobs: Mutex<Vec<Arc<Job>>>,
}

/// What to start.
pub struct JobSpec {
    pub id: String,
    pub kind: JobType,
    pub drive: String,
    pub speed: u64,
}

impl JobList {
    pub fn new() -> JobList {
        JobList::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All jobs, in creation order.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.lock().clone()
    }

    /// The job with id `id`.
    pub fn find(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| j.id == id).cloned()
    }

    /// The job working on drive `drive`, if any.
    pub fn on_drive(&self, drive: &str) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| j.drive == drive).cloned()
    }

    /// Creates the job, reports `created` and `running`, and runs it: on a new thread, or
    /// (when there is nothing to do) to the end before returning, as QEMU does.
    pub fn start(
        self: &Arc<Self>,
        spec: JobSpec,
        work: Box<dyn JobWork>,
        sink: JobEventSink,
    ) -> std::io::Result<Arc<Job>> {
        let job = Arc::new(Job {
            id: spec.id,
            kind: spec.kind,
            drive: spec.drive,
            state: Mutex::new(State {
                status: JobStatus::Created,
                len: 0,
                offset: 0,
                speed: spec.speed,
                busy: true,
                user_pauses: 0,
                cancel: false,
                force_cancel: false,
                complete: false,
                finished: false,
                speed_changed: false,
                drains: 0,
            }),
            wake: Condvar::new(),
            sink,
        });
        self.lock().push(job.clone());
        {
            let mut st = job.lock();
            job.set_status(&mut st, JobStatus::Created);
            job.set_status(&mut st, JobStatus::Running);
            if !work.is_trivial() {
                st.len = work.total_len();
            }
        }
        if work.is_trivial() {
            run(self, &job, work);
            return Ok(job);
        }
        let list = self.clone();
        let thread_job = job.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("job-{}", job.id))
            .spawn(move || run(&list, &thread_job, work));
        if let Err(e) = spawned {
            self.lock().retain(|j| !Arc::ptr_eq(j, &job));
            return Err(e);
        }
        Ok(job)
    }
}

/// How the copy phase ended.
enum Outcome {
    Done,
    Cancelled,
    /// A ready job cancelled without `force`: it ends as completed, without its switch.
    ReadyCancelled,
    Failed(String),
}

/// The job thread: copy, (wait for completion,) finish, report, leave the list.
fn run(list: &Arc<JobList>, job: &Arc<Job>, mut work: Box<dyn JobWork>) {
    let outcome = copy_phase(job, work.as_mut());
    let st = job.lock();
    let (mut st, outcome) = match outcome {
        Outcome::Done if work.waits_for_completion() => wait_for_completion(job, st, work.as_mut()),
        other => (st, other),
    };
    st.busy = true;
    let (final_error, cancelled) = match outcome {
        Outcome::Done => {
            job.set_status(&mut st, JobStatus::Waiting);
            job.set_status(&mut st, JobStatus::Pending);
            drop(st);
            let result = work.finish();
            st = job.lock();
            match result {
                Ok(()) => (None, false),
                Err(e) => {
                    job.set_status(&mut st, JobStatus::Aborting);
                    (Some(e.to_string()), false)
                }
            }
        }
        Outcome::Cancelled => {
            job.set_status(&mut st, JobStatus::Aborting);
            (None, true)
        }
        Outcome::ReadyCancelled => {
            job.set_status(&mut st, JobStatus::Waiting);
            job.set_status(&mut st, JobStatus::Pending);
            (None, false)
        }
        Outcome::Failed(e) => {
            job.set_status(&mut st, JobStatus::Aborting);
            (Some(e), false)
        }
    };
    st.busy = false;
    let info = job.info_of(&st, final_error);
    if cancelled {
        (job.sink)(JobEvent::Cancelled(info));
    } else {
        (job.sink)(JobEvent::Completed(info));
    }
    job.set_status(&mut st, JobStatus::Concluded);
    // The job leaves the list before `null` is reported: a client reacting to the event
    // can start the next job on the drive.
    list.lock().retain(|j| !Arc::ptr_eq(j, job));
    job.set_status(&mut st, JobStatus::Null);
    st.finished = true;
    job.wake.notify_all();
}

/// Goes through the whole range, honouring pause, cancel and speed.
fn copy_phase(job: &Job, work: &mut dyn JobWork) -> Outcome {
    let mut limit = RateLimit::new();
    let mut delay = Duration::ZERO;
    loop {
        {
            let mut st = job.lock();
            if st.offset >= st.len && !st.cancel {
                return Outcome::Done;
            }
            // QEMU's `job_sleep_ns`: the speed limit's wait, cut short by a pause, a
            // drain, a cancel or a new speed; either way the job then goes through its
            // pause point and copies its next chunk (QEMU does not resume the wait).
            if !delay.is_zero() {
                st = job
                    .wake
                    .wait_timeout_while(st, delay, |st| {
                        !st.cancel && !st.wants_pause() && !st.speed_changed
                    })
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if st.speed_changed {
                limit = RateLimit::new();
                st.speed_changed = false;
            }
            let (mut st, outcome) = pause_point(job, st);
            if let Some(outcome) = outcome {
                return outcome;
            }
            st.busy = true;
        }
        let offset = job.lock().offset;
        let result = work.step(offset);
        let mut st = job.lock();
        st.busy = false;
        match result {
            Ok((progress, copied)) => {
                st.offset = (st.offset + progress.max(1)).min(st.len);
                delay = if copied > 0 {
                    limit.account(copied, st.speed)
                } else {
                    Duration::ZERO
                };
            }
            Err(e) => {
                drop(st);
                (job.sink)(JobEvent::IoError {
                    id: job.id.clone(),
                    write: e.write,
                });
                return Outcome::Failed(e.error.to_string());
            }
        }
    }
}

/// Pauses while the user or a drain asks for it; reports a cancel.
fn pause_point<'a>(
    job: &'a Job,
    mut st: MutexGuard<'a, State>,
) -> (MutexGuard<'a, State>, Option<Outcome>) {
    if st.cancel {
        return (st, Some(Outcome::Cancelled));
    }
    if st.wants_pause() {
        st.busy = false;
        let resume_to = st.status;
        let paused_status = if resume_to == JobStatus::Ready {
            JobStatus::Standby
        } else {
            JobStatus::Paused
        };
        job.set_status(&mut st, paused_status);
        job.wake.notify_all();
        while st.wants_pause() && !st.cancel {
            st = job.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        job.set_status(&mut st, resume_to);
        job.wake.notify_all();
        if st.cancel {
            return (st, Some(Outcome::Cancelled));
        }
    }
    (st, None)
}

/// In `ready`: waits for `block-job-complete` or a cancel (which, without `force`, ends
/// the job as completed without its switch).
fn wait_for_completion<'a>(
    job: &'a Job,
    mut st: MutexGuard<'a, State>,
    work: &mut dyn JobWork,
) -> (MutexGuard<'a, State>, Outcome) {
    const SYNC_INTERVAL: Duration = Duration::from_millis(200);
    st.busy = false;
    if st.status != JobStatus::Ready {
        job.set_status(&mut st, JobStatus::Ready);
        let info = job.info_of(&st, None);
        (job.sink)(JobEvent::Ready(info));
    }
    loop {
        if st.complete {
            return (st, Outcome::Done);
        }
        if st.cancel {
            let outcome = if st.force_cancel {
                Outcome::Cancelled
            } else {
                Outcome::ReadyCancelled
            };
            return (st, outcome);
        }
        let (guard, outcome) = pause_point(job, st);
        st = guard;
        if let Some(outcome) = outcome {
            return (st, outcome);
        }
        if st.complete || st.cancel {
            continue;
        }
        let (guard, timeout) = job
            .wake
            .wait_timeout(st, SYNC_INTERVAL)
            .unwrap_or_else(|p| p.into_inner());
        st = guard;
        if timeout.timed_out() && !st.complete && !st.cancel {
            drop(st);
            let synced = work.sync_while_ready();
            st = job.lock();
            if let Err(e) = synced {
                return (st, Outcome::Failed(e.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `chunks` chunks of 1 KiB, failing at chunk `fail_at` (if any).
    struct Fake {
        chunks: u64,
        fail_at: Option<u64>,
        finished: Arc<Mutex<bool>>,
    }

    impl JobWork for Fake {
        fn total_len(&self) -> u64 {
            self.chunks * 1024
        }
        fn step(&mut self, offset: u64) -> Result<(u64, u64), StepError> {
            if Some(offset / 1024) == self.fail_at {
                return Err(StepError {
                    write: true,
                    error: crate::block::BlockError::ReadOnly,
                });
            }
            Ok((1024, 1024))
        }
        fn finish(&mut self) -> BlockResult<()> {
            *self.finished.lock().unwrap() = true;
            Ok(())
        }
    }

    fn run_fake(fail_at: Option<u64>) -> (Vec<JobEvent>, bool) {
        let list = Arc::new(JobList::new());
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = events.clone();
        let finished = Arc::new(Mutex::new(false));
        let job = list
            .start(
                JobSpec {
                    id: "j".into(),
                    kind: JobType::Stream,
                    drive: "d".into(),
                    speed: 0,
                },
                Box::new(Fake {
                    chunks: 8,
                    fail_at,
                    finished: finished.clone(),
                }),
                Arc::new(move |e| sink_events.lock().unwrap().push(e)),
            )
            .unwrap();
        job.wait_finished(Duration::from_secs(10));
        assert!(list.list().is_empty());
        let events = events.lock().unwrap().clone();
        let finished = *finished.lock().unwrap();
        (events, finished)
    }

    fn status(s: JobStatus) -> JobEvent {
        JobEvent::StatusChange {
            id: "j".into(),
            status: s,
        }
    }

    #[test]
    fn a_failed_step_reports_the_error_then_completes_with_it() {
        let (events, finished) = run_fake(Some(3));
        assert!(!finished, "a failed job must not make its switch");
        let info = JobInfo {
            id: "j".into(),
            kind: JobType::Stream,
            len: 8192,
            offset: 3072,
            speed: 0,
            busy: false,
            paused: false,
            ready: false,
            status: JobStatus::Aborting,
            error: Some(crate::block::BlockError::ReadOnly.to_string()),
        };
        assert_eq!(
            events,
            [
                status(JobStatus::Created),
                status(JobStatus::Running),
                JobEvent::IoError {
                    id: "j".into(),
                    write: true
                },
                status(JobStatus::Aborting),
                JobEvent::Completed(info),
                status(JobStatus::Concluded),
                status(JobStatus::Null),
            ]
        );
    }

    #[test]
    fn a_successful_job_finishes_with_its_switch() {
        let (events, finished) = run_fake(None);
        assert!(finished);
        let names: Vec<_> = events
            .iter()
            .map(|e| match e {
                JobEvent::StatusChange { status, .. } => status.as_str(),
                JobEvent::Completed(info) => {
                    assert_eq!((info.offset, info.len, &info.error), (8192, 8192, &None));
                    "COMPLETED"
                }
                _ => "other",
            })
            .collect();
        assert_eq!(
            names,
            [
                "created",
                "running",
                "waiting",
                "pending",
                "COMPLETED",
                "concluded",
                "null"
            ]
        );
    }
}
