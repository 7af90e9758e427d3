//! The epoll main loop: fd watches, timers, deferred tasks, and a cross-thread handle.
//!
//! Like QEMU's main loop it runs on the main thread and owns everything that is not a vCPU:
//! chardevs, monitors, timers. It is single-threaded by design: callbacks are `!Send`
//! closures that run on the loop thread and receive `&MainLoop` so they can add or change
//! watches and timers while running. Other threads talk to the loop only through a
//! [`LoopHandle`] (post a closure, request exit).
//!
//! Callbacks must not capture a clone of the [`MainLoop`] (it would keep the loop alive
//! through its own callback table); they get one as their first argument instead.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::ops::BitOr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What a watch wants to be told about. Hang-ups and errors are always reported while a
/// watch has a non-empty interest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    read: bool,
    write: bool,
}

impl Interest {
    /// Nothing: the fd is taken out of epoll until the interest changes again (so a peer
    /// hang-up cannot make the loop spin while a reader is flow-controlled).
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };

    pub fn is_none(self) -> bool {
        !self.read && !self.write
    }

    fn event_set(self) -> EventSet {
        let mut set = EventSet::empty();
        if self.read {
            set |= EventSet::IN | EventSet::READ_HANG_UP;
        }
        if self.write {
            set |= EventSet::OUT;
        }
        set
    }
}

impl BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest {
            read: self.read || rhs.read,
            write: self.write || rhs.write,
        }
    }
}

/// What epoll reported for a watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer hung up (EPOLLHUP / EPOLLRDHUP): a read will return end-of-file.
    pub hangup: bool,
    pub error: bool,
}

/// Identifies an fd watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchId(u64);

/// Identifies a pending timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

type FdCallback = Rc<RefCell<dyn FnMut(&MainLoop, Readiness)>>;
type LocalTask = Box<dyn FnOnce(&MainLoop)>;
type RemoteTask = Box<dyn FnOnce(&MainLoop) + Send>;

struct Watch {
    fd: RawFd,
    interest: Interest,
    /// Whether the fd is currently registered with epoll (it is not while interest is NONE).
    registered: bool,
    callback: FdCallback,
}

/// State shared with [`LoopHandle`]s on other threads.
struct Shared {
    wakeup: EventFd,
    tasks: Mutex<VecDeque<RemoteTask>>,
    exit_status: Mutex<Option<i32>>,
}

impl Shared {
    fn wake(&self) {
        // An eventfd write only fails when the counter would overflow, i.e. when the loop
        // has plenty of unread wake-ups already: nothing is lost by ignoring it.
        let _ = self.wakeup.write(1);
    }
}

/// Epoll user data of the loop's own wake-up eventfd; watch ids start above it.
const WAKEUP_TOKEN: u64 = 0;

struct Inner {
    epoll: Epoll,
    shared: Arc<Shared>,
    watches: RefCell<HashMap<u64, Watch>>,
    /// Pending timers ordered by deadline, then by id (creation order).
    timers: RefCell<BTreeMap<(Instant, u64), LocalTask>>,
    timer_deadlines: RefCell<HashMap<u64, Instant>>,
    deferred: RefCell<VecDeque<LocalTask>>,
    next_id: Cell<u64>,
}

/// The main loop. Cheap to clone; lives on one thread (`!Send`).
#[derive(Clone)]
pub struct MainLoop {
    inner: Rc<Inner>,
}

