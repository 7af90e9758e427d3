//! Running vmscope as `qemu-system-x86_64` (through a symlink, so error prefixes match) and
//! the real QEMU 7.2 side by side.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    /// `None` when the process was killed after the time limit.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A scratch directory holding the `qemu-system-x86_64` link to vmscope and test images.
pub struct Workspace {
    pub dir: PathBuf,
}

impl Workspace {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vmscope-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("create test workspace");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_vmscope"),
            dir.join("bin/qemu-system-x86_64"),
        )
        .expect("symlink vmscope as qemu-system-x86_64");
        Workspace { dir }
    }

    /// vmscope invoked as `qemu-system-x86_64`.
    pub fn vmscope(&self) -> PathBuf {
        self.dir.join("bin/qemu-system-x86_64")
    }

    /// Creates an image with `qemu-img` in the workspace.
    pub fn qemu_img_create(&self, name: &str, format: &str, size: &str) {
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", format, name, size])
            .current_dir(&self.dir)
            .status()
            .expect("qemu-img must be installed (Debian: qemu-utils)");
        assert!(status.success(), "qemu-img create {name} failed");
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The real QEMU 7.2 from PATH. Panics loudly when it is missing: the differential tests
/// must not pass by skipping.
pub fn real_qemu() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("qemu-system-x86_64");
        let is_vmscope = std::fs::canonicalize(&candidate)
            .ok()
            .zip(std::fs::canonicalize(env!("CARGO_BIN_EXE_vmscope")).ok())
            .is_some_and(|(a, b)| a == b);
        if candidate.is_file() && !is_vmscope {
            return candidate;
        }
    }
    panic!(
        "qemu-system-x86_64 (QEMU 7.2) is not on PATH: the differential CLI tests need it \
         (Debian: apt-get install qemu-system-x86 qemu-utils)"
    );
}

/// Runs `program args...` in `dir` with stdin closed; kills it after `limit`.
pub fn run<S: AsRef<OsStr>>(program: &Path, args: &[S], dir: &Path, limit: Duration) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status.code(),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Run {
        status,
        stdout,
        stderr,
    }
}
