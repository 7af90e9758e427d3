//! One open chardev on the loop thread: its backend, its front ends, input routing with
//! flow control, the mux, and connection events. Socket connections are in
//! [`connection`], stdio/file/pipe input in [`plain`].

mod connection;
mod plain;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::connection::SocketBackend;
use self::plain::{create_output, open_pipe, FdInput, InputFd};
use super::main_loop::{Interest, MainLoop, Readiness, WatchId};
use super::mux::{
    MuxEscape, MuxKey, COMMIT_UNSUPPORTED_TEXT, HELP_TEXT, MAX_MUX_FRONTENDS, TERMINATED_TEXT,
};
use super::output::{spawn_writer_thread, ChardevShared, ChardevWriter, Drain, ThreadSink};
use super::status::ChardevStatus;
use super::{terminal, ChardevError, ChardevEvent, ChardevFrontend};
use crate::config::{ChardevBackend, ChardevConfig};

/// Input held for a front end before the backend stops being read.
const INPUT_LIMIT: usize = 4096;
/// How long a half-closed client may take to read the replies still queued for it.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Only one chardev may own stdin/stdout, as in QEMU.
static STDIO_IN_USE: AtomicBool = AtomicBool::new(false);

/// Handlers a mux calls for Ctrl-a x and Ctrl-a s (loop thread).
#[derive(Default)]
pub(crate) struct MuxHooks {
    pub(crate) quit: RefCell<Option<Box<dyn Fn()>>>,
    pub(crate) commit: RefCell<Option<Box<dyn Fn()>>>,
}

struct Slot {
    frontend: Arc<dyn ChardevFrontend>,
    /// Input routed to this front end but not yet taken.
    pending: VecDeque<u8>,
}

enum Backend {
    /// null, stdio, file, pipe: always "connected"; maybe an input fd.
    Plain {
        input: Option<FdInput>,
        stdio: bool,
    },
    Socket(SocketBackend),
}

pub(crate) struct Chardev {
    pub(crate) id: String,
    pub(crate) shared: Arc<ChardevShared>,
    /// What `query-chardev` reports (filename, front end open).
    pub(crate) status: Arc<ChardevStatus>,
    this: Weak<RefCell<Chardev>>,
    hooks: Rc<MuxHooks>,
    mux: Option<MuxEscape>,
    slots: Vec<Slot>,
    focus: Option<usize>,
    /// The loop has started this chardev: events flow and input is read. Until then (the
    /// machine is still being built) events queue up, so that a mux tells every front
    /// end `Opened` only once all are attached, as QEMU does.
    started: bool,
    /// The backend has a peer.
    open: bool,
    events: VecDeque<(usize, ChardevEvent)>,
    kick_watch: Option<WatchId>,
    backend: Backend,
}

/// QEMU's `filename` of a chardev that is not a socket.
fn plain_filename(backend: &ChardevBackend) -> &'static str {
    match backend {
        ChardevBackend::Null => "null",
        ChardevBackend::Stdio { .. } => "stdio",
        ChardevBackend::File { .. } => "file",
        ChardevBackend::Pipe { .. } => "pipe",
        ChardevBackend::Socket(_) => "socket",
    }
}

/// Wraps a method of the chardev behind `weak` as a loop callback.
fn callback<A>(
    weak: &Weak<RefCell<Chardev>>,
    f: impl Fn(&mut Chardev, &MainLoop, A) + 'static,
) -> impl FnMut(&MainLoop, A) + 'static {
    let weak = weak.clone();
    move |ml, arg| {
        if let Some(dev) = weak.upgrade() {
            // A failed borrow would mean re-entrance, which the design excludes; skipping
            // is safe because every source is level-triggered or re-armed.
            if let Ok(mut dev) = dev.try_borrow_mut() {
                f(&mut dev, ml, arg);
            }
        }
    }
}

