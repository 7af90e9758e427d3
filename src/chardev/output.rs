//! The output side of a chardev: [`ChardevWriter`], the bounded in-memory queue behind it,
//! and the drains that move queued bytes to the backend.
//!
//! Front ends write from any thread (the vCPU thread for the serial port, the loop thread
//! for the monitor). A write never blocks: it appends to the chardev's queue and wakes the
//! drain. Sockets are drained by the main loop (non-blocking fds we own); stdio, files and
//! pipes by one writer thread per chardev, because their fds may be shared with other
//! processes (a terminal, a shell's pipe) where switching to non-blocking mode would leak.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

/// Queue bound: a write is refused (`WouldBlock`) while this many bytes wait. Generous
/// for a monitor reply or a burst of serial output, small enough that a stalled client
/// cannot make vmscope grow without limit.
pub const OUTPUT_QUEUE_LIMIT: usize = 1 << 20;

/// How queued output leaves the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    /// The main loop writes it to a non-blocking socket (woken through `kick`).
    Loop,
    /// A dedicated thread writes it with blocking writes (woken through the condvar).
    Thread,
    /// Nothing reads it (`null`): accepted and discarded.
    Discard,
}

/// Ctrl-a t state of a mux chardev: `[HH:MM:SS.mmm] ` before every output line.
#[derive(Debug, Default)]
pub(crate) struct Timestamps {
    pub(crate) enabled: bool,
    start: Option<Instant>,
    linestart: bool,
}

impl Timestamps {
    /// Ctrl-a t: QEMU restarts the clock and waits for the next newline before stamping.
    pub(crate) fn toggle(&mut self) {
        self.enabled = !self.enabled;
        self.start = None;
        self.linestart = false;
    }

    fn stamp(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &byte in data {
            if self.linestart {
                let start = *self.start.get_or_insert_with(Instant::now);
                let ms = start.elapsed().as_millis();
                let secs = ms / 1000;
                out.extend_from_slice(
                    format!(
                        "[{:02}:{:02}:{:02}.{:03}] ",
                        secs / 3600,
                        (secs / 60) % 60,
                        secs % 60,
                        ms % 1000
                    )
                    .as_bytes(),
                );
                self.linestart = false;
            }
            out.push(byte);
            if byte == b'\n' {
                self.linestart = true;
            }
        }
    }
}

pub(crate) struct OutputState {
    pub(crate) queue: VecDeque<u8>,
    /// Whether a peer is there. Output written while not connected is discarded, as QEMU
    /// does (its socket chardev fails the write and the 16550 drops the byte).
    pub(crate) connected: bool,
    pub(crate) log: Option<File>,
    /// Present on mux chardevs only.
    pub(crate) timestamps: Option<Timestamps>,
    /// The writer thread stops once the queue is empty.
    pub(crate) closing: bool,
}

/// An id of the calling thread, never 0.
fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions; its value is the thread's handle.
    unsafe { libc::pthread_self() as u64 }
}

/// Per-chardev state shared between the loop and every [`ChardevWriter`].
pub(crate) struct ChardevShared {
    pub(crate) id: String,
    pub(crate) drain: Drain,
    out: Mutex<OutputState>,
    /// Signalled when bytes are queued (writer thread) and when the queue drains (flush).
    out_changed: Condvar,
    /// Wakes the main loop: output to drain to a socket, or input wanted by a front end.
    pub(crate) kick: EventFd,
    /// Input is held back because a front end could not take it.
    pub(crate) input_held: AtomicBool,
    /// The loop thread (as `pthread_self`) while it hands input to a front end of this
    /// socket chardev, 0 otherwise. Output the front end writes meanwhile (a monitor's
    /// echo and reply) is sent by the loop right after, so it needs no kick: that saves an
    /// eventfd write, an epoll round trip and a read per monitor command.
    delivering_on: AtomicU64,
}

