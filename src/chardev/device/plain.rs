//! Input of stdio, file and pipe chardevs, and opening their files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{callback, Backend, Chardev, INPUT_LIMIT, STDIO_IN_USE};
use crate::chardev::main_loop::{Interest, MainLoop, Readiness, WatchId};
use crate::chardev::{terminal, ChardevError, ChardevEvent};

pub(super) enum InputFd {
    Stdin,
    File(File),
}

impl InputFd {
    pub(super) fn raw(&self) -> RawFd {
        match self {
            InputFd::Stdin => libc::STDIN_FILENO,
            InputFd::File(f) => f.as_raw_fd(),
        }
    }
}

/// Input of a stdio, file or pipe chardev.
pub(super) struct FdInput {
    pub(super) fd: InputFd,
    /// None for fds epoll cannot watch (regular files, /dev/null): they are read
    /// ("pumped") whenever the front end has room.
    pub(super) watch: Option<WatchId>,
    pub(super) eof: bool,
    /// The front ends were told `Closed` after end of file.
    pub(super) closed: bool,
    pub(super) pump_scheduled: bool,
}

impl FdInput {
    pub(super) fn new(fd: InputFd) -> FdInput {
        FdInput {
            fd,
            watch: None,
            eof: false,
            closed: false,
            pump_scheduled: false,
        }
    }
}

impl Chardev {
    /// Watches the input fd (not yet: only once a front end can take input).
    pub(super) fn register_input(&mut self, ml: &MainLoop) -> Result<(), ChardevError> {
        let this = self.this.clone();
        let Backend::Plain {
            input: Some(input), ..
        } = &mut self.backend
        else {
            return Ok(());
        };
        let watch = ml
            .add_fd(
                input.fd.raw(),
                Interest::NONE,
                callback(&this, |dev, ml, _: Readiness| dev.read_plain(ml)),
            )
            .map_err(ChardevError::host("epoll"))?;
        // NONE interest is not registered with epoll yet: try once now, so fds epoll
        // refuses (EPERM: regular files, /dev/null) are known to need pumping.
        if ml.set_interest(watch, Interest::READ).is_ok() {
            let _ = ml.set_interest(watch, Interest::NONE);
            input.watch = Some(watch);
        } else {
            ml.remove_fd(watch);
        }
        Ok(())
    }

    pub(super) fn update_input_interest(&mut self, ml: &MainLoop, want: bool) {
        let this = self.this.clone();
        let Backend::Plain {
            input: Some(input), ..
        } = &mut self.backend
        else {
            return;
        };
        if input.eof {
            return;
        }
        match input.watch {
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
        }
    }

    /// End of input: stop watching and tell the front ends (QEMU sends CLOSED then).
    pub(super) fn end_input_if_eof(&mut self, ml: &MainLoop) {
        let Backend::Plain {
            input: Some(input), ..
        } = &mut self.backend
        else {
            return;
        };
        if !input.eof || input.closed {
            return;
        }
        if let Some(watch) = input.watch.take() {
            ml.remove_fd(watch);
        }
        input.closed = true;
        self.queue_to_all(ChardevEvent::Closed);
        self.dispatch_events();
    }

    pub(super) fn shutdown_plain(&mut self, ml: &MainLoop, deadline: Instant) {
        let Backend::Plain { input, stdio } = &mut self.backend else {
            return;
        };
        if let Some(watch) = input.as_mut().and_then(|i| i.watch.take()) {
            ml.remove_fd(watch);
        }
        *input = None;
        self.shared.close();
        let _ = self
            .shared
            .wait_drained(deadline.saturating_duration_since(Instant::now()));
        if *stdio {
            terminal::restore();
            STDIO_IN_USE.store(false, Ordering::Release);
        }
    }

    /// Reads stdio/file/pipe input (readiness, or a pump for unpollable fds).
    pub(super) fn read_plain(&mut self, ml: &MainLoop) {
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

    pub(super) fn set_plain_eof(&mut self) {
        if let Backend::Plain {
            input: Some(input), ..
        } = &mut self.backend
        {
            input.eof = true;
        }
    }
}

/// Opens a file chardev's output (or a logfile): created with mode 0666 (minus umask)
/// like QEMU, truncated unless appending.
pub(super) fn create_output(path: &Path, append: bool) -> io::Result<File> {
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
pub(super) fn open_pipe(path: &Path) -> Result<(File, File), ChardevError> {
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