impl Chardev {
    /// Opens the backend of `config`. `origin` is the option text QEMU shows before the
    /// `wait` notice (`-monitor unix:/tmp/s,server`).
    pub(crate) fn open(
        config: &ChardevConfig,
        ml: &MainLoop,
        origin: Option<&str>,
        hooks: Rc<MuxHooks>,
    ) -> Result<Rc<RefCell<Chardev>>, ChardevError> {
        let log = match &config.logfile {
            Some(path) => {
                Some(
                    create_output(path, false).map_err(|error| ChardevError::Logfile {
                        path: path.clone(),
                        error,
                    })?,
                )
            }
            None => None,
        };
        let id = config.id.as_str();
        let new_shared = |drain, connected, log| {
            ChardevShared::new(id, drain, connected, log, config.mux)
                .map_err(ChardevError::host("eventfd"))
        };

        let (shared, backend, open) = match &config.backend {
            ChardevBackend::Null => (
                new_shared(Drain::Discard, true, log)?,
                Backend::Plain {
                    input: None,
                    stdio: false,
                },
                true,
            ),
            ChardevBackend::Stdio { signal } => {
                if STDIO_IN_USE.swap(true, Ordering::AcqRel) {
                    return Err(ChardevError::StdioInUse);
                }
                let result = (|| {
                    terminal::enter_raw_mode(*signal)
                        .map_err(ChardevError::host("Failed to set up the terminal"))?;
                    let shared = new_shared(Drain::Thread, true, log)?;
                    spawn_writer_thread(shared.clone(), ThreadSink::Stdout)
                        .map_err(ChardevError::host("thread"))?;
                    Ok(shared)
                })();
                let shared = result.inspect_err(|_| {
                    terminal::restore();
                    STDIO_IN_USE.store(false, Ordering::Release);
                })?;
                (
                    shared,
                    Backend::Plain {
                        input: Some(FdInput::new(InputFd::Stdin)),
                        stdio: true,
                    },
                    true,
                )
            }
            ChardevBackend::File {
                path,
                input_path,
                append,
            } => {
                let out = create_output(path, *append).map_err(|error| ChardevError::Open {
                    path: path.clone(),
                    error,
                })?;
                let input = match input_path {
                    Some(p) => Some(File::open(p).map_err(|error| ChardevError::Open {
                        path: p.clone(),
                        error,
                    })?),
                    None => None,
                };
                let shared = new_shared(Drain::Thread, true, log)?;
                spawn_writer_thread(shared.clone(), ThreadSink::File(out))
                    .map_err(ChardevError::host("thread"))?;
                (
                    shared,
                    Backend::Plain {
                        input: input.map(|f| FdInput::new(InputFd::File(f))),
                        stdio: false,
                    },
                    true,
                )
            }
            ChardevBackend::Pipe { path } => {
                let (input, out) = open_pipe(path)?;
                let shared = new_shared(Drain::Thread, true, log)?;
                spawn_writer_thread(shared.clone(), ThreadSink::File(out))
                    .map_err(ChardevError::host("thread"))?;
                (
                    shared,
                    Backend::Plain {
                        input: Some(FdInput::new(InputFd::File(input))),
                        stdio: false,
                    },
                    true,
                )
            }
            ChardevBackend::Socket(socket) => {
                let backend = SocketBackend::open(socket)?;
                (
                    new_shared(Drain::Loop, false, log)?,
                    Backend::Socket(backend),
                    false,
                )
            }
        };

        let filename = match &backend {
            Backend::Plain { .. } => plain_filename(&config.backend).to_string(),
            Backend::Socket(socket) => socket.disconnected_filename(),
        };
        let dev = Rc::new_cyclic(|this| {
            RefCell::new(Chardev {
                id: config.id.clone(),
                shared,
                status: ChardevStatus::new(&config.id, config.mux, filename),
                this: this.clone(),
                hooks,
                mux: config.mux.then(MuxEscape::default),
                slots: Vec::new(),
                focus: None,
                started: false,
                open,
                events: VecDeque::new(),
                kick_watch: None,
                backend,
            })
        });
        // From here on, dropping `dev` after an error releases what was opened; the
        // caller removes the watches through `shutdown`.
        let result = dev.borrow_mut().register(ml, origin);
        if let Err(e) = result {
            dev.borrow_mut().shutdown(ml, Instant::now());
            return Err(e);
        }
        let weak = Rc::downgrade(&dev);
        ml.defer(move |ml| {
            if let Some(dev) = weak.upgrade() {
                dev.borrow_mut().start(ml);
            }
        });
        Ok(dev)
    }

