//! Process-level behaviour of `qemu-system-x86_64`: `-daemonize` and `-pidfile`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `-name process=NAME`: the name `ps` and `/proc/PID/comm` show for the process (Linux
/// keeps the first 15 bytes), as QEMU sets it.
pub fn set_process_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which `bytes` is.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// A pid file that stays locked while the process runs and is removed when it ends.
pub struct PidFile {
    path: PathBuf,
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot create PID file: Cannot open pid file: {}", os_text(.0))]
    PidCreate(#[source] std::io::Error),
    #[error("cannot create PID file: Cannot lock pid file: {}", os_text(.0))]
    PidLock(#[source] std::io::Error),
    #[error("cannot create PID file: Failed to write pid file: {}", os_text(.0))]
    PidWrite(#[source] std::io::Error),
    #[error("cannot daemonize: {0}")]
    Daemonize(#[source] std::io::Error),
}

/// An OS error as C's `strerror` words it (what QEMU prints), without Rust's
/// " (os error N)" suffix.
fn os_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

impl PidFile {
    /// Creates (or takes over) `path`, locks it and writes this process's id, as QEMU does:
    /// a second VM started with the same pid file fails instead of overwriting it.
    pub fn create(path: &Path) -> Result<PidFile, ProcessError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(ProcessError::PidCreate)?;
        // SAFETY: lockf on a descriptor this function owns; no memory is involved.
        if unsafe { libc::lockf(file.as_raw_fd(), libc::F_TLOCK, 0) } != 0 {
            return Err(ProcessError::PidLock(std::io::Error::last_os_error()));
        }
        file.set_len(0).map_err(ProcessError::PidWrite)?;
        writeln!(file, "{}", std::process::id()).map_err(ProcessError::PidWrite)?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's side of `-daemonize`: tells the waiting parent that start-up finished.
pub struct Daemon {
    report: File,
}

/// Detaches from the terminal like QEMU's `-daemonize`. The original process waits until
/// the daemon reports start-up finished (then exits 0) or failed (then exits 1, after the
/// daemon printed why). Must run before any thread is started.
pub fn daemonize() -> Result<Daemon, ProcessError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ProcessError::Daemonize(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is still single-threaded (documented precondition).
    match unsafe { libc::fork() } {
        -1 => Err(ProcessError::Daemonize(std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid/fork in the single-threaded child.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    -1 => libc::_exit(1),
                    0 => {}
                    _ => libc::_exit(0),
                }
                libc::umask(0o027);
            }
            Ok(Daemon {
                report: File::from(write_end),
            })
        }
        _ => {
            drop(write_end);
            let mut status = [0u8; 1];
            let mut reader = File::from(read_end);
            let code = match reader.read(&mut status) {
                Ok(1) if status[0] == 0 => 0,
                _ => 1,
            };
            std::process::exit(code);
        }
    }
}

impl Daemon {
    /// Start-up succeeded: detach standard I/O and release the waiting parent.
    pub fn finish(mut self) {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for fd in 0..=2 {
                // SAFETY: dup2 onto the standard descriptors, which this process owns.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        let _ = self.report.write_all(&[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_holds_our_pid_and_is_removed_on_drop() {
        let path = std::env::temp_dir().join(format!("vmscope-pid-{}", std::process::id()));
        let pid = PidFile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pid);
        assert!(!path.exists());
    }
}
