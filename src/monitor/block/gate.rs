//! Orders job events against command replies as QEMU's single-threaded main loop does:
//! a job runs on its own thread here, but its events must not overtake the reply of the
//! QMP command being answered (QEMU's job coroutine only runs once the command has
//! returned). Events a job sends while another thread is in a command are queued and sent
//! when that command's reply is out; the thread in the command sends its own job events
//! (`created`, `running`, or those of a job it waits for) at once.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::monitor::qmp::{MonitorEvents, QDict};

#[derive(Default)]
struct Inner {
    /// The thread inside a command, and how deeply (human-monitor-command nests).
    owner: Option<ThreadId>,
    depth: u32,
    /// The command in progress waits for a job: that job's events go out at once.
    open: bool,
    pending: VecDeque<(String, Option<QDict>)>,
}

#[derive(Default)]
pub struct EventGate {
    inner: Mutex<Inner>,
    free: Condvar,
}

impl EventGate {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A command starts on this thread.
    pub fn begin_command(&self) {
        let me = std::thread::current().id();
        let mut g = self.lock();
        while g.owner.is_some_and(|o| o != me) {
            g = self.free.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.owner = Some(me);
        g.depth += 1;
    }

    /// The command's reply has been sent: queued events follow it.
    pub fn end_command(&self, events: &MonitorEvents) {
        let mut g = self.lock();
        g.depth = g.depth.saturating_sub(1);
        if g.depth == 0 {
            g.owner = None;
            g.open = false;
            Self::drain(&mut g, events);
            self.free.notify_all();
        }
    }

    /// Sends a job event now, or after the reply of the command another thread is in.
    pub fn emit(&self, events: &MonitorEvents, name: &str, data: Option<QDict>) {
        let mut g = self.lock();
        g.pending.push_back((name.to_string(), data));
        let me = std::thread::current().id();
        if g.open || g.owner.is_none() || g.owner == Some(me) {
            Self::drain(&mut g, events);
        }
    }

    /// Runs `f` (a wait for a job) with that job's events going out at once.
    pub fn open_while<R>(&self, events: &MonitorEvents, f: impl FnOnce() -> R) -> R {
        let was_open = {
            let mut g = self.lock();
            let was = g.open;
            g.open = true;
            Self::drain(&mut g, events);
            was
        };
        let result = f();
        let mut g = self.lock();
        Self::drain(&mut g, events);
        g.open = was_open;
        result
    }

    // Sent with the lock held, so events keep their order whoever sends them.
    fn drain(g: &mut Inner, events: &MonitorEvents) {
        while let Some((name, data)) = g.pending.pop_front() {
            events.emit(&name, data);
        }
    }
}
