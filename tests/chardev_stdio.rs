//! The stdio chardev in real child processes under a pseudo-terminal: raw mode and its
//! restoration, `mon:stdio` multiplexing with Ctrl-a keys, `-monitor stdio`, Ctrl-C and
//! SIGTERM handling, end of input on a pipe — compared with QEMU 7.2 where it runs the
//! same scenario.
//!
//! This file has its own `main` (`harness = false`): run without arguments it runs the
//! tests; with `VMSCOPE_STDIO_CHILD=<scenario>` it is the vmscope side of a scenario.

mod chardev_common;
mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev_common::{mask_version, qemu_available, MockVm, Recorder};
use vmscope::chardev::{ChardevFrontend, Chardevs, MainLoop};
use vmscope::config::{ChardevBackend, ChardevConfig, SocketAddress, SocketChardev};
use vmscope::monitor::{Hmp, MonitorCommands, RunState};

const CHILD_ENV: &str = "VMSCOPE_STDIO_CHILD";

// ---- the child: vmscope's side --------------------------------------------------------

/// A serial port stand-in that echoes what it receives, like a guest echoing input.
struct Echo(std::sync::OnceLock<vmscope::chardev::ChardevWriter>);

impl ChardevFrontend for Echo {
    fn can_receive(&self) -> usize {
        16
    }
    fn receive(&self, data: &[u8]) {
        if let Some(w) = self.0.get() {
            let _ = (&*w).write_all(data);
        }
    }
}

fn child_main(scenario: &str) -> ! {
    let ml = MainLoop::new().unwrap();
    // "late": the signal handling is installed only after the chardevs (and their helper
    // threads) exist.
    let (scenario, late) = match scenario.strip_suffix("-late-signals") {
        Some(base) => (base, true),
        None => (scenario, false),
    };
    if !late {
        ml.handle_termination_signals(|ml, _| ml.request_exit(0))
            .unwrap();
    }
    let vm = MockVm::new(RunState::Prelaunch);
    let _ = vm.loop_handle.set(ml.handle());
    let commands = Arc::new(MonitorCommands::new(vm));
    let stdio = |id: &str, signal: bool, mux: bool| ChardevConfig {
        id: id.into(),
        backend: ChardevBackend::Stdio { signal },
        mux,
        logfile: None,
    };
    let chardevs = match scenario {
        // -nographic / -serial mon:stdio: QEMU turns signals off for mon:stdio.
        "mux" => {
            let mut c = Chardevs::open(&[stdio("serial0", false, true)], &ml).unwrap();
            // QEMU attaches the monitor first and the serial port last (it has the focus).
            Hmp::attach(&mut c, "serial0", commands).unwrap();
            let serial = Recorder::new(usize::MAX);
            c.attach("serial0", serial).unwrap();
            c
        }
        "monitor" => {
            let mut c = Chardevs::open(&[stdio("compat_monitor0", true, false)], &ml).unwrap();
            Hmp::attach(&mut c, "compat_monitor0", commands).unwrap();
            c
        }
        "echo" => {
            let mut c = Chardevs::open(&[stdio("serial0", true, false)], &ml).unwrap();
            let echo = Arc::new(Echo(std::sync::OnceLock::new()));
            let w = c.attach("serial0", echo.clone()).unwrap();
            let _ = echo.0.set(w);
            c
        }
        "wait" => {
            let path = std::env::var("VMSCOPE_STDIO_PATH").unwrap();
            let config = ChardevConfig {
                id: "compat_monitor0".into(),
                backend: ChardevBackend::Socket(SocketChardev {
                    address: SocketAddress::Unix {
                        path: path.clone().into(),
                    },
                    server: true,
                    wait: true,
                    telnet: false,
                    reconnect_secs: 0,
                }),
                mux: false,
                logfile: None,
            };
            let mut c = Chardevs::new(&ml);
            c.add(&config, Some(&format!("-monitor unix:{path},server")))
                .unwrap();
            Hmp::attach(&mut c, "compat_monitor0", commands).unwrap();
            c
        }
        "two-stdio" => {
            let err = Chardevs::open(&[stdio("a", true, false), stdio("b", true, false)], &ml)
                .err()
                .unwrap();
            println!("{err}");
            std::process::exit(1);
        }
        other => panic!("unknown scenario {other}"),
    };
    if late {
        ml.handle_termination_signals(|ml, _| ml.request_exit(0))
            .unwrap();
    }
    let status = ml.run().unwrap();
    drop(chardevs);
    std::process::exit(status);
}

