//! Shared helpers for the chardev and monitor integration tests: a main loop on its own
//! thread with chardevs and front ends, a mock machine, a recording front end, socket
//! clients, and a QEMU 7.2 runner for differential tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmscope::chardev::{
    ChardevEvent, ChardevFrontend, ChardevWriter, Chardevs, LoopHandle, MainLoop,
};
use vmscope::config::{ChardevBackend, ChardevConfig, SocketAddress, SocketChardev};
use vmscope::monitor::{Hmp, MonitorCommands, Qmp, RunState, SystemReset, VcpuInfo, VmControl};

// Test binaries using this module declare `mod common;` too.
#[allow(unused_imports)]
pub use crate::common::temp_dir::TempDir;

/// A TCP port unlikely to collide with other tests running in parallel.
pub fn free_tcp_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let base = 20000 + (std::process::id() % 20000) as u16;
        let port = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 7);
        if port > 1024 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn unix_server(id: &str, path: &Path, wait: bool, mux: bool) -> ChardevConfig {
    ChardevConfig {
        id: id.into(),
        backend: ChardevBackend::Socket(SocketChardev {
            address: SocketAddress::Unix {
                path: path.to_path_buf(),
            },
            server: true,
            wait,
            telnet: false,
            reconnect_secs: 0,
        }),
        mux,
        logfile: None,
    }
}

pub fn tcp_server(id: &str, port: u16, telnet: bool) -> ChardevConfig {
    ChardevConfig {
        id: id.into(),
        backend: ChardevBackend::Socket(SocketChardev {
            address: SocketAddress::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            server: true,
            wait: false,
            telnet,
            reconnect_secs: 0,
        }),
        mux: false,
        logfile: None,
    }
}

/// A machine stand-in with QEMU's run-state transitions.
pub struct MockVm {
    pub state: Mutex<RunState>,
    pub quits: AtomicUsize,
    pub resets: AtomicUsize,
    pub powerdowns: AtomicUsize,
    pub loop_handle: OnceLock<LoopHandle>,
}

impl MockVm {
    pub fn new(state: RunState) -> Arc<MockVm> {
        Arc::new(MockVm {
            state: Mutex::new(state),
            quits: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            powerdowns: AtomicUsize::new(0),
            loop_handle: OnceLock::new(),
        })
    }

    pub fn state(&self) -> RunState {
        *self.state.lock().unwrap()
    }
}

impl VmControl for MockVm {
    fn run_state(&self) -> RunState {
        self.state()
    }

    fn stop(&self) {
        let mut state = self.state.lock().unwrap();
        if *state == RunState::Running {
            *state = RunState::Paused;
        }
    }

    fn cont(&self) -> Result<(), String> {
        *self.state.lock().unwrap() = RunState::Running;
        Ok(())
    }

    fn quit(&self) {
        self.quits.fetch_add(1, Ordering::SeqCst);
        if let Some(handle) = self.loop_handle.get() {
            handle.request_exit(0);
        }
    }

    /// Resets keep the run state, as QEMU's do for a running or `-S` VM.
    fn system_reset(&self) -> Result<SystemReset, String> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        Ok(SystemReset::Reset)
    }

    /// The button is pressed; a guest without ACPI (QEMU's `-S` one) ignores it.
    fn system_powerdown(&self) -> Result<(), String> {
        self.powerdowns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// One vCPU, as QEMU's default `-smp 1` machine has, run by this process's thread.
    fn vcpus(&self) -> Vec<VcpuInfo> {
        vec![VcpuInfo {
            index: 0,
            thread_id: i64::from(std::process::id()),
            socket_id: 0,
            die_id: None,
            core_id: 0,
            thread_in_core: 0,
        }]
    }
}

/// A front end that records what it gets; `capacity` models a small FIFO.
pub struct Recorder {
    pub received: Mutex<Vec<u8>>,
    pub events: Mutex<Vec<ChardevEvent>>,
    /// Bytes it can take before the test drains it (usize::MAX: unlimited).
    pub capacity: AtomicUsize,
    pub writer: OnceLock<ChardevWriter>,
}

impl Recorder {
    pub fn new(capacity: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            received: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            capacity: AtomicUsize::new(capacity),
            writer: OnceLock::new(),
        })
    }

    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<ChardevEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn writer(&self) -> ChardevWriter {
        self.writer.get().expect("attached").clone()
    }

    /// Lets it take `n` more bytes (a guest reading the FIFO) and says so.
    pub fn make_room(&self, n: usize) {
        self.capacity.fetch_add(n, Ordering::SeqCst);
        self.writer().accept_input();
    }
}

impl ChardevFrontend for Recorder {
    fn can_receive(&self) -> usize {
        let cap = self.capacity.load(Ordering::SeqCst);
        if cap == usize::MAX {
            return 4096;
        }
        cap
    }

    fn receive(&self, data: &[u8]) {
        let cap = self.capacity.load(Ordering::SeqCst);
        assert!(
            cap == usize::MAX || data.len() <= cap,
            "front end got {} bytes with room for {cap}",
            data.len()
        );
        if cap != usize::MAX {
            self.capacity.fetch_sub(data.len(), Ordering::SeqCst);
        }
        self.received.lock().unwrap().extend_from_slice(data);
    }

    fn event(&self, event: ChardevEvent) {
        self.events.lock().unwrap().push(event);
    }
}

