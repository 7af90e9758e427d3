//! Chardev backends from the configuration: null, stdio, file, pipe and stream sockets
//! (unix or tcp, server or client, optionally telnet), all serviced by the main loop.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use vmm_sys_util::epoll::EventSet;

use super::device::{Chardev, Sink};
use super::mainloop::MainLoop;
use super::stdio;
use super::telnet::{TelnetFilter, TELNET_GREETING};
use crate::config::{ChardevBackend, ChardevConfig, SocketAddress, SocketChardev};

#[derive(Debug, thiserror::Error)]
pub enum ChardevError {
    #[error("Failed to bind socket to {what}: {source}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to connect to '{what}': {source}")]
    Connect {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Could not open '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chardev '{id}': {what} is not supported yet by vmscope")]
    Unsupported { id: String, what: &'static str },
    #[error("chardev '{0}' not found")]
    NotFound(String),
    #[error("main loop: {0}")]
    Loop(#[source] std::io::Error),
}

/// Every chardev of the VM, by id.
#[derive(Default)]
pub struct Chardevs {
    devices: HashMap<String, Arc<Chardev>>,
}

impl Chardevs {
    /// Opens every configured chardev and registers its fds with the loop. Servers with
    /// `wait` block here until their first client connects, as QEMU does at start-up.
    pub fn open(
        configs: &[ChardevConfig],
        main_loop: &mut MainLoop,
    ) -> Result<Chardevs, ChardevError> {
        let mut devices = HashMap::new();
        for config in configs {
            let dev = Chardev::new(&config.id, config.mux, main_loop.handle());
            open_backend(config, &dev, main_loop)?;
            devices.insert(config.id.clone(), dev);
        }
        Ok(Chardevs { devices })
    }

    pub fn get(&self, id: &str) -> Result<Arc<Chardev>, ChardevError> {
        self.devices
            .get(id)
            .cloned()
            .ok_or_else(|| ChardevError::NotFound(id.to_string()))
    }

    /// Tells every front end attached so far that its backend is open (stdio and files are
    /// open from the start; sockets say so when a client connects).
    pub fn announce_open(&self, configs: &[ChardevConfig]) {
        for config in configs {
            if !matches!(config.backend, ChardevBackend::Socket(_)) {
                if let Some(dev) = self.devices.get(&config.id) {
                    dev.notify_opened();
                }
            }
        }
    }
}

fn open_backend(
    config: &ChardevConfig,
    dev: &Arc<Chardev>,
    main_loop: &mut MainLoop,
) -> Result<(), ChardevError> {
    if config.logfile.is_some() {
        return Err(ChardevError::Unsupported {
            id: config.id.clone(),
            what: "logfile=",
        });
    }
    match &config.backend {
        ChardevBackend::Null => Ok(()),
        ChardevBackend::Stdio { signal } => {
            stdio::enter_raw_mode(*signal);
            dev.set_sink(Sink::Writer(Box::new(std::io::stdout())));
            watch_reader(main_loop, dev.clone(), Box::new(std::io::stdin()), 0)
        }
        ChardevBackend::File {
            path,
            input_path,
            append,
        } => {
            if input_path.is_some() {
                return Err(ChardevError::Unsupported {
                    id: config.id.clone(),
                    what: "input-path=",
                });
            }
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .append(*append)
                .truncate(!*append)
                .open(path)
                .map_err(|source| ChardevError::Open {
                    path: path.display().to_string(),
                    source,
                })?;
            dev.set_sink(Sink::Writer(Box::new(file)));
            Ok(())
        }
        ChardevBackend::Pipe { path } => {
            let open = |p: &std::path::Path| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(p)
                    .map_err(|source| ChardevError::Open {
                        path: p.display().to_string(),
                        source,
                    })
            };
            let input = path.with_extension_suffix(".in");
            let output = path.with_extension_suffix(".out");
            let (reader, writer) = if input.exists() && output.exists() {
                (open(&input)?, open(&output)?)
            } else {
                let both = open(path)?;
                let clone = both.try_clone().map_err(|source| ChardevError::Open {
                    path: path.display().to_string(),
                    source,
                })?;
                (both, clone)
            };
            dev.set_sink(Sink::Writer(Box::new(writer)));
            let fd = reader.as_raw_fd();
            watch_reader(main_loop, dev.clone(), Box::new(reader), fd)
        }
        ChardevBackend::Socket(socket) => open_socket(&config.id, socket, dev, main_loop),
    }
}

trait PathSuffix {
    fn with_extension_suffix(&self, suffix: &str) -> std::path::PathBuf;
}

impl PathSuffix for std::path::Path {
    fn with_extension_suffix(&self, suffix: &str) -> std::path::PathBuf {
        let mut s = self.as_os_str().to_owned();
        s.push(suffix);
        s.into()
    }
}

/// Reads input from `fd` on the loop and feeds it to the chardev until EOF. Descriptors
/// epoll cannot watch (a regular file on stdin) are read by a helper thread instead.
fn watch_reader(
    main_loop: &mut MainLoop,
    dev: Arc<Chardev>,
    mut reader: Box<dyn Read + Send>,
    fd: RawFd,
) -> Result<(), ChardevError> {
    set_nonblocking(fd, true);
    let loop_dev = dev.clone();
    let handler = Box::new(move |main_loop: &mut MainLoop, _events: EventSet| {
        let mut buf = [0u8; 4096];
        match reader.read(&mut buf) {
            Ok(0) => main_loop.remove(fd),
            Ok(n) => loop_dev.input(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => main_loop.remove(fd),
        }
    });
    match main_loop.add(fd, EventSet::IN, handler) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            set_nonblocking(fd, false);
            let handle = dev.clone();
            let loop_handle = main_loop_handle(main_loop);
            std::thread::Builder::new()
                .name(format!("chardev {}", dev.id()))
                .spawn(move || {
                    let mut file = dup_file(fd);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = file.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let data = buf[..n].to_vec();
                        let handle = handle.clone();
                        loop_handle.post(move |_| handle.input(&data));
                    }
                })
                .map(|_| ())
                .map_err(ChardevError::Loop)
        }
        Err(e) => Err(ChardevError::Loop(e)),
    }
}