/// A `Send + Clone` handle to post work to the loop thread from anywhere.
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl LoopHandle {
    /// Runs `task` on the loop thread at its next iteration.
    pub fn post(&self, task: impl FnOnce(&MainLoop) + Send + 'static) {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_back(Box::new(task));
        self.shared.wake();
    }

    /// Asks [`MainLoop::run`] to return `status`. The first request wins, as QEMU keeps the
    /// first shutdown reason.
    pub fn request_exit(&self, status: i32) {
        let mut exit = self
            .shared
            .exit_status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if exit.is_none() {
            *exit = Some(status);
        }
        drop(exit);
        self.shared.wake();
    }

    /// The status passed to the first [`LoopHandle::request_exit`], if any.
    pub fn exit_requested(&self) -> Option<i32> {
        *self
            .shared
            .exit_status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MainLoop {
    pub fn new() -> io::Result<MainLoop> {
        let epoll = Epoll::new()?;
        let wakeup = EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        epoll.ctl(
            ControlOperation::Add,
            wakeup.as_raw_fd(),
            EpollEvent::new(EventSet::IN, WAKEUP_TOKEN),
        )?;
        Ok(MainLoop {
            inner: Rc::new(Inner {
                epoll,
                shared: Arc::new(Shared {
                    wakeup,
                    tasks: Mutex::new(VecDeque::new()),
                    exit_status: Mutex::new(None),
                }),
                watches: RefCell::new(HashMap::new()),
                timers: RefCell::new(BTreeMap::new()),
                timer_deadlines: RefCell::new(HashMap::new()),
                deferred: RefCell::new(VecDeque::new()),
                next_id: Cell::new(WAKEUP_TOKEN + 1),
            }),
        })
    }

    /// A handle other threads use to post work and request exit.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: self.inner.shared.clone(),
        }
    }

    fn next_id(&self) -> u64 {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        id
    }

    /// Watches `fd` (which the caller keeps open until [`MainLoop::remove_fd`]) and calls
    /// `callback` whenever it is ready for `interest` (level-triggered).
    pub fn add_fd(
        &self,
        fd: RawFd,
        interest: Interest,
        callback: impl FnMut(&MainLoop, Readiness) + 'static,
    ) -> io::Result<WatchId> {
        let id = self.next_id();
        let registered = !interest.is_none();
        if registered {
            self.inner.epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(interest.event_set(), id),
            )?;
        }
        self.inner.watches.borrow_mut().insert(
            id,
            Watch {
                fd,
                interest,
                registered,
                callback: Rc::new(RefCell::new(callback)),
            },
        );
        Ok(WatchId(id))
    }

    /// Changes what a watch waits for. Unknown (removed) watches are ignored.
    pub fn set_interest(&self, id: WatchId, interest: Interest) -> io::Result<()> {
        let mut watches = self.inner.watches.borrow_mut();
        let Some(watch) = watches.get_mut(&id.0) else {
            return Ok(());
        };
        if watch.interest == interest {
            return Ok(());
        }
        let event = EpollEvent::new(interest.event_set(), id.0);
        match (watch.registered, interest.is_none()) {
            (true, true) => {
                self.inner
                    .epoll
                    .ctl(ControlOperation::Delete, watch.fd, event)?;
                watch.registered = false;
            }
            (true, false) => self
                .inner
                .epoll
                .ctl(ControlOperation::Modify, watch.fd, event)?,
            (false, false) => {
                self.inner
                    .epoll
                    .ctl(ControlOperation::Add, watch.fd, event)?;
                watch.registered = true;
            }
            (false, true) => {}
        }
        watch.interest = interest;
        Ok(())
    }

    /// Stops watching. The fd itself is not closed.
    pub fn remove_fd(&self, id: WatchId) {
        if let Some(watch) = self.inner.watches.borrow_mut().remove(&id.0) {
            if watch.registered {
                // Fails only if the fd was already closed, which removes it from epoll.
                let _ =
                    self.inner
                        .epoll
                        .ctl(ControlOperation::Delete, watch.fd, EpollEvent::default());
            }
        }
    }

    /// Runs `callback` once on the loop thread after `delay`.
    pub fn add_timer(
        &self,
        delay: Duration,
        callback: impl FnOnce(&MainLoop) + 'static,
    ) -> TimerId {
        let id = self.next_id();
        let deadline = Instant::now() + delay;
        self.inner
            .timers
            .borrow_mut()
            .insert((deadline, id), Box::new(callback));
        self.inner.timer_deadlines.borrow_mut().insert(id, deadline);
        TimerId(id)
    }

    /// Cancels a timer that has not fired yet (no effect otherwise).
    pub fn cancel_timer(&self, id: TimerId) {
        if let Some(deadline) = self.inner.timer_deadlines.borrow_mut().remove(&id.0) {
            self.inner.timers.borrow_mut().remove(&(deadline, id.0));
        }
    }

    /// Runs `task` on this loop at its next iteration (loop thread only; use
    /// [`LoopHandle::post`] from other threads).
    pub fn defer(&self, task: impl FnOnce(&MainLoop) + 'static) {
        self.inner.deferred.borrow_mut().push_back(Box::new(task));
    }

    /// Same as [`LoopHandle::request_exit`].
    pub fn request_exit(&self, status: i32) {
        self.handle().request_exit(status);
    }

    /// Runs until an exit is requested and returns the requested status.
    pub fn run(&self) -> io::Result<i32> {
        loop {
            if let Some(status) = self.handle().exit_requested() {
                return Ok(status);
            }
            self.iterate(None)?;
        }
    }

    /// Runs one iteration: waits at most `max_wait` (or until the next timer or event when
    /// `None`), then dispatches whatever is ready. Returns whether anything was dispatched.
    pub fn iterate(&self, max_wait: Option<Duration>) -> io::Result<bool> {
        let mut dispatched = self.run_deferred();
        dispatched |= self.run_remote_tasks();
        dispatched |= self.run_due_timers();
        let pending_work = !self.inner.deferred.borrow().is_empty();
        if self.handle().exit_requested().is_some() {
            return Ok(dispatched);
        }

        let timeout = if dispatched || pending_work {
            Some(Duration::ZERO)
        } else {
            let next_timer = self
                .inner
                .timers
                .borrow()
                .keys()
                .next()
                .map(|(deadline, _)| deadline.saturating_duration_since(Instant::now()));
            match (next_timer, max_wait) {
                (Some(t), Some(m)) => Some(t.min(m)),
                (t, m) => t.or(m),
            }
        };
        let timeout_ms = match timeout {
            None => -1,
            // Round up so a timer is never woken for a hair too early and spun on.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };

        let mut events = [EpollEvent::default(); 64];
        let count = match self.inner.epoll.wait(timeout_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        for event in &events[..count] {
            let token = event.data();
            if token == WAKEUP_TOKEN {
                // Reading resets the counter; the tasks themselves are drained below.
                let _ = self.inner.shared.wakeup.read();
                continue;
            }
            let set = event.event_set();
            let readiness = Readiness {
                readable: set.contains(EventSet::IN),
                writable: set.contains(EventSet::OUT),
                hangup: set.intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP),
                error: set.contains(EventSet::ERROR),
            };
            // The watch may have been removed (or its interest dropped) by an earlier
            // callback of this batch; do not call it then.
            let callback = match self.inner.watches.borrow().get(&token) {
                Some(watch) if watch.registered => watch.callback.clone(),
                _ => continue,
            };
            // A callback is never re-entered: the loop is single-threaded and a callback
            // does not run the loop itself.
            if let Ok(mut callback) = callback.try_borrow_mut() {
                callback(self, readiness);
            }
            dispatched = true;
        }
        dispatched |= self.run_remote_tasks();
        dispatched |= self.run_due_timers();
        Ok(dispatched)
    }

    fn run_deferred(&self) -> bool {
        // Only the tasks present now: a task that defers another runs it next iteration.
        let tasks: Vec<LocalTask> = self.inner.deferred.borrow_mut().drain(..).collect();
        let any = !tasks.is_empty();
        for task in tasks {
            task(self);
        }
        any
    }

    fn run_remote_tasks(&self) -> bool {
        let tasks: Vec<RemoteTask> = self
            .inner
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
            .collect();
        let any = !tasks.is_empty();
        for task in tasks {
            task(self);
        }
        any
    }

    fn run_due_timers(&self) -> bool {
        let now = Instant::now();
        let mut any = false;
        loop {
            let due = {
                let mut timers = self.inner.timers.borrow_mut();
                match timers.keys().next().copied() {
                    Some(key) if key.0 <= now => timers.remove(&key).map(|task| (key.1, task)),
                    _ => None,
                }
            };
            let Some((id, task)) = due else { break };
            self.inner.timer_deadlines.borrow_mut().remove(&id);
            task(self);
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn timers_fire_in_deadline_order_and_cancel_works() {
        let ml = MainLoop::new().unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let o = order.clone();
        ml.add_timer(Duration::from_millis(30), move |_| o.borrow_mut().push(2));
        let o = order.clone();
        ml.add_timer(Duration::from_millis(10), move |_| o.borrow_mut().push(1));
        let o = order.clone();
        let cancelled = ml.add_timer(Duration::from_millis(20), move |_| o.borrow_mut().push(99));
        ml.cancel_timer(cancelled);
        let o = order.clone();
        ml.add_timer(Duration::from_millis(40), move |ml| {
            o.borrow_mut().push(3);
            ml.request_exit(7);
        });
        let start = Instant::now();
        assert_eq!(ml.run().unwrap(), 7);
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert_eq!(*order.borrow(), vec![1, 2, 3]);
    }

    #[test]
    fn fd_watch_reports_readable_and_interest_none_silences_hangup() {
        let ml = MainLoop::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let seen = Rc::new(Cell::new(0));
        let s = seen.clone();
        let id = ml
            .add_fd(a.as_raw_fd(), Interest::READ, move |_, r| {
                assert!(r.readable);
                s.set(s.get() + 1);
            })
            .unwrap();
        std::io::Write::write_all(&mut b, b"x").unwrap();
        ml.iterate(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(seen.get(), 1);
        // With no interest, a hang-up must not be reported (the loop would spin).
        ml.set_interest(id, Interest::NONE).unwrap();
        drop(b);
        ml.iterate(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(seen.get(), 1);
        ml.set_interest(id, Interest::READ).unwrap();
        ml.iterate(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(seen.get(), 2);
        ml.remove_fd(id);
        ml.iterate(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(seen.get(), 2);
    }

    #[test]
    fn handle_posts_from_other_threads_and_first_exit_wins() {
        let ml = MainLoop::new().unwrap();
        let handle = ml.handle();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        let thread = std::thread::spawn(move || {
            for i in 0..100 {
                let h = h.clone();
                handle.post(move |_| h.lock().unwrap().push(i));
            }
            handle.request_exit(3);
            handle.request_exit(4);
        });
        thread.join().unwrap();
        assert_eq!(ml.run().unwrap(), 3);
        // Tasks posted before the exit request may or may not have run; run them now.
        ml.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(*hits.lock().unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn deferred_tasks_run_in_order_on_next_iteration() {
        let ml = MainLoop::new().unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        for i in 0..3 {
            let o = order.clone();
            ml.defer(move |ml| {
                o.borrow_mut().push(i);
                if i == 2 {
                    ml.request_exit(0);
                }
            });
        }
        assert_eq!(ml.run().unwrap(), 0);
        assert_eq!(*order.borrow(), vec![0, 1, 2]);
    }
}