// ---- the parent: pty plumbing ------------------------------------------------------------

struct Pty {
    master: OwnedFd,
    /// Kept open by the test so the terminal's settings can be read after the child exits.
    slave: OwnedFd,
}

impl Pty {
    fn new() -> Pty {
        let mut master: RawFd = -1;
        let mut slave: RawFd = -1;
        // SAFETY: valid out-pointers; no name, termios or winsize requested.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: openpty returned two fresh fds we now own.
        unsafe {
            Pty {
                master: OwnedFd::from_raw_fd(master),
                slave: OwnedFd::from_raw_fd(slave),
            }
        }
    }

    /// Starts `cmd` as a session leader with the pty as its controlling terminal.
    fn spawn(&self, cmd: &mut Command) -> Child {
        let slave = |pty: &Pty| Stdio::from(pty.slave.try_clone().unwrap());
        cmd.stdin(slave(self))
            .stdout(slave(self))
            .stderr(slave(self));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    fn write(&self, data: &[u8]) {
        // SAFETY: valid buffer; the master fd is open.
        let n = unsafe { libc::write(self.master.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        assert_eq!(n, data.len() as isize);
    }

    /// Reads whatever arrives within `wait`.
    fn read_for(&self, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if rc <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            // SAFETY: valid buffer; the master fd is open.
            let n =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    fn lflags(&self) -> libc::tcflag_t {
        // SAFETY: termios is plain data filled in by tcgetattr on an open tty fd.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(self.slave.as_raw_fd(), &mut t), 0);
            t.c_lflag
        }
    }
}

fn vmscope_child(scenario: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD_ENV, scenario);
    cmd
}

fn qemu_child(extra: &[&str]) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-S", "-nodefaults"]).args(extra);
    cmd
}

/// Runs a keyboard session in a fresh pty: waits `startup`, then sends each step and
/// collects the output after it. Returns the transcript and the exit status (the child is
/// killed if it has not exited 3 s after the last step).
fn session(
    mut cmd: Command,
    startup: Duration,
    steps: &[(&[u8], Duration)],
) -> (Vec<u8>, Option<ExitStatus>, Pty) {
    let pty = Pty::new();
    let mut child = pty.spawn(&mut cmd);
    let mut out = pty.read_for(startup);
    for (input, wait) in steps {
        out.extend_from_slice(
            format!("<<{}>>", String::from_utf8_lossy(input).escape_debug()).as_bytes(),
        );
        pty.write(input);
        out.extend(pty.read_for(*wait));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            out.extend(pty.read_for(Duration::from_millis(100)));
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        out.extend(pty.read_for(Duration::from_millis(50)));
    };
    (out, status, pty)
}

/// Replaces the program name at the start of `<prog>: terminating on signal` lines.
fn mask_program(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut out = String::new();
    for piece in text.split_inclusive('\n') {
        match piece.find(": terminating on signal") {
            Some(pos) => {
                let start = piece[..pos].rfind(['\n', '>']).map_or(0, |p| p + 1);
                out.push_str(&piece[..start]);
                out.push_str("PROG");
                out.push_str(&piece[pos..]);
            }
            None => out.push_str(piece),
        }
    }
    out.into_bytes()
}

const ECHO_ICANON: libc::tcflag_t = libc::ECHO | libc::ICANON;

// ---- the tests ----------------------------------------------------------------------------

fn mux_stdio_keys_match_qemu() {
    let ms = Duration::from_millis;
    let steps: &[(&[u8], Duration)] = &[
        (b"\x01h", ms(400)),
        (b"\x01c", ms(400)),
        (b"info status\r", ms(400)),
        (b"\x01c", ms(400)),
        (b"typed to the serial port", ms(300)),
        (b"\x01c", ms(400)),
        (b"\x01\x01", ms(300)),
        (b"\x01z", ms(300)),
        (b"help stop\r", ms(400)),
        (b"\x01x", ms(600)),
    ];
    let (ours, our_status, pty) = session(vmscope_child("mux"), ms(500), steps);
    assert_eq!(pty.lflags() & ECHO_ICANON, ECHO_ICANON, "terminal restored");
    assert_eq!(our_status.and_then(|s| s.code()), Some(0), "{ours:?}");
    assert!(
        String::from_utf8_lossy(&ours).contains("VM status: paused (prelaunch)"),
        "{:?}",
        String::from_utf8_lossy(&ours)
    );
    if !qemu_available() {
        println!("    (QEMU 7.2 not installed: comparison skipped)");
        return;
    }
    let (qemu, qemu_status, _) = session(
        qemu_child(&["-nographic", "-serial", "mon:stdio"]),
        ms(1500),
        steps,
    );
    assert_eq!(qemu_status.and_then(|s| s.code()), Some(0));
    let (q, o) = (mask_version(&qemu), mask_version(&ours));
    if std::env::var_os("VMSCOPE_TEST_VERBOSE").is_some() {
        println!("\n{}", String::from_utf8_lossy(&o).escape_debug());
    }
    assert_eq!(
        String::from_utf8_lossy(&o),
        String::from_utf8_lossy(&q),
        "vmscope vs QEMU 7.2"
    );
}

fn monitor_stdio_and_ctrl_c_match_qemu() {
    let ms = Duration::from_millis;
    let steps: &[(&[u8], Duration)] = &[
        (b"info status\r", ms(400)),
        (b"\x01c", ms(300)),
        (b"\x03", ms(800)),
    ];
    let (ours, our_status, pty) = session(vmscope_child("monitor"), ms(500), steps);
    assert_eq!(pty.lflags() & ECHO_ICANON, ECHO_ICANON, "terminal restored");
    assert_eq!(our_status.and_then(|s| s.code()), Some(0), "{ours:?}");
    assert!(String::from_utf8_lossy(&ours).contains(": terminating on signal 2\r\n"));
    if !qemu_available() {
        println!("    (QEMU 7.2 not installed: comparison skipped)");
        return;
    }
    let (qemu, qemu_status, _) = session(
        qemu_child(&["-display", "none", "-monitor", "stdio"]),
        ms(1500),
        steps,
    );
    assert_eq!(qemu_status.and_then(|s| s.code()), Some(0));
    let q = mask_program(&mask_version(&qemu));
    let o = mask_program(&mask_version(&ours));
    assert_eq!(String::from_utf8_lossy(&o), String::from_utf8_lossy(&q));
}

fn ctrl_c_is_handled_when_signal_handling_starts_late() {
    let ms = Duration::from_millis;
    let steps: &[(&[u8], Duration)] = &[(b"\x03", ms(800))];
    let (out, status, pty) = session(vmscope_child("monitor-late-signals"), ms(500), steps);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out).contains(": terminating on signal 2\r\n"));
    assert_eq!(pty.lflags() & ECHO_ICANON, ECHO_ICANON, "terminal restored");
}

