//! Socket chardev connections: accepting (one client at a time), connecting and
//! reconnecting, reading with telnet filtering, sending queued output, and the orderly
//! disconnect that lets a half-closed client still get its replies.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{callback, Backend, Chardev, DRAIN_GRACE, INPUT_LIMIT};
use crate::chardev::main_loop::{Interest, MainLoop, Readiness, TimerId, WatchId};
use crate::chardev::output::ChardevShared;
use crate::chardev::socket::{ConnectTarget, Server, Stream};
use crate::chardev::telnet::{TelnetDecoder, TelnetInput, NEGOTIATION};
use crate::chardev::{program_name, ChardevError, ChardevEvent};
use crate::config::SocketChardev;

pub(super) struct Connection {
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

pub(super) enum Role {
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

pub(super) struct SocketBackend {
    role: Role,
    telnet: bool,
    /// A server that blocks start-up until its first client connects.
    wait: bool,
    conn: Option<Connection>,
}

impl SocketBackend {
    pub(super) fn open(config: &SocketChardev) -> Result<SocketBackend, ChardevError> {
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

impl SocketBackend {
    fn kind(&self) -> &'static str {
        if self.telnet {
            "telnet"
        } else {
            "tcp"
        }
    }

    /// QEMU's `filename` while no peer is connected: `disconnected:unix:/tmp/s,server=on`,
    /// `disconnected:tcp:localhost:4444` (a client's address as given).
    pub(super) fn disconnected_filename(&self) -> String {
        match &self.role {
            Role::Server { server, .. } => {
                format!("disconnected:{},server=on", server.description)
            }
            Role::Client { target, .. } => match target {
                ConnectTarget::Unix(_) => format!("disconnected:unix:{}", target.text()),
                ConnectTarget::Tcp { .. } => {
                    format!("disconnected:{}:{}", self.kind(), target.text())
                }
            },
        }
    }
}

impl Chardev {
    /// Listens (a `wait` server also takes its first client now) or connects.
    pub(super) fn register_socket(
        &mut self,
        ml: &MainLoop,
        origin: Option<&str>,
    ) -> Result<(), ChardevError> {
        let this = self.this.clone();
        let Backend::Socket(socket) = &mut self.backend else {
            return Ok(());
        };
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
                    eprintln!("{}", wait_notice(&server.description, origin));
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

    pub(super) fn update_socket_interest(&mut self, ml: &MainLoop, want: bool) {
        let Backend::Socket(SocketBackend {
            conn: Some(conn), ..
        }) = &self.backend
        else {
            return;
        };
        let mut interest = Interest::NONE;
        if want && !conn.eof && !conn.closing {
            interest = interest | Interest::READ;
        }
        if conn.want_write {
            interest = interest | Interest::WRITE;
        }
        let _ = ml.set_interest(conn.watch, interest);
    }

    pub(super) fn disconnect_if_eof(&mut self, ml: &MainLoop) {
        if let Backend::Socket(SocketBackend {
            conn: Some(conn), ..
        }) = &self.backend
        {
            if conn.eof && !conn.closing {
                self.disconnect(ml);
            }
        }
    }

    pub(super) fn shutdown_socket(&mut self, ml: &MainLoop, deadline: Instant) {
        let Backend::Socket(socket) = &mut self.backend else {
            return;
        };
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
        let is_server = matches!(socket.role, Role::Server { .. });
        self.status
            .set_filename(stream.connection_filename(socket.kind(), is_server));
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

    pub(super) fn on_socket_ready(&mut self, ml: &MainLoop, ready: Readiness) {
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
    pub(super) fn drain_output(&mut self, ml: &MainLoop) {
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
        let Backend::Socket(socket) = &mut self.backend else {
            return;
        };
        let filename = socket.disconnected_filename();
        let Some(conn) = &mut socket.conn else {
            return;
        };
        conn.closing = true;
        self.open = false;
        self.status.set_filename(filename);
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
                    crate::chardev::signals::block_termination_signals_in_this_thread();
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

    pub(super) fn poll_connect_attempt(&mut self, ml: &MainLoop) {
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

/// QEMU's notice before a `wait` server blocks: `<prog>: <option>: info: QEMU waiting
/// for connection on: disconnected:unix:/tmp/s,server=on`.
fn wait_notice(description: &str, origin: Option<&str>) -> String {
    let notice =
        format!("info: QEMU waiting for connection on: disconnected:{description},server=on");
    match origin {
        Some(origin) => format!("{}: {origin}: {notice}", program_name()),
        None => format!("{}: {notice}", program_name()),
    }
}