/// What a test attaches to which chardev, in order (QEMU attaches monitors first).
pub enum Attach {
    Hmp(&'static str),
    /// A QMP monitor (compact output).
    Qmp(&'static str),
    Recorder(&'static str, Arc<Recorder>),
}

/// A main loop with chardevs running on its own thread.
pub struct Running {
    pub handle: LoopHandle,
    pub vm: Arc<MockVm>,
    thread: Option<JoinHandle<i32>>,
}

impl Running {
    pub fn start(configs: Vec<ChardevConfig>, attach: Vec<Attach>, state: RunState) -> Running {
        let vm = MockVm::new(state);
        let vm2 = vm.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ml = MainLoop::new().unwrap();
            tx.send(ml.handle()).unwrap();
            let _ = vm2.loop_handle.set(ml.handle());
            let mut chardevs = Chardevs::open(&configs, &ml).expect("chardevs open");
            let commands =
                Arc::new(MonitorCommands::new(vm2.clone()).with_chardevs(chardevs.info_source()));
            for a in attach {
                match a {
                    Attach::Hmp(id) => {
                        Hmp::attach(&mut chardevs, id, commands.clone()).expect("attach hmp");
                    }
                    Attach::Qmp(id) => {
                        Qmp::attach(&mut chardevs, id, commands.clone(), false)
                            .expect("attach qmp");
                    }
                    Attach::Recorder(id, rec) => {
                        let w = chardevs.attach(id, rec.clone()).expect("attach recorder");
                        let _ = rec.writer.set(w);
                    }
                }
            }
            let status = ml.run().unwrap();
            drop(chardevs);
            status
        });
        let handle = rx.recv().unwrap();
        Running {
            handle,
            vm,
            thread: Some(thread),
        }
    }

    /// Waits for the loop to end by itself (e.g. after `quit`).
    pub fn wait_exit(mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let thread = self.thread.take().unwrap();
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "main loop did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap()
    }

    pub fn stop(mut self) -> i32 {
        self.handle.request_exit(0);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.request_exit(0);
            let _ = thread.join();
        }
    }
}

/// Waits until `cond` holds (polling), panicking with `what` after 10 s.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a unix socket path to accept connections.
pub fn connect_unix(path: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

pub fn connect_tcp(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect port {port}: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Reads until `quiet` passes without new bytes (or EOF), at most `max`.
pub fn read_quiet(stream: &mut impl Read, quiet: Duration, max: Duration) -> Vec<u8> {
    read_until(stream, quiet, max, |_| false)
}

/// Reads until `done(bytes)` holds, EOF, `quiet` without bytes, or `max`.
pub fn read_until(
    stream: &mut impl Read,
    quiet: Duration,
    max: Duration,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Vec<u8> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let mut buf = [0u8; 65536];
    loop {
        if done(&out) || start.elapsed() > max || last.elapsed() > quiet {
            return out;
        }
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return out,
        }
    }
}

/// Sets a short read timeout so `read_until` can notice quiet periods.
pub trait ShortTimeout {
    fn short_timeout(self) -> Self;
}

impl ShortTimeout for UnixStream {
    fn short_timeout(self) -> Self {
        self.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        self
    }
}

impl ShortTimeout for TcpStream {
    fn short_timeout(self) -> Self {
        self.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        self
    }
}

/// One monitor conversation: connect, then for each chunk send it and read the answer
/// until the output has been quiet for a while. Returns everything received, with
/// markers between chunks so mismatches are easy to locate.
pub fn converse<S: Read + Write>(stream: &mut S, chunks: &[&[u8]], quiet: Duration) -> Vec<u8> {
    let mut out = read_until(stream, quiet, Duration::from_secs(10), |b| {
        b.ends_with(b"(qemu) ")
    });
    for chunk in chunks {
        out.extend_from_slice(
            format!("<<{}>>", String::from_utf8_lossy(chunk).escape_debug()).as_bytes(),
        );
        stream.write_all(chunk).unwrap();
        out.extend(read_quiet(stream, quiet, Duration::from_secs(10)));
    }
    out
}

/// [`converse`] for HMP command lines that each end with a prompt: after a chunk, waits
/// for one `(qemu) ` per line it holds (a slow command, or a loaded machine, can be quiet
/// for longer than `quiet` before answering), then for `quiet` without bytes.
pub fn converse_lines<S: Read + Write>(
    stream: &mut S,
    chunks: &[&[u8]],
    quiet: Duration,
) -> Vec<u8> {
    const PROMPT: &[u8] = b"(qemu) ";
    let mut out = read_until(stream, quiet, Duration::from_secs(10), |b| {
        b.ends_with(PROMPT)
    });
    for chunk in chunks {
        out.extend_from_slice(
            format!("<<{}>>", String::from_utf8_lossy(chunk).escape_debug()).as_bytes(),
        );
        stream.write_all(chunk).unwrap();
        let prompts = chunk.iter().filter(|&&b| b == b'\n').count();
        let answer = read_until(
            stream,
            Duration::from_secs(10),
            Duration::from_secs(10),
            |b| b.windows(PROMPT.len()).filter(|w| *w == PROMPT).count() >= prompts,
        );
        out.extend(answer);
        out.extend(read_quiet(stream, quiet, Duration::from_secs(10)));
    }
    out
}

/// Replaces QEMU's and vmscope's version in the HMP banner by `X.Y.Z`.
pub fn mask_version(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("QEMU ") {
        out.push_str(&rest[..pos + 5]);
        rest = &rest[pos + 5..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if end > 0 && rest[end..].starts_with(" monitor") {
            out.push_str("X.Y.Z");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

pub fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("version 7.2"))
}

/// QEMU 7.2 under TCG with `-S`, no devices, and the given extra arguments.
pub struct Qemu(pub Child);

impl Qemu {
    pub fn start(extra: &[&str]) -> Qemu {
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 runs");
        Qemu(child)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` through `sh -c` with a timeout and returns its stdout.
pub fn shell(cmd: &str) -> Vec<u8> {
    let child = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_with_timeout(child, Duration::from_secs(20))
}

pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Vec<u8> {
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reader.join().unwrap()
}