fn sigterm_restores_the_terminal_and_exits_zero() {
    let pty = Pty::new();
    let before = pty.lflags();
    assert_eq!(before & ECHO_ICANON, ECHO_ICANON);
    let mut child = pty.spawn(&mut vmscope_child("echo"));
    let out = pty.read_for(Duration::from_millis(500));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(pty.lflags() & ECHO_ICANON, 0, "raw mode while running");
    // Raw mode: bytes arrive one by one, no line editing, no echo by the terminal; the
    // echo front end sends them back and the terminal turns \n into \r\n on output.
    pty.write(b"ab\x7fc\r\n");
    let out = pty.read_for(Duration::from_millis(400));
    assert_eq!(out, b"ab\x7fc\r\r\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let out = String::from_utf8_lossy(&pty.read_for(Duration::from_millis(200))).into_owned();
    assert_eq!(status.code(), Some(0));
    let expected = format!(
        ": terminating on signal 15 from pid {} (",
        std::process::id()
    );
    assert!(out.contains(&expected), "{out:?}");
    assert_eq!(pty.lflags(), before, "terminal settings restored exactly");
}

fn end_of_input_on_a_pipe_does_not_exit() {
    let mut child = vmscope_child("echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from a pipe\n").unwrap();
    drop(stdin);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited at end of input"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello from a pipe\n");
}

