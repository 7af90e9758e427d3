//! Runs a machine process (QEMU or vmscope) with `-nographic`, so that COM1 is on its stdio:
//! collects stdout (the serial line) and stderr, feeds scripted input to stdin once a given
//! text has appeared on the serial line, and kills the process when it exceeds its time.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Input to type on the serial line: `input` is written once `after` has been printed.
#[derive(Clone, Debug)]
pub struct SerialInput {
    pub after: String,
    pub input: String,
}

#[derive(Debug)]
pub struct RunResult {
    pub command: String,
    /// `None` when the process was killed on timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The exit code, or a description of why there is none.
    pub fn exit(&self) -> Result<i32, String> {
        match self.status {
            None => Err("killed after timeout".to_owned()),
            Some(s) => s.code().ok_or_else(|| format!("terminated: {s}")),
        }
    }

    /// Everything a failing test should show about this run.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.exit(),
            self.elapsed,
            printable(&self.stdout),
            printable(&self.stderr)
        )
    }
}

/// `text` without CRs and with other control characters escaped: SeaBIOS sends terminal
/// escapes (`ESC c` resets a terminal) that must not reach the terminal of whoever reads a
/// test failure.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

enum Event {
    Stdout(Vec<u8>),
    StdoutClosed,
}

fn spawn_reader(mut pipe: impl Read + Send + 'static, tx: mpsc::Sender<Event>) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Event::Stdout(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Event::StdoutClosed);
    });
}

fn kill(child: &mut Child) {
    // Only the process this harness started, by its own handle.
    let _ = child.kill();
}

/// Runs `program args`, stdin kept open (a pipe) until the process exits.
pub fn run(
    program: &Path,
    args: &[String],
    input: Option<&SerialInput>,
    timeout: Duration,
) -> RunResult {
    run_with_env(program, args, &[], input, timeout)
}

/// [`run`] with extra environment variables (e.g. `TZ`).
pub fn run_with_env(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    input: Option<&SerialInput>,
    timeout: Duration,
) -> RunResult {
    let command = format!("{} {}", program.display(), args.join(" "));
    let start = Instant::now();
    let mut child = match Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start {command}: {e}"),
    };
    let mut stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel();
    spawn_reader(child.stdout.take().expect("stdout is piped"), tx);
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_thread = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });

    let deadline = start + timeout;
    let mut stdout = Vec::new();
    let mut pending_input = input;
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Event::Stdout(bytes)) => {
                stdout.extend_from_slice(&bytes);
                if let Some(script) = pending_input {
                    if String::from_utf8_lossy(&stdout).contains(&script.after) {
                        if let Some(pipe) = stdin.as_mut() {
                            let _ = pipe.write_all(script.input.as_bytes());
                            let _ = pipe.flush();
                        }
                        pending_input = None;
                    }
                }
            }
            Ok(Event::StdoutClosed) => break,
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    let status = if timed_out {
        kill(&mut child);
        let _ = child.wait();
        None
    } else {
        // stdout closed: the process is exiting; give it the rest of the time to do so.
        loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    kill(&mut child);
                    let _ = child.wait();
                    break None;
                }
            }
        }
    };
    drop(stdin);
    let stderr = stderr_thread.join().unwrap_or_default();
    RunResult {
        command,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
        elapsed: start.elapsed(),
    }
}
