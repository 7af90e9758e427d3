//! Orders job events against command replies as QEMU's single-threaded main loop does:
//! a job runs on its own thread here, but its events must not overtake the reply of the
//! QMP command being answered (QEMU's job coroutine only runs once the command has
//! returned). Events a job sends while another thread is in a command are queued and sent
//! when that command's reply is out; the thread in the command sends its own job events
//! (`created`, `running`, or those of a job it waits for) at once.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::monitor::qmp::{MonitorEvents, QDict, QObject};

#[derive(Default)]
struct Inner {
    /// The thread inside a command, and how deeply (human-monitor-command nests).
    owner: Option<ThreadId>,
    depth: u32,
    /// The command in progress waits for a job: that job's events go out at once, up to
    /// and including the status it waits for (`until`); later ones follow the reply, as
    /// QEMU defers a job's completion to a later main loop iteration.
    open: bool,
    until: Option<(String, &'static [&'static str])>,
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
            g.until = None;
            Self::drain(&mut g, events, true);
            self.free.notify_all();
        }
    }

    /// Sends a job event now, or after the reply of the command another thread is in.
    pub fn emit(&self, events: &MonitorEvents, name: &str, data: Option<QDict>) {
        let mut g = self.lock();
        g.pending.push_back((name.to_string(), data));
        Self::drain(&mut g, events, true);
    }

    /// Runs `f` (a wait for job `id`) with that job's events going out at once, until it
    /// reports one of `statuses`.
    pub fn open_until<R>(
        &self,
        events: &MonitorEvents,
        id: &str,
        statuses: &'static [&'static str],
        f: impl FnOnce() -> R,
    ) -> R {
        {
            let mut g = self.lock();
            g.open = true;
            g.until = Some((id.to_string(), statuses));
            // Only what the awaited job sent, up to the awaited status.
            Self::drain(&mut g, events, false);
        }
        let result = f();
        let mut g = self.lock();
        g.open = false;
        g.until = None;
        result
    }

    // Sent with the lock held, so events keep their order whoever sends them. `as_owner`:
    // the caller's own events (the thread in the command, or no command at all).
    fn drain(g: &mut Inner, events: &MonitorEvents, as_owner: bool) {
        let me = std::thread::current().id();
        while g.open || (as_owner && (g.owner.is_none() || g.owner == Some(me))) {
            let Some((name, data)) = g.pending.pop_front() else {
                return;
            };
            let reached = g.until.as_ref().is_some_and(|(id, statuses)| {
                name == "JOB_STATUS_CHANGE"
                    && data.as_ref().is_some_and(|d| {
                        matches!(d.get("id"), Some(QObject::String(i)) if i == id)
                            && matches!(d.get("status"), Some(QObject::String(s)) if statuses.contains(&s.as_str()))
                    })
            });
            events.emit(&name, data);
            if reached {
                g.open = false;
                g.until = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::monitor::qmp::{EventListener, QObject};

    struct Names(Mutex<Vec<String>>);

    impl EventListener for Names {
        fn deliver(&self, event: &QObject) {
            let QObject::Dict(d) = event else { return };
            let name = match d.get("event") {
                Some(QObject::String(s)) => s.clone(),
                _ => String::new(),
            };
            let status = match d.get("data") {
                Some(QObject::Dict(data)) => match data.get("status") {
                    Some(QObject::String(s)) => format!(":{s}"),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            self.0.lock().unwrap().push(format!("{name}{status}"));
        }
    }

    fn setup() -> (EventGate, MonitorEvents, Arc<Names>, Arc<dyn EventListener>) {
        let events = MonitorEvents::new();
        let names = Arc::new(Names(Mutex::new(Vec::new())));
        let listener: Arc<dyn EventListener> = names.clone();
        events.subscribe(Arc::downgrade(&listener));
        (EventGate::default(), events, names, listener)
    }

    fn status(id: &str, s: &str) -> Option<QDict> {
        Some(QDict::new().with("id", id).with("status", s))
    }

    fn from_other_thread(gate: &EventGate, events: &MonitorEvents, s: &str) {
        std::thread::scope(|scope| {
            scope.spawn(|| gate.emit(events, "JOB_STATUS_CHANGE", status("j", s)));
        });
    }

    #[test]
    fn job_events_wait_for_the_reply_of_the_command_in_progress() {
        let (gate, events, names, _l) = setup();
        gate.begin_command();
        // The command's own thread: at once.
        gate.emit(&events, "JOB_STATUS_CHANGE", status("j", "created"));
        // Another thread: after the reply.
        from_other_thread(&gate, &events, "waiting");
        events.emit("REPLY", None);
        gate.end_command(&events);
        // No command: at once.
        from_other_thread(&gate, &events, "null");
        assert_eq!(
            *names.0.lock().unwrap(),
            [
                "JOB_STATUS_CHANGE:created",
                "REPLY",
                "JOB_STATUS_CHANGE:waiting",
                "JOB_STATUS_CHANGE:null"
            ]
        );
    }

    #[test]
    fn an_awaited_job_reports_up_to_its_status_before_the_reply() {
        let (gate, events, names, _l) = setup();
        gate.begin_command();
        from_other_thread(&gate, &events, "paused");
        gate.open_until(&events, "j", &["running"], || {
            from_other_thread(&gate, &events, "running");
            from_other_thread(&gate, &events, "waiting");
        });
        events.emit("REPLY", None);
        gate.end_command(&events);
        assert_eq!(
            *names.0.lock().unwrap(),
            [
                "JOB_STATUS_CHANGE:paused",
                "JOB_STATUS_CHANGE:running",
                "REPLY",
                "JOB_STATUS_CHANGE:waiting"
            ]
        );
    }
}