    /// Registers the fds with the loop and, for sockets, makes the first connection.
    fn register(&mut self, ml: &MainLoop, origin: Option<&str>) -> Result<(), ChardevError> {
        let kick_fd = self.shared.kick.as_raw_fd();
        self.kick_watch = Some(
            ml.add_fd(
                kick_fd,
                Interest::READ,
                callback(&self.this, |dev, ml, _: Readiness| dev.on_kick(ml)),
            )
            .map_err(ChardevError::host("epoll"))?,
        );
        match self.backend {
            Backend::Plain { .. } => self.register_input(ml),
            Backend::Socket(_) => self.register_socket(ml, origin),
        }
    }

    /// Attaches a front end; see [`super::Chardevs::attach`].
    pub(crate) fn attach(
        &mut self,
        ml: &MainLoop,
        frontend: Arc<dyn ChardevFrontend>,
    ) -> Result<ChardevWriter, ChardevError> {
        if self.mux.is_some() {
            if self.slots.len() >= MAX_MUX_FRONTENDS {
                return Err(ChardevError::TooManyMuxUsers(self.id.clone()));
            }
        } else if !self.slots.is_empty() {
            return Err(ChardevError::InUse(self.id.clone()));
        }
        self.slots.push(Slot {
            frontend,
            pending: VecDeque::new(),
        });
        self.status.frontend_attached();
        let index = self.slots.len() - 1;
        if self.mux.is_some() {
            // QEMU gives the focus to the front end attached last.
            self.set_focus(index);
        }
        if self.started && self.open {
            self.events.push_back((index, ChardevEvent::Opened));
        }
        if self.started {
            let weak = self.this.clone();
            ml.defer(move |ml| {
                if let Some(dev) = weak.upgrade() {
                    let mut dev = dev.borrow_mut();
                    dev.dispatch_events();
                    dev.deliver(ml);
                }
            });
        }
        Ok(ChardevWriter::new(self.shared.clone()))
    }

    fn set_focus(&mut self, index: usize) {
        if let Some(old) = self.focus {
            self.events.push_back((old, ChardevEvent::FocusOut));
        }
        self.focus = Some(index);
        self.events.push_back((index, ChardevEvent::FocusIn));
    }

    fn start(&mut self, ml: &MainLoop) {
        self.started = true;
        if self.open {
            self.queue_to_all(ChardevEvent::Opened);
        }
        self.dispatch_events();
        self.deliver(ml);
    }

    /// The front end that receives input now.
    fn target(&self) -> Option<usize> {
        if self.mux.is_some() {
            self.focus
        } else if self.slots.is_empty() {
            None
        } else {
            Some(0)
        }
    }

    /// How many more bytes to read from the backend now.
    fn room(&self) -> usize {
        if !self.started {
            return 0;
        }
        match self.target() {
            Some(t) => INPUT_LIMIT.saturating_sub(self.slots[t].pending.len()),
            None => 0,
        }
    }

    fn queue_to_all(&mut self, event: ChardevEvent) {
        for index in 0..self.slots.len() {
            self.events.push_back((index, event));
        }
    }

    fn dispatch_events(&mut self) {
        while let Some((index, event)) = self.events.pop_front() {
            if let Some(slot) = self.slots.get(index) {
                slot.frontend.event(event);
            }
        }
    }

    fn writer(&self) -> ChardevWriter {
        ChardevWriter::new(self.shared.clone())
    }

    /// Routes bytes read from the backend (through the mux's escape keys if any).
    fn take_input(&mut self, ml: &MainLoop, bytes: &[u8]) {
        if self.mux.is_none() {
            if let Some(slot) = self.slots.first_mut() {
                slot.pending.extend(bytes);
            }
            return;
        }
        for &byte in bytes {
            let key = match &mut self.mux {
                Some(mux) => mux.key(byte),
                None => MuxKey::Data(byte),
            };
            match key {
                MuxKey::Data(b) => {
                    if let Some(t) = self.focus {
                        self.slots[t].pending.push_back(b);
                    }
                }
                MuxKey::Nothing => {}
                other => {
                    // Input before the key goes to the front end that had the focus.
                    self.deliver_pending();
                    self.mux_command(ml, other);
                }
            }
        }
    }