fn only_one_stdio_chardev() {
    let out = vmscope_child("two-stdio").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cannot use stdio by multiple character devices\n"
    );
}

fn wait_notice_matches_qemu() {
    let dir = chardev_common::TempDir::new("waitnotice");
    let path = dir.join("m.sock");
    let path_text = path.display().to_string();
    // Start, let it print the notice and block, connect, then read the first stderr line.
    let notice = |mut cmd: Command| {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        chardev_common::wait_for("socket", || path.exists());
        let mut client = chardev_common::connect_unix(&path);
        let _ = client.write_all(b"q\n");
        let mut stderr = child.stderr.take().unwrap();
        let text = chardev_common::read_until(
            &mut stderr,
            Duration::from_secs(2),
            Duration::from_secs(5),
            |b| b.contains(&b'\n'),
        );
        let _ = child.kill();
        let _ = child.wait();
        let text = String::from_utf8_lossy(&text).into_owned();
        let line = text.lines().next().unwrap_or("").to_string();
        let (_prog, rest) = line.split_once(": ").expect("program prefix");
        rest.to_string()
    };
    let mut ours_cmd = vmscope_child("wait");
    ours_cmd.env("VMSCOPE_STDIO_PATH", &path_text);
    let ours = notice(ours_cmd);
    assert_eq!(
        ours,
        format!(
            "-monitor unix:{path_text},server: info: QEMU waiting for connection on: disconnected:unix:{path_text},server=on"
        )
    );
    if !qemu_available() {
        println!("    (QEMU 7.2 not installed: comparison skipped)");
        return;
    }
    let mut qemu_cmd = qemu_child(&["-display", "none"]);
    qemu_cmd.args(["-monitor", &format!("unix:{path_text},server")]);
    assert_eq!(notice(qemu_cmd), ours);
}

fn ctrl_c_while_waiting_for_a_client_matches_qemu() {
    use std::os::unix::process::ExitStatusExt;
    let dir = chardev_common::TempDir::new("waitint");
    let path = dir.join("m.sock").display().to_string();
    let ms = Duration::from_millis;
    let steps: &[(&[u8], Duration)] = &[(b"\x03", ms(800))];
    let mut cmd = vmscope_child("wait");
    cmd.env("VMSCOPE_STDIO_PATH", &path);
    let (ours, status, pty) = session(cmd, ms(500), steps);
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGINT),
        "{ours:?}"
    );
    assert_eq!(pty.lflags() & ECHO_ICANON, ECHO_ICANON);
    if !qemu_available() {
        println!("    (QEMU 7.2 not installed: comparison skipped)");
        return;
    }
    let mut cmd = qemu_child(&["-display", "none"]);
    cmd.args(["-monitor", &format!("unix:{path},server")]);
    let (qemu, status, _) = session(cmd, ms(1500), steps);
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGINT));
    let strip = |b: &[u8]| {
        let text = String::from_utf8_lossy(b).into_owned();
        text.split_once(": ")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or(text)
    };
    assert_eq!(strip(&ours), strip(&qemu));
}

fn main() {
    if let Ok(scenario) = std::env::var(CHILD_ENV) {
        child_main(&scenario);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: &[(&str, fn())] = &[
        ("mux_stdio_keys_match_qemu", mux_stdio_keys_match_qemu),
        (
            "monitor_stdio_and_ctrl_c_match_qemu",
            monitor_stdio_and_ctrl_c_match_qemu,
        ),
        (
            "sigterm_restores_the_terminal_and_exits_zero",
            sigterm_restores_the_terminal_and_exits_zero,
        ),
        (
            "end_of_input_on_a_pipe_does_not_exit",
            end_of_input_on_a_pipe_does_not_exit,
        ),
        ("only_one_stdio_chardev", only_one_stdio_chardev),
        (
            "ctrl_c_is_handled_when_signal_handling_starts_late",
            ctrl_c_is_handled_when_signal_handling_starts_late,
        ),
        ("wait_notice_matches_qemu", wait_notice_matches_qemu),
        (
            "ctrl_c_while_waiting_for_a_client_matches_qemu",
            ctrl_c_while_waiting_for_a_client_matches_qemu,
        ),
    ];
    let mut failed = 0;
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("ok"),
            Err(_) => {
                println!("FAILED");
                failed += 1;
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        ran - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
