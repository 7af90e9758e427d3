//! Unix and TCP sockets for socket chardevs: resolving, listening, connecting, and the
//! texts QEMU uses to describe them.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ChardevError;
use crate::config::{SocketAddress, SocketChardev};

/// A connected stream.
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Tcp(s) => {
                // Small monitor replies must not wait for Nagle.
                s.set_nodelay(true)?;
                s.set_nonblocking(true)
            }
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    /// QEMU's `filename` of a connected socket chardev: `unix:<local path>[,server=on]`
    /// (a client's own end has no path: `unix:`), or
    /// `<kind>:<local address>[,server=on] <-> <peer address>` for TCP.
    pub(crate) fn connection_filename(&self, kind: &str, server: bool) -> String {
        let server = if server { ",server=on" } else { "" };
        match self {
            Stream::Unix(s) => {
                let local = s.local_addr().ok();
                let path = local
                    .as_ref()
                    .and_then(|a| a.as_pathname())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                format!("unix:{path}{server}")
            }
            Stream::Tcp(s) => {
                let text =
                    |a: io::Result<SocketAddr>| a.map_or_else(|_| "?".into(), |a| a.to_string());
                format!(
                    "{kind}:{}{server} <-> {}",
                    text(s.local_addr()),
                    text(s.peer_addr())
                )
            }
        }
    }

    /// Non-blocking send that never raises SIGPIPE.
    pub(crate) fn send(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `data` is a valid buffer of its length and the fd is an open socket
            // owned by `self`.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// A listening socket.
pub(crate) enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }

    /// Accepts one pending client (non-blocking listener); `Ok(None)` when none is left.
    pub(crate) fn accept(&self) -> io::Result<Option<Stream>> {
        let stream = match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        };
        match stream {
            Ok(stream) => {
                stream.set_nonblocking()?;
                Ok(Some(stream))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Blocks until a client connects (a `wait` server at start-up). Ctrl-C and other
    /// termination signals still end the process meanwhile, as with QEMU.
    pub(crate) fn accept_blocking(&self) -> io::Result<Stream> {
        loop {
            super::signals::die_if_termination_signal_pending();
            let mut pfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; wakes up now and then to look for signals.
            let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if let Some(stream) = self.accept()? {
                return Ok(stream);
            }
        }
    }
}

/// Where a client chardev connects to.
#[derive(Clone, Debug)]
pub(crate) enum ConnectTarget {
    Unix(PathBuf),
    Tcp {
        /// `host:port` as given, for messages.
        text: String,
        addrs: Vec<SocketAddr>,
    },
}

impl ConnectTarget {
    pub(crate) fn resolve(address: &SocketAddress) -> Result<ConnectTarget, ChardevError> {
        match address {
            SocketAddress::Unix { path } => Ok(ConnectTarget::Unix(path.clone())),
            SocketAddress::Tcp { host, port } => {
                let host = if host.is_empty() { "localhost" } else { host };
                Ok(ConnectTarget::Tcp {
                    text: format!("{host}:{port}"),
                    addrs: resolve(host, *port)?,
                })
            }
        }
    }

    /// The address as QEMU quotes it in `Failed to connect to '...'`.
    pub(crate) fn text(&self) -> String {
        match self {
            ConnectTarget::Unix(path) => path.display().to_string(),
            ConnectTarget::Tcp { text, .. } => text.clone(),
        }
    }

    /// One blocking connection attempt (every resolved address in turn).
    pub(crate) fn connect(&self) -> Result<Stream, ChardevError> {
        let result = match self {
            ConnectTarget::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            ConnectTarget::Tcp { addrs, .. } => {
                let mut last = io::Error::from_raw_os_error(libc::ECONNREFUSED);
                let mut connected = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(addr, Duration::from_secs(30)) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                connected.map(Stream::Tcp).ok_or(last)
            }
        };
        let error_for = |error| ChardevError::Connect {
            address: self.text(),
            error,
        };
        let stream = result.map_err(error_for)?;
        stream.set_nonblocking().map_err(error_for)?;
        Ok(stream)
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ChardevError> {
    let resolve_error = |reason: String| ChardevError::Resolve {
        host: host.to_string(),
        port,
        reason,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            // std words it "failed to lookup address information: <gai_strerror>"; QEMU
            // prints the gai_strerror text alone.
            let text = e.to_string();
            let reason = text
                .strip_prefix("failed to lookup address information: ")
                .unwrap_or(&text)
                .to_string();
            resolve_error(reason)
        })?
        .collect();
    if addrs.is_empty() {
        return Err(resolve_error("Name or service not known".to_string()));
    }
    // QEMU's getaddrinfo hints prefer IPv4 for `localhost` (it printed 127.0.0.1).
    let mut sorted: Vec<SocketAddr> = addrs.iter().filter(|a| a.is_ipv4()).copied().collect();
    sorted.extend(addrs.iter().filter(|a| a.is_ipv6()));
    Ok(sorted)
}

/// A listening server socket and how QEMU describes it.
pub(crate) struct Server {
    pub(crate) listener: Listener,
    /// `unix:/tmp/s` / `tcp:127.0.0.1:4444` / `telnet:0.0.0.0:4444` (QEMU's filename form
    /// without the `disconnected:` prefix and `,server=on` suffix).
    pub(crate) description: String,
    /// The socket file we created, removed again on close (QEMU does too).
    pub(crate) unlink_on_close: Option<PathBuf>,
}

impl Server {
    pub(crate) fn listen(config: &SocketChardev) -> Result<Server, ChardevError> {
        let kind = if config.telnet { "telnet" } else { "tcp" };
        match &config.address {
            SocketAddress::Unix { path } => {
                remove_stale_socket(path)?;
                let listener =
                    UnixListener::bind(path).map_err(|error| ChardevError::BindUnix {
                        path: path.clone(),
                        error,
                    })?;
                listener
                    .set_nonblocking(true)
                    .map_err(ChardevError::host("socket"))?;
                Ok(Server {
                    listener: Listener::Unix(listener),
                    description: format!("unix:{}", path.display()),
                    unlink_on_close: Some(path.clone()),
                })
            }
            SocketAddress::Tcp { host, port } => {
                // `tcp::4444,server` listens on every interface, which QEMU shows as 0.0.0.0.
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                let mut last = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
                for addr in resolve(host, *port)? {
                    match TcpListener::bind(addr) {
                        Ok(listener) => {
                            listener
                                .set_nonblocking(true)
                                .map_err(ChardevError::host("socket"))?;
                            let local = listener.local_addr().unwrap_or(addr);
                            return Ok(Server {
                                listener: Listener::Tcp(listener),
                                description: format!("{kind}:{local}"),
                                unlink_on_close: None,
                            });
                        }
                        Err(e) => last = e,
                    }
                }
                Err(ChardevError::BindTcp { error: last })
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(path) = &self.unlink_on_close {
            // Only remove it if it is still our socket (not replaced by another server).
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// QEMU unlinks whatever is at a server socket's path before binding.
fn remove_stale_socket(path: &Path) -> Result<(), ChardevError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ChardevError::Unlink {
            path: path.to_path_buf(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_errors_use_gai_text() {
        let err = resolve("nosuchhost.invalid", 5555).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("address resolution failed for nosuchhost.invalid:5555: "),
            "{text}"
        );
        assert!(!text.contains("failed to lookup"), "{text}");
    }

    #[test]
    fn tcp_server_description_shows_bound_address() {
        let config = SocketChardev {
            address: SocketAddress::Tcp {
                host: "localhost".into(),
                port: 0,
            },
            server: true,
            wait: false,
            telnet: true,
            reconnect_secs: 0,
        };
        let server = Server::listen(&config).unwrap();
        assert!(
            server.description.starts_with("telnet:127.0.0.1:"),
            "{}",
            server.description
        );
    }
}
