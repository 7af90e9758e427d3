//! One open chardev on the loop thread: its backend, its front ends, input routing with
//! flow control, the mux, and connection events.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::main_loop::{Interest, MainLoop, Readiness, TimerId, WatchId};
use super::mux::{
    MuxEscape, MuxKey, COMMIT_UNSUPPORTED_TEXT, HELP_TEXT, MAX_MUX_FRONTENDS, TERMINATED_TEXT,
};
use super::output::{spawn_writer_thread, ChardevShared, ChardevWriter, Drain, ThreadSink};
use super::socket::{ConnectTarget, Server, Stream};
use super::telnet::{TelnetDecoder, TelnetInput, NEGOTIATION};
use super::{program_name, terminal, ChardevError, ChardevEvent, ChardevFrontend};
use crate::config::{ChardevBackend, ChardevConfig, SocketChardev};

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

enum InputFd {
    Stdin,
    File(File),
}

impl InputFd {
    fn raw(&self) -> RawFd {
        match self {
            InputFd::Stdin => libc::STDIN_FILENO,
            InputFd::File(f) => f.as_raw_fd(),
        }
    }
}

/// Input of a stdio, file or pipe chardev.
struct FdInput {
    fd: InputFd,
    /// None for fds epoll cannot watch (regular files, /dev/null): they are read
    /// ("pumped") whenever the front end has room.
    watch: Option<WatchId>,
    eof: bool,
    /// The front ends were told `Closed` after end of file.
    closed: bool,
    pump_scheduled: bool,
}

struct Connection {
    stream: Stream,
    watch: WatchId,
    telnet: Option<TelnetDecoder>,
    /// The peer sent end-of-file (or the connection broke).
    eof: bool,
    /// A send failed: the peer reads no more; output is dropped.
    write_failed: bool,
    /// Output is waiting for the socket to accept it.
    want_write: bool,
    /// The front ends were told `Closed`; only queued output is still being sent.
    closing: bool,
    drain_timer: Option<TimerId>,
}

type ConnectResult = Arc<Mutex<Option<Result<Stream, ChardevError>>>>;

enum Role {
    Server {
        server: Server,
        /// The listener's watch (set by `register`).
        watch: Option<WatchId>,
    },
    Client {
        target: ConnectTarget,
        reconnect: Option<Duration>,
        error_reported: bool,
        retry: Option<TimerId>,
        attempt: Option<ConnectResult>,
    },
}

struct SocketBackend {
    role: Role,
    telnet: bool,
    /// A server that blocks start-up until its first client connects.
    wait: bool,
    conn: Option<Connection>,
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

