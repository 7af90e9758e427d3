//! The main loop: one thread waiting in epoll on every chardev, monitor and machine event
//! fd, like QEMU's main loop. Other threads hand it work through a [`LoopHandle`].

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Called on the loop thread when its fd is ready.
pub type FdHandler = Box<dyn FnMut(&mut MainLoop, EventSet)>;
type Posted = Box<dyn FnOnce(&mut MainLoop) + Send>;

struct Mailbox {
    jobs: Mutex<Vec<Posted>>,
    wake: EventFd,
}

/// Lets any thread run work on the loop thread or end the loop.
#[derive(Clone)]
pub struct LoopHandle {
    mailbox: Arc<Mailbox>,
}

impl LoopHandle {
    /// Runs `job` on the loop thread at its next iteration.
    pub fn post(&self, job: impl FnOnce(&mut MainLoop) + Send + 'static) {
        self.mailbox.jobs.lock().unwrap().push(Box::new(job));
        // A full eventfd counter still wakes the loop, so the error can be ignored.
        let _ = self.mailbox.wake.write(1);
    }

    /// Ends the loop; [`MainLoop::run`] returns `status`.
    pub fn exit(&self, status: i32) {
        self.post(move |main_loop| main_loop.exit(status));
    }
}

/// The epoll loop.
pub struct MainLoop {
    epoll: Epoll,
    handlers: HashMap<RawFd, FdHandler>,
    mailbox: Arc<Mailbox>,
    exit_status: Option<i32>,
    /// The fd whose handler is running, and whether that handler removed it.
    running: Option<RawFd>,
    running_removed: bool,
}

impl MainLoop {
    pub fn new() -> std::io::Result<MainLoop> {
        let epoll = Epoll::new()?;
        let wake = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        epoll.ctl(
            ControlOperation::Add,
            wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, wake.as_raw_fd() as u64),
        )?;
        Ok(MainLoop {
            epoll,
            handlers: HashMap::new(),
            mailbox: Arc::new(Mailbox {
                jobs: Mutex::new(Vec::new()),
                wake,
            }),
            exit_status: None,
            running: None,
            running_removed: false,
        })
    }

    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            mailbox: self.mailbox.clone(),
        }
    }

    /// Watches `fd` for `events`; the handler runs on the loop thread. The caller keeps the
    /// fd open until it calls [`MainLoop::remove`].
    pub fn add(&mut self, fd: RawFd, events: EventSet, handler: FdHandler) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, fd as u64),
        )?;
        self.handlers.insert(fd, handler);
        Ok(())
    }

    /// Changes the events watched on `fd`.
    pub fn modify(&mut self, fd: RawFd, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Modify,
            fd,
            EpollEvent::new(events, fd as u64),
        )
    }

    /// Stops watching `fd`.
    pub fn remove(&mut self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.handlers.remove(&fd);
        if self.running == Some(fd) {
            self.running_removed = true;
        }
    }

    /// Makes [`MainLoop::run`] return `status` once the current iteration is done.
    pub fn exit(&mut self, status: i32) {
        self.exit_status.get_or_insert(status);
    }

    /// Runs until [`MainLoop::exit`]; returns the exit status.
    pub fn run(&mut self) -> i32 {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            self.run_posted();
            if let Some(status) = self.exit_status {
                return status;
            }
            let ready = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("{}: main loop: {e}", crate::program_name());
                    return 1;
                }
            };
            for event in &events[..ready] {
                let fd = event.fd();
                if fd == self.mailbox.wake.as_raw_fd() {
                    let _ = self.mailbox.wake.read();
                    continue;
                }
                // The handler is taken out while it runs so it may add or remove fds
                // (including its own).
                if let Some(mut handler) = self.handlers.remove(&fd) {
                    self.running = Some(fd);
                    self.running_removed = false;
                    handler(self, event.event_set());
                    self.running = None;
                    if !self.running_removed {
                        self.handlers.entry(fd).or_insert(handler);
                    }
                }
                if self.exit_status.is_some() {
                    break;
                }
            }
        }
    }

    fn run_posted(&mut self) {
        loop {
            let jobs = std::mem::take(&mut *self.mailbox.jobs.lock().unwrap());
            if jobs.is_empty() {
                return;
            }
            for job in jobs {
                job(self);
            }
        }
    }
}