impl ChardevShared {
    pub(crate) fn new(
        id: &str,
        drain: Drain,
        connected: bool,
        log: Option<File>,
        mux: bool,
    ) -> io::Result<Arc<ChardevShared>> {
        Ok(Arc::new(ChardevShared {
            id: id.to_string(),
            drain,
            out: Mutex::new(OutputState {
                queue: VecDeque::new(),
                connected,
                log,
                timestamps: mux.then(Timestamps::default),
                closing: false,
            }),
            out_changed: Condvar::new(),
            kick: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            input_held: AtomicBool::new(false),
            delivering_on: AtomicU64::new(0),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn kick(&self) {
        // Fails only on counter overflow, when the loop has wake-ups pending anyway.
        let _ = self.kick.write(1);
    }

    /// Stops accepting output but keeps what is queued (replies to a half-closed client).
    pub(crate) fn stop_accepting(&self) {
        self.lock().connected = false;
    }

    /// Starts or stops accepting output. Stopping discards what a previous peer left.
    pub(crate) fn set_connected(&self, connected: bool) {
        let mut out = self.lock();
        out.connected = connected;
        if !connected {
            out.queue.clear();
            self.out_changed.notify_all();
        }
    }

    /// Appends bytes that must precede anything the front end writes (telnet negotiation),
    /// even while not yet marked connected.
    pub(crate) fn queue_raw(&self, data: &[u8]) {
        let mut out = self.lock();
        out.queue.extend(data);
        drop(out);
        self.wake_drain();
    }

    /// Marks the calling (loop) thread as delivering input to a front end, or clears it.
    pub(crate) fn set_delivering(&self, delivering: bool) {
        let me = if delivering { current_thread() } else { 0 };
        self.delivering_on.store(me, Ordering::Release);
    }

    fn wake_drain(&self) {
        match self.drain {
            Drain::Loop if self.delivering_on.load(Ordering::Acquire) == current_thread() => {}
            Drain::Loop => self.kick(),
            Drain::Thread => self.out_changed.notify_all(),
            Drain::Discard => {}
        }
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut out = self.lock();
        if !out.connected {
            return Ok(data.len());
        }
        if out.queue.len() >= OUTPUT_QUEUE_LIMIT {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let state = &mut *out;
        let mut stamped = Vec::new();
        let bytes = match &mut state.timestamps {
            Some(ts) if ts.enabled => {
                ts.stamp(data, &mut stamped);
                &stamped[..]
            }
            _ => data,
        };
        if let Some(log) = &mut state.log {
            // A failing logfile must not take the console down; QEMU ignores it too.
            let _ = log.write_all(bytes);
        }
        if self.drain == Drain::Discard {
            return Ok(data.len());
        }
        let was_empty = state.queue.is_empty();
        state.queue.extend(bytes);
        drop(out);
        if was_empty || self.drain == Drain::Thread {
            self.wake_drain();
        }
        Ok(data.len())
    }

    /// Blocks until the queue is empty, the chardev disconnects, or `timeout` passes.
    /// Returns whether everything was written.
    pub(crate) fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut out = self.lock();
        loop {
            if out.queue.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.drain != Drain::Thread {
                return false;
            }
            out = self
                .out_changed
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Copies up to `max` queued bytes from the front (the queue keeps them until
    /// [`ChardevShared::consume`] so a flush can tell when they are really out).
    pub(crate) fn peek(&self, max: usize) -> Vec<u8> {
        let out = self.lock();
        out.queue.iter().take(max).copied().collect()
    }

    pub(crate) fn consume(&self, count: usize) {
        let mut out = self.lock();
        let count = count.min(out.queue.len());
        out.queue.drain(..count);
        if out.queue.is_empty() {
            self.out_changed.notify_all();
        }
    }

    #[cfg(test)]
    pub(crate) fn has_output(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    pub(crate) fn toggle_timestamps(&self) {
        if let Some(ts) = &mut self.lock().timestamps {
            ts.toggle();
        }
    }

    /// Stops the writer thread once it has written what is queued.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.out_changed.notify_all();
    }
}

/// The output side of an attached chardev, returned by
/// [`Chardevs::attach`](super::Chardevs::attach). Cloneable and usable from any thread.
///
/// * `write` never blocks. It queues the bytes (in full) and returns `Ok(len)`. While no
///   peer is connected (a socket chardev without client) the bytes are discarded and
///   `Ok(len)` is returned, as QEMU drops serial output then. When more than
///   [`OUTPUT_QUEUE_LIMIT`] bytes are already queued (a stalled peer) it returns
///   `ErrorKind::WouldBlock`; a serial port drops the byte then, as QEMU's 16550 does
///   after its retries.
/// * `flush` does not wait for the bytes to leave; it is a no-op.
/// * [`ChardevWriter::accept_input`] is the flow-control half: see there.
#[derive(Clone)]
pub struct ChardevWriter {
    shared: Arc<ChardevShared>,
}

impl ChardevWriter {
    pub(crate) fn new(shared: Arc<ChardevShared>) -> ChardevWriter {
        ChardevWriter { shared }
    }

    /// The chardev id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Whether a peer reads the output now (always true for stdio, file, pipe and null;
    /// for sockets, whether a client is connected). A front end that must not lose data
    /// while nobody listens (a virtio-serial port) holds it back while this is false.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Tells the chardev that the front end can receive again (its
    /// [`can_receive`](super::ChardevFrontend::can_receive) went from 0 to more). Input
    /// held back meanwhile is then delivered on the loop thread. Cheap when nothing is
    /// held back; callable from any thread, e.g. after the guest read the 16550's RBR.
    pub fn accept_input(&self) {
        if self.shared.input_held.load(Ordering::Acquire) {
            self.shared.kick();
        }
    }
}

impl Write for ChardevWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &ChardevWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a writer thread puts the bytes.
pub(crate) enum ThreadSink {
    /// The process's standard output (never closed by us).
    Stdout,
    File(File),
}

impl ThreadSink {
    fn raw_fd(&self) -> RawFd {
        match self {
            ThreadSink::Stdout => libc::STDOUT_FILENO,
            ThreadSink::File(file) => file.as_raw_fd(),
        }
    }
}

/// Starts the thread that drains `shared` into `sink` with blocking writes.
pub(crate) fn spawn_writer_thread(shared: Arc<ChardevShared>, sink: ThreadSink) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("chardev-{}", shared.id))
        .spawn(move || {
            super::signals::block_termination_signals_in_this_thread();
            writer_thread(&shared, &sink)
        })?;
    Ok(())
}

fn writer_thread(shared: &ChardevShared, sink: &ThreadSink) {
    let fd = sink.raw_fd();
    loop {
        let chunk = {
            let mut out = shared.lock();
            while out.queue.is_empty() && !out.closing {
                out = shared
                    .out_changed
                    .wait(out)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if out.queue.is_empty() {
                return;
            }
            out.queue
                .iter()
                .take(64 * 1024)
                .copied()
                .collect::<Vec<u8>>()
        };
        let written = write_blocking(fd, &chunk);
        // On a hard error (EPIPE: the reader went away) the bytes are dropped, as QEMU
        // drops output its backend cannot take.
        shared.consume(written.unwrap_or(chunk.len()));
    }
}

/// Writes all of `data`, waiting for the fd when it turns out to be non-blocking.
fn write_blocking(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: `rest` is a valid readable buffer of the given length; `fd` stays open
        // for the writer thread's life (stdout, or a File the thread owns).
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 1000) };
            }
            _ => return Err(err),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_dropped_while_disconnected_and_bounded_while_connected() {
        let shared = ChardevShared::new("c", Drain::Loop, false, None, false).unwrap();
        let mut w = ChardevWriter::new(shared.clone());
        assert_eq!(w.write(b"lost").unwrap(), 4);
        assert!(!shared.has_output());
        shared.set_connected(true);
        assert_eq!(w.write(b"kept").unwrap(), 4);
        assert_eq!(shared.peek(100), b"kept");
        let big = vec![0u8; OUTPUT_QUEUE_LIMIT];
        assert_eq!(w.write(&big).unwrap(), big.len());
        let err = w.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        shared.consume(4 + OUTPUT_QUEUE_LIMIT);
        assert_eq!(w.write(b"y").unwrap(), 1);
        // Disconnecting discards what the previous peer did not read.
        shared.set_connected(false);
        assert!(!shared.has_output());
    }

    #[test]
    fn mux_timestamps_start_after_the_next_newline() {
        let shared = ChardevShared::new("m", Drain::Loop, true, None, true).unwrap();
        let mut w = ChardevWriter::new(shared.clone());
        shared.toggle_timestamps();
        w.write_all(b"ab\ncd\nef").unwrap();
        let text = String::from_utf8(shared.peek(1000)).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "ab");
        for line in &lines[1..] {
            assert_eq!(&line[..1], "[");
            assert_eq!(&line[13..15], "] ");
            assert!(line[1..13].starts_with("00:00:00."));
        }
        assert!(lines[1].ends_with("cd") && lines[2].ends_with("ef"));
        shared.toggle_timestamps();
        shared.consume(1000);
        w.write_all(b"\nplain").unwrap();
        assert_eq!(shared.peek(100), b"\nplain");
    }

    #[test]
    fn writer_thread_drains_to_a_file_and_flush_waits() {
        let dir = std::env::temp_dir().join(format!("vmscope-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        let file = File::create(&path).unwrap();
        let shared = ChardevShared::new("f", Drain::Thread, true, None, false).unwrap();
        spawn_writer_thread(shared.clone(), ThreadSink::File(file)).unwrap();
        let mut w = ChardevWriter::new(shared.clone());
        for i in 0..1000 {
            writeln!(w, "line {i}").unwrap();
        }
        assert!(shared.wait_drained(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("line 999"));
        shared.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