        let dev = Rc::new_cyclic(|this| {
            RefCell::new(Chardev {
                id: config.id.clone(),
                shared,
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
        let this = self.this.clone();
        match &mut self.backend {
            Backend::Plain { input, .. } => {
                if let Some(input) = input {
                    // Not watched until the front end can take input (see update_reading).
                    match ml.add_fd(
                        input.fd.raw(),
                        Interest::NONE,
                        callback(&this, |dev, ml, _: Readiness| dev.read_plain(ml)),
                    ) {
                        Ok(watch) => {
                            // NONE interest is not registered with epoll yet: try once
                            // now so regular files (EPERM) are detected up front.
                            if ml.set_interest(watch, Interest::READ).is_ok() {
                                let _ = ml.set_interest(watch, Interest::NONE);
                                input.watch = Some(watch);
                            } else {
                                ml.remove_fd(watch);
                            }
                        }
                        Err(e) => return Err(ChardevError::host("epoll")(e)),
                    }
                }
                Ok(())
            }
            Backend::Socket(socket) => {
                let wait = socket.wait;
                match &mut socket.role {
                    Role::Server { server, watch } => {
                        *watch = Some(
                            ml.add_fd(
                                server.listener.fd(),
                                Interest::READ,
                                callback(&this, |dev, ml, _: Readiness| dev.accept_clients(ml)),
                            )
                            .map_err(ChardevError::host("epoll"))?,
                        );
                        if wait {
                            let notice = format!(
                                "info: QEMU waiting for connection on: disconnected:{},server=on",
                                server.description
                            );
                            match origin {
                                Some(origin) => eprintln!("{}: {origin}: {notice}", program_name()),
                                None => eprintln!("{}: {notice}", program_name()),
                            }
                            let stream = server
                                .listener
                                .accept_blocking()
                                .map_err(ChardevError::host("accept"))?;
                            self.connected(ml, stream)?;
                        }
                        Ok(())
                    }
                    Role::Client {
                        target, reconnect, ..
                    } => match target.connect() {
                        Ok(stream) => self.connected(ml, stream),
                        Err(e) if reconnect.is_some() => {
                            self.report_connect_error(&e);
                            self.schedule_reconnect(ml);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                }
            }
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
        self.deliver_pending();
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
        let this = self.this.clone();
        match &mut self.backend {
            Backend::Plain {
                input: Some(input), ..
            } if !input.eof => match input.watch {
                Some(watch) => {
                    let interest = if want { Interest::READ } else { Interest::NONE };
                    let _ = ml.set_interest(watch, interest);
                }
                None if want && !input.pump_scheduled => {
                    input.pump_scheduled = true;
                    ml.defer(move |ml| {
                        if let Some(dev) = this.upgrade() {
                            let mut dev = dev.borrow_mut();
                            if let Backend::Plain {
                                input: Some(input), ..
                            } = &mut dev.backend
                            {
                                input.pump_scheduled = false;
                            }
                            dev.read_plain(ml);
                        }
                    });
                }
                None => {}
            },
            Backend::Socket(socket) => {
                if let Some(conn) = &socket.conn {
                    let read = want && !conn.eof && !conn.closing;
                    let mut interest = Interest::NONE;
                    if read {
                        interest = interest | Interest::READ;
                    }
                    if conn.want_write {
                        interest = interest | Interest::WRITE;
                    }
                    let _ = ml.set_interest(conn.watch, interest);
                }
            }
            Backend::Plain { .. } => {}
        }
    }

    /// Once the peer's last byte has been taken, tell the front ends it is gone.
    fn check_end_of_input(&mut self, ml: &MainLoop) {
        if !self.input_drained() {
            return;
        }
        let mut closed = false;
        match &mut self.backend {
            Backend::Plain {
                input: Some(input), ..
            } if input.eof && !input.closed => {
                if let Some(watch) = input.watch.take() {
                    ml.remove_fd(watch);
                }
                input.closed = true;
                closed = true;
            }
            Backend::Socket(socket) => {
                if socket.conn.as_ref().is_some_and(|c| c.eof && !c.closing) {
                    self.disconnect(ml);
                }
                return;
            }
            Backend::Plain { .. } => {}
        }
        if closed {
            self.queue_to_all(ChardevEvent::Closed);
            self.dispatch_events();
        }
    }

    /// Reads stdio/file/pipe input (readiness, or a pump for unpollable fds).
    fn read_plain(&mut self, ml: &MainLoop) {
        loop {
            let room = self.room();
            let (fd, pollable) = match &self.backend {
                Backend::Plain {
                    input: Some(input), ..
                } if !input.eof => (input.fd.raw(), input.watch.is_some()),
                _ => break,
            };
            if room == 0 {
                break;
            }
            let mut buf = vec![0u8; room.min(INPUT_LIMIT)];
            // SAFETY: `buf` is valid for writes of its length; the fd is open (stdin, or
            // a File owned by this chardev).
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                buf.truncate(n as usize);
                self.take_input(ml, &buf);
                self.deliver_pending();
            } else if n == 0 {
                self.set_plain_eof();
            } else {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    // EIO: the terminal went away. Treat like end of file.
                    _ => self.set_plain_eof(),
                }
            }
            // Pollable fds are read once per readiness; regular files until full or EOF.
            if pollable {
                break;
            }
        }
        self.deliver(ml);
    }

    fn set_plain_eof(&mut self) {
        if let Backend::Plain {
            input: Some(input), ..
        } = &mut self.backend
        {
            input.eof = true;
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

    // ---- sockets -------------------------------------------------------------------

    fn accept_clients(&mut self, ml: &MainLoop) {
        let Backend::Socket(socket) = &mut self.backend else {
            return;
        };
        if socket.conn.is_some() {
            return;
        }
        let Role::Server { server, .. } = &socket.role else {
            return;
        };
        match server.listener.accept() {
            Ok(Some(stream)) => {
                if let Err(e) = self.connected(ml, stream) {
                    eprintln!("{}: chardev {}: {e}", program_name(), self.id);
                }
            }
            Ok(None) => {}
            // ECONNABORTED and the like: the client is already gone; wait for the next.
            Err(_) => {}
        }
    }

    /// Takes a new connection into use.
    fn connected(&mut self, ml: &MainLoop, stream: Stream) -> Result<(), ChardevError> {
        let this = self.this.clone();
        let Backend::Socket(socket) = &mut self.backend else {
            return Ok(());
        };
        let watch = ml
            .add_fd(
                stream.fd(),
                Interest::NONE,
                callback(&this, |dev, ml, r: Readiness| dev.on_socket_ready(ml, r)),
            )
            .map_err(ChardevError::host("epoll"))?;
        match &mut socket.role {
            Role::Server { watch: listen, .. } => {
                // One client at a time: later ones wait in the backlog, as with QEMU.
                if let Some(listen) = listen {
                    let _ = ml.set_interest(*listen, Interest::NONE);
                }
            }
            Role::Client { error_reported, .. } => *error_reported = false,
        }
        if socket.telnet {
            // Before anything a front end writes (the banner).
            self.shared.queue_raw(&NEGOTIATION);
        }
        socket.conn = Some(Connection {
            stream,
            watch,
            telnet: socket.telnet.then(TelnetDecoder::default),
            eof: false,
            write_failed: false,
            want_write: false,
            closing: false,
            drain_timer: None,
        });
        self.shared.set_connected(true);
        self.open = true;
        if self.started {
            self.queue_to_all(ChardevEvent::Opened);
            self.dispatch_events();
        }
        self.drain_output(ml);
        self.update_reading(ml);
        Ok(())
    }

    fn on_socket_ready(&mut self, ml: &MainLoop, ready: Readiness) {
        if ready.writable {
            self.drain_output(ml);
        }
        if ready.readable || ready.hangup || ready.error {
            self.read_socket(ml);
        }
    }

    fn read_socket(&mut self, ml: &MainLoop) {
        let room = self.room();
        let Backend::Socket(SocketBackend {
            conn: Some(conn), ..
        }) = &mut self.backend
        else {
            return;
        };
        if conn.closing {
            // Not reading any more; a hang-up here means the peer is fully gone.
            if conn.want_write {
                return;
            }
            self.close_connection(ml);
            return;
        }
        if room == 0 || conn.eof {
            self.update_reading(ml);
            return;
        }
        let mut buf = vec![0u8; room.min(INPUT_LIMIT)];
        let items = match conn.stream.read(&mut buf) {
            Ok(0) => {
                conn.eof = true;
                Vec::new()
            }
            Ok(n) => {
                buf.truncate(n);
                match &mut conn.telnet {
                    Some(decoder) => decoder.decode(&buf),
                    None => vec![TelnetInput::Data(buf)],
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Vec::new()
            }
            // ECONNRESET and friends: what was read before still counts; this is the end.
            Err(_) => {
                conn.eof = true;
                Vec::new()
            }
        };
        for item in items {
            match item {
                TelnetInput::Data(data) => self.take_input(ml, &data),
                TelnetInput::Break => {
                    self.deliver_pending();
                    if let Some(t) = self.target() {
                        self.events.push_back((t, ChardevEvent::Break));
                        self.dispatch_events();
                    }
                }
            }
        }
        self.deliver(ml);
    }

    /// Sends queued output to the connected socket.
    fn drain_output(&mut self, ml: &MainLoop) {
        let Backend::Socket(SocketBackend {
            conn: Some(conn), ..
        }) = &mut self.backend
        else {
            return;
        };
        let was_wanting = conn.want_write;
        conn.want_write = false;
        loop {
            let chunk = self.shared.peek(64 * 1024);
            if chunk.is_empty() {
                break;
            }
            if conn.write_failed {
                self.shared.consume(chunk.len());
                continue;
            }
            match conn.stream.send(&chunk) {
                Ok(n) => self.shared.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.want_write = true;
                    break;
                }
                Err(_) => {
                    // The peer reads no more (EPIPE/ECONNRESET): drop output and let the
                    // read side finish the connection, as QEMU's read handler does.
                    conn.write_failed = true;
                }
            }
        }
        let closing_done = conn.closing && !conn.want_write;
        if closing_done {
            self.close_connection(ml);
        } else if was_wanting != conn.want_write {
            self.update_reading(ml);
        }
    }

    /// The peer is gone (its input fully taken): tell the front ends, then close once the
    /// replies queued for it are sent.
    fn disconnect(&mut self, ml: &MainLoop) {
        let this = self.this.clone();
        let Backend::Socket(SocketBackend {
            conn: Some(conn), ..
        }) = &mut self.backend
        else {
            return;
        };
        conn.closing = true;
        self.open = false;
        // Nothing written from now on is for this peer.
        self.shared.stop_accepting();
        conn.drain_timer = Some(ml.add_timer(DRAIN_GRACE, move |ml| {
            if let Some(dev) = this.upgrade() {
                dev.borrow_mut().close_connection(ml);
            }
        }));
        self.queue_to_all(ChardevEvent::Closed);
        self.dispatch_events();
        // Front ends may have written more before `Closed`; send it, then close.
        self.drain_output(ml);
    }

    fn close_connection(&mut self, ml: &MainLoop) {
        let Backend::Socket(socket) = &mut self.backend else {
            return;
        };
        let Some(conn) = socket.conn.take() else {
            return;
        };
        ml.remove_fd(conn.watch);
        if let Some(timer) = conn.drain_timer {
            ml.cancel_timer(timer);
        }
        let was_open = !conn.closing;
        drop(conn);
        self.shared.set_connected(false);
        self.open = false;
        if was_open {
            // Closed without the usual end-of-input path (shutdown).
            self.queue_to_all(ChardevEvent::Closed);
            self.dispatch_events();
        }
        for slot in &mut self.slots {
            slot.pending.clear();
        }
        self.shared.input_held.store(false, Ordering::Release);
        let Backend::Socket(socket) = &mut self.backend else {
            return;
        };
        match &socket.role {
            Role::Server { watch, .. } => {
                if let Some(watch) = watch {
                    let _ = ml.set_interest(*watch, Interest::READ);
                }
            }
            Role::Client { .. } => self.schedule_reconnect(ml),
        }
    }

    fn report_connect_error(&mut self, error: &ChardevError) {
        if let Backend::Socket(SocketBackend {
            role: Role::Client { error_reported, .. },
            ..
        }) = &mut self.backend
        {
            if !*error_reported {
                eprintln!(
                    "{}: Unable to connect character device {}: {error}",
                    program_name(),
                    self.id
                );
                *error_reported = true;
            }
        }
    }

    fn schedule_reconnect(&mut self, ml: &MainLoop) {
        let this = self.this.clone();
        if let Backend::Socket(SocketBackend {
            role:
                Role::Client {
                    reconnect: Some(delay),
                    retry,
                    ..
                },
            ..
        }) = &mut self.backend
        {
            *retry = Some(ml.add_timer(*delay, move |_| {
                if let Some(dev) = this.upgrade() {
                    dev.borrow_mut().start_connect_attempt();
                }
            }));
        }
    }

    /// Connects in a helper thread so a slow peer never stalls the loop; the result comes
    /// back through the kick eventfd.
    fn start_connect_attempt(&mut self) {
        let shared = self.shared.clone();
        if let Backend::Socket(SocketBackend {
            role:
                Role::Client {
                    target,
                    retry,
                    attempt,
                    ..
                },
            conn: None,
            ..
        }) = &mut self.backend
        {
            *retry = None;
            let slot: ConnectResult = Arc::new(Mutex::new(None));
            *attempt = Some(slot.clone());
            let target = target.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("chardev-{}-connect", shared.id))
                .spawn(move || {
                    let result = target.connect();
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    shared.kick();
                });
            if let Err(error) = spawned {
                *attempt = None;
                let error = ChardevError::Host {
                    what: "thread",
                    error,
                };
                eprintln!("{}: chardev {}: {error}", program_name(), self.id);
            }
        }
    }

    fn poll_connect_attempt(&mut self, ml: &MainLoop) {
        let Backend::Socket(SocketBackend {
            role: Role::Client { attempt, .. },
            ..
        }) = &mut self.backend
        else {
            return;
        };
        let Some(slot) = attempt.as_ref() else { return };
        let Some(result) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        *attempt = None;
        match result.and_then(|stream| self.connected(ml, stream)) {
            Ok(()) => {}
            Err(e) => {
                self.report_connect_error(&e);
                self.schedule_reconnect(ml);
            }
        }
    }

    /// Removes everything from the loop and sends what is queued until `deadline`.
    pub(crate) fn shutdown(&mut self, ml: &MainLoop, deadline: Instant) {
        if let Some(watch) = self.kick_watch.take() {
            ml.remove_fd(watch);
        }
        match &mut self.backend {
            Backend::Plain { input, stdio } => {
                if let Some(watch) = input.as_mut().and_then(|i| i.watch.take()) {
                    ml.remove_fd(watch);
                }
                self.shared.close();
                let _ = self
                    .shared
                    .wait_drained(deadline.saturating_duration_since(Instant::now()));
                if *stdio {
                    terminal::restore();
                    STDIO_IN_USE.store(false, Ordering::Release);
                }
                *input = None;
            }
            Backend::Socket(socket) => {
                match &mut socket.role {
                    Role::Server { watch, .. } => {
                        if let Some(watch) = watch.take() {
                            ml.remove_fd(watch);
                        }
                    }
                    Role::Client { retry, attempt, .. } => {
                        if let Some(timer) = retry.take() {
                            ml.cancel_timer(timer);
                        }
                        *attempt = None;
                    }
                }
                if let Some(conn) = socket.conn.take() {
                    ml.remove_fd(conn.watch);
                    if let Some(timer) = conn.drain_timer {
                        ml.cancel_timer(timer);
                    }
                    if !conn.write_failed {
                        send_until(&conn.stream, &self.shared, deadline);
                    }
                }
                self.shared.set_connected(false);
            }
        }
    }
}

impl FdInput {
    fn new(fd: InputFd) -> FdInput {
        FdInput {
            fd,
            watch: None,
            eof: false,
            closed: false,
            pump_scheduled: false,
        }
    }
}

impl SocketBackend {
    fn open(config: &SocketChardev) -> Result<SocketBackend, ChardevError> {
        let role = if config.server {
            Role::Server {
                server: Server::listen(config)?,
                watch: None,
            }
        } else {
            Role::Client {
                target: ConnectTarget::resolve(&config.address)?,
                reconnect: (config.reconnect_secs > 0)
                    .then(|| Duration::from_secs(config.reconnect_secs)),
                error_reported: false,
                retry: None,
                attempt: None,
            }
        };
        Ok(SocketBackend {
            role,
            telnet: config.telnet,
            wait: config.server && config.wait,
            conn: None,
        })
    }
}

/// Blocking best-effort send of the queue at shutdown.
fn send_until(stream: &Stream, shared: &ChardevShared, deadline: Instant) {
    loop {
        let chunk = shared.peek(64 * 1024);
        if chunk.is_empty() {
            return;
        }
        match stream.send(&chunk) {
            Ok(n) => shared.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                let mut pfd = libc::pollfd {
                    fd: stream.fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            Err(_) => return,
        }
    }
}

/// Opens a file chardev's output (or a logfile): created with mode 0666 (minus umask)
/// like QEMU, truncated unless appending.
fn create_output(path: &Path, append: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    options.open(path)
}

/// `pipe:PATH`: `PATH.in` and `PATH.out` when both open, else `PATH` both ways. Opened
/// read-write like QEMU, so opening a FIFO does not wait for its other end.
fn open_pipe(path: &Path) -> Result<(File, File), ChardevError> {
    let open_rw = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
    let with_suffix = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    if let (Ok(input), Ok(output)) = (open_rw(&with_suffix(".in")), open_rw(&with_suffix(".out"))) {
        return Ok((input, output));
    }
    let open_error = |error| ChardevError::Open {
        path: path.to_path_buf(),
        error,
    };
    let both = open_rw(path).map_err(open_error)?;
    let output = both.try_clone().map_err(open_error)?;
    Ok((both, output))
}