fn main_loop_handle(main_loop: &MainLoop) -> super::mainloop::LoopHandle {
    main_loop.handle()
}

fn dup_file(fd: RawFd) -> File {
    use std::os::fd::FromRawFd;
    // SAFETY: dup returns a new descriptor this function then owns exclusively.
    unsafe { File::from_raw_fd(libc::dup(fd)) }
}

fn set_nonblocking(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a descriptor the caller keeps open; only the O_NONBLOCK flag changes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            let flags = if on {
                flags | libc::O_NONBLOCK
            } else {
                flags & !libc::O_NONBLOCK
            };
            libc::fcntl(fd, libc::F_SETFL, flags);
        }
    }
}

/// A connected stream of either family.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
    fn writer(&self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Stream::Unix(s) => Box::new(s.try_clone()?),
            Stream::Tcp(s) => Box::new(s.try_clone()?),
        })
    }
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => Stream::Tcp(l.accept()?.0),
        })
    }
    fn fd(&self) -> RawFd {
        match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

fn describe(address: &SocketAddress) -> String {
    match address {
        SocketAddress::Unix { path } => path.display().to_string(),
        SocketAddress::Tcp { host, port } => format!("{host}:{port}"),
    }
}

fn open_socket(
    id: &str,
    socket: &SocketChardev,
    dev: &Arc<Chardev>,
    main_loop: &mut MainLoop,
) -> Result<(), ChardevError> {
    if !socket.server {
        if socket.reconnect_secs != 0 {
            return Err(ChardevError::Unsupported {
                id: id.to_string(),
                what: "reconnect=",
            });
        }
        let stream = match &socket.address {
            SocketAddress::Unix { path } => UnixStream::connect(path).map(Stream::Unix),
            SocketAddress::Tcp { host, port } => {
                TcpStream::connect((host.as_str(), *port)).map(Stream::Tcp)
            }
        }
        .map_err(|source| ChardevError::Connect {
            what: describe(&socket.address),
            source,
        })?;
        return attach_client(stream, socket.telnet, dev.clone(), main_loop, None);
    }

    let listener = match &socket.address {
        SocketAddress::Unix { path } => {
            // A stale socket file from an earlier run would make bind fail; QEMU removes it.
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path).map(Listener::Unix)
        }
        SocketAddress::Tcp { host, port } => {
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            TcpListener::bind((host, *port)).map(Listener::Tcp)
        }
    }
    .map_err(|source| ChardevError::Bind {
        what: describe(&socket.address),
        source,
    })?;
    let listener = Arc::new(listener);

    if socket.wait {
        let address = match &socket.address {
            SocketAddress::Unix { path } => format!("unix:{}", path.display()),
            SocketAddress::Tcp { host, port } => format!("tcp:{host}:{port}"),
        };
        eprintln!(
            "{}: -chardev socket,id={id}: info: QEMU waiting for connection on: disconnected:{address},server=on",
            crate::program_name()
        );
        let stream = listener.accept().map_err(ChardevError::Loop)?;
        attach_client(
            stream,
            socket.telnet,
            dev.clone(),
            main_loop,
            Some(listener.clone()),
        )?;
    } else {
        watch_listener(listener, socket.telnet, dev.clone(), main_loop)?;
    }
    Ok(())
}