    fn mux_command(&mut self, ml: &MainLoop, key: MuxKey) {
        let mut out = self.writer();
        match key {
            MuxKey::Help => {
                let _ = out.write_all(HELP_TEXT);
            }
            MuxKey::Quit => {
                let _ = out.write_all(TERMINATED_TEXT);
                match &*self.hooks.quit.borrow() {
                    Some(quit) => quit(),
                    None => ml.request_exit(0),
                }
            }
            MuxKey::Commit => match &*self.hooks.commit.borrow() {
                Some(commit) => commit(),
                None => {
                    let _ = out.write_all(COMMIT_UNSUPPORTED_TEXT);
                }
            },
            MuxKey::Break => {
                if let Some(t) = self.focus {
                    self.events.push_back((t, ChardevEvent::Break));
                    self.dispatch_events();
                }
            }
            MuxKey::SwitchFocus => {
                if !self.slots.is_empty() {
                    let next = self.focus.map_or(0, |f| (f + 1) % self.slots.len());
                    self.set_focus(next);
                    self.dispatch_events();
                }
            }
            MuxKey::ToggleTimestamps => self.shared.toggle_timestamps(),
            MuxKey::Data(_) | MuxKey::Nothing => {}
        }
    }

    /// Gives the target front end what it can take of its pending input.
    fn deliver_pending(&mut self) {
        let Some(t) = self.target() else { return };
        if !self.started {
            return;
        }
        let slot = &mut self.slots[t];
        if slot.pending.is_empty() {
            return;
        }
        // Set before asking can_receive, so an accept_input racing with this check
        // always sees it and wakes us.
        self.shared.input_held.store(true, Ordering::Release);
        while !slot.pending.is_empty() {
            let n = slot.frontend.can_receive().min(slot.pending.len());
            if n == 0 {
                return;
            }
            let chunk: Vec<u8> = slot.pending.drain(..n).collect();
            slot.frontend.receive(&chunk);
        }
        self.shared.input_held.store(false, Ordering::Release);
    }

    /// Delivers pending input, then adjusts reading and handles end of input.
    fn deliver(&mut self, ml: &MainLoop) {
        let socket = matches!(self.backend, Backend::Socket(_));
        self.shared.set_delivering(socket);
        self.deliver_pending();
        self.shared.set_delivering(false);
        if socket {
            // What the front end answered goes out now (see `ChardevShared::set_delivering`).
            self.drain_output(ml);
        }
        self.update_reading(ml);
        self.check_end_of_input(ml);
    }

    fn input_drained(&self) -> bool {
        self.target()
            .is_none_or(|t| self.slots[t].pending.is_empty())
    }

    /// Watches the input fd exactly while there is room for more input.
    fn update_reading(&mut self, ml: &MainLoop) {
        let want = self.room() > 0;
        match self.backend {
            Backend::Plain { .. } => self.update_input_interest(ml, want),
            Backend::Socket(_) => self.update_socket_interest(ml, want),
        }
    }

    /// Once the peer's last byte has been taken, tell the front ends it is gone.
    fn check_end_of_input(&mut self, ml: &MainLoop) {
        if !self.input_drained() {
            return;
        }
        match self.backend {
            Backend::Plain { .. } => self.end_input_if_eof(ml),
            Backend::Socket(_) => self.disconnect_if_eof(ml),
        }
    }

    /// The loop was kicked: output to send, held input wanted, or a connect attempt done.
    fn on_kick(&mut self, ml: &MainLoop) {
        let _ = self.shared.kick.read();
        self.poll_connect_attempt(ml);
        self.drain_output(ml);
        if self.shared.input_held.load(Ordering::Acquire) {
            self.deliver(ml);
        }
    }

    /// Removes everything from the loop and sends what is queued until `deadline`.
    pub(crate) fn shutdown(&mut self, ml: &MainLoop, deadline: Instant) {
        if let Some(watch) = self.kick_watch.take() {
            ml.remove_fd(watch);
        }
        match self.backend {
            Backend::Plain { .. } => self.shutdown_plain(ml, deadline),
            Backend::Socket(_) => self.shutdown_socket(ml, deadline),
        }
    }
}
