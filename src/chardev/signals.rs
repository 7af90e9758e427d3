//! SIGINT, SIGTERM and SIGHUP handled on the main loop, as QEMU does: print
//! `<prog>: terminating on signal N[ from pid P (<cmd>)]` and shut down in order (exit
//! status 0). With `-serial stdio` (signal=on) a Ctrl-C on the terminal arrives here.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};

use super::main_loop::{Interest, MainLoop, Readiness};
use super::program_name;

/// One termination signal as the loop received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminationSignal {
    pub signal: i32,
    /// The sender, when a process sent it (0 for a terminal's Ctrl-C).
    pub pid: u32,
}

impl TerminationSignal {
    /// QEMU 7.2's message, without the program-name prefix.
    pub fn message(&self) -> String {
        if self.pid == 0 {
            return format!("terminating on signal {}", self.signal);
        }
        let name = std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .ok()
            .and_then(|cmdline| {
                let first = cmdline.split(|&b| b == 0).next()?.to_vec();
                (!first.is_empty()).then(|| String::from_utf8_lossy(&first).into_owned())
            })
            .unwrap_or_else(|| "<unknown process>".to_string());
        format!(
            "terminating on signal {} from pid {} ({name})",
            self.signal, self.pid
        )
    }
}

const TERMINATION_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Blocks the termination signals in the calling thread. Helper threads of the chardev
/// layer call it first thing, so a Ctrl-C is never delivered to them (whose default
/// action would end the process without restoring the terminal), whatever the order in
/// which the machine sets things up.
pub(crate) fn block_termination_signals_in_this_thread() {
    let set = termination_sigset();
    // SAFETY: valid sigset pointer; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn termination_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset/sigaddset with valid
    // signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in TERMINATION_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// For waits outside the loop (a `wait` server at start-up): if a termination signal is
/// pending (blocked by [`MainLoop::handle_termination_signals`]), die of it as QEMU does
/// there (its handlers are not running yet either), restoring the terminal first.
pub(crate) fn die_if_termination_signal_pending() {
    // SAFETY: sigset_t is plain data; sigpending fills it in.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::sigpending(&mut pending) } != 0 {
        return;
    }
    for sig in TERMINATION_SIGNALS {
        // SAFETY: valid set pointer and signal number.
        if unsafe { libc::sigismember(&pending, sig) } == 1 {
            super::terminal::restore();
            // SAFETY: default disposition, then unblocking delivers the pending signal,
            // whose default action ends the process.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }
}

impl MainLoop {
    /// Receives SIGINT, SIGTERM and SIGHUP through a signalfd on this loop. On each, the
    /// QEMU message is printed to stderr and `on_signal` runs (the machine shuts down
    /// through it, e.g. `|ml, _| ml.request_exit(0)`).
    ///
    /// The signals are blocked in the calling thread: call this on the main thread before
    /// any other thread is spawned, so that every thread inherits the mask and the
    /// signalfd is the only receiver.
    pub fn handle_termination_signals(
        &self,
        mut on_signal: impl FnMut(&MainLoop, &TerminationSignal) + 'static,
    ) -> io::Result<()> {
        let set = termination_sigset();
        // SAFETY: valid sigset pointer; the old mask is not needed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 creates a new signalfd for a valid sigset.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created fd nobody else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let raw = file.as_raw_fd();
        self.add_fd(raw, Interest::READ, move |ml, _: Readiness| {
            let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            while let Ok(n) = file.read(&mut buf) {
                if n != buf.len() {
                    break;
                }
                // SAFETY: the kernel wrote a whole signalfd_siginfo; read_unaligned copes
                // with the byte buffer's alignment.
                let info: libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
                let signal = TerminationSignal {
                    signal: info.ssi_signo as i32,
                    pid: info.ssi_pid,
                };
                eprintln!("{}: {}", program_name(), signal.message());
                on_signal(ml, &signal);
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let tty = TerminationSignal { signal: 2, pid: 0 };
        assert_eq!(tty.message(), "terminating on signal 2");
        let me = TerminationSignal {
            signal: 15,
            pid: std::process::id(),
        };
        let text = me.message();
        assert!(
            text.starts_with(&format!("terminating on signal 15 from pid {} (", me.pid)),
            "{text}"
        );
        let gone = TerminationSignal {
            signal: 15,
            pid: u32::MAX - 1,
        };
        assert!(gone.message().ends_with("(<unknown process>)"));
    }
}