/// Accepts one client at a time; while one is connected the listener is not watched, so
/// further clients queue in the kernel's backlog until it leaves (QEMU behaves the same).
fn watch_listener(
    listener: Arc<Listener>,
    telnet: bool,
    dev: Arc<Chardev>,
    main_loop: &mut MainLoop,
) -> Result<(), ChardevError> {
    let fd = listener.fd();
    let handler = Box::new(move |main_loop: &mut MainLoop, _: EventSet| {
        if let Ok(stream) = listener.accept() {
            main_loop.remove(fd);
            if attach_client(
                stream,
                telnet,
                dev.clone(),
                main_loop,
                Some(listener.clone()),
            )
            .is_err()
            {
                let _ = watch_listener(listener.clone(), telnet, dev.clone(), main_loop);
            }
        }
    });
    main_loop
        .add(fd, EventSet::IN, handler)
        .map_err(ChardevError::Loop)
}

fn attach_client(
    mut stream: Stream,
    telnet: bool,
    dev: Arc<Chardev>,
    main_loop: &mut MainLoop,
    listener: Option<Arc<Listener>>,
) -> Result<(), ChardevError> {
    let mut writer = stream.writer().map_err(ChardevError::Loop)?;
    if telnet {
        let _ = writer.write_all(TELNET_GREETING);
    }
    dev.set_sink(Sink::Writer(writer));
    let fd = stream.fd();
    set_nonblocking(fd, true);
    let mut filter = TelnetFilter::new(telnet);
    let loop_dev = dev.clone();
    let handler = Box::new(move |main_loop: &mut MainLoop, _: EventSet| {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => {
                let data = filter.strip(&buf[..n]);
                loop_dev.input(&data);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            // EOF or error: the client left. Input already read has been handled above,
            // so a command sent right before a half-close has run.
            _ => {
                main_loop.remove(fd);
                loop_dev.set_sink(Sink::Discard);
                if let Some(listener) = &listener {
                    let _ = watch_listener(listener.clone(), telnet, loop_dev.clone(), main_loop);
                }
            }
        }
    });
    main_loop
        .add(fd, EventSet::IN, handler)
        .map_err(ChardevError::Loop)?;
    dev.notify_opened();
    Ok(())
}
