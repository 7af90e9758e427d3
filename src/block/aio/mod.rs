//! The I/O engines behind `-drive aio=`: how a host file's reads, writes and flushes reach
//! the kernel.
//!
//! vmscope's block API is synchronous; concurrency comes from the callers' threads (device
//! queues, `bench -d N`). So each engine keeps one submission context per calling thread
//! (a Linux AIO context, an io_uring ring), created on that thread's first request and
//! shared by every file it touches: requests from different threads are in flight in the
//! kernel at once, and no thread ever waits for another's completion.
//!
//! - `threads`: plain pread/pwrite/fdatasync on the calling thread.
//! - `native`: Linux AIO (io_submit/io_getevents) through raw syscalls, in [`linux_aio`].
//! - `io_uring`: an io_uring ring per thread, in [`uring`].

pub mod linux_aio;
pub mod uring;

use std::io;
use std::os::unix::io::RawFd;

use super::error::{BlockError, BlockResult};
use super::options::AioMode;

/// The largest single transfer handed to an engine; callers loop over short transfers, so
/// capping keeps lengths inside the engines' 32-bit fields.
const MAX_TRANSFER: usize = 1 << 30;

/// Checks at open time that the engine can run here, with QEMU's wording for the failure
/// (`Unable to use io_uring: failed to init linux io_uring ring: <errno text>`), instead of
/// failing on the first guest request or quietly using threads.
pub fn check_available(mode: AioMode) -> BlockResult<()> {
    let r = match mode {
        AioMode::Threads => Ok(()),
        AioMode::Native => linux_aio::ensure_context(),
        AioMode::IoUring => uring::ensure_ring(),
    };
    r.map_err(|e| BlockError::Unsupported(e.to_string()))
}

/// The error for a thread whose engine context cannot be created, in QEMU's words; also
/// what a request fails with when a new thread cannot get its context.
fn setup_error(mode: AioMode, e: io::Error) -> io::Error {
    let what = match mode {
        AioMode::Native => "Unable to use native AIO: failed to create linux AIO context",
        AioMode::IoUring => "Unable to use io_uring: failed to init linux io_uring ring",
        AioMode::Threads => "Unable to start I/O",
    };
    io::Error::new(e.kind(), format!("{what}: {}", errno_text(&e)))
}

/// strerror-style text without Rust's " (os error N)" suffix, as QEMU prints it.
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let s = io::Error::from_raw_os_error(code).to_string();
            match s.rfind(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
        None => e.to_string(),
    }
}

/// Reads up to `buf.len()` bytes at `off`; returns the count (0 at end of file).
pub fn pread(mode: AioMode, fd: RawFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let len = buf.len().min(MAX_TRANSFER);
    match mode {
        AioMode::Threads => {
            // SAFETY: buf is valid for writes of len bytes for the duration of the call.
            let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, off as libc::off_t) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        }
        AioMode::Native => linux_aio::pread(fd, &mut buf[..len], off),
        AioMode::IoUring => uring::pread(fd, &mut buf[..len], off),
    }
}

/// Writes up to `buf.len()` bytes at `off`; returns the count.
pub fn pwrite(mode: AioMode, fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    let len = buf.len().min(MAX_TRANSFER);
    match mode {
        AioMode::Threads => {
            // SAFETY: buf is valid for reads of len bytes for the duration of the call.
            let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), len, off as libc::off_t) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        }
        AioMode::Native => linux_aio::pwrite(fd, &buf[..len], off),
        AioMode::IoUring => uring::pwrite(fd, &buf[..len], off),
    }
}

/// Makes the file's data durable. io_uring has its own fsync opcode (QEMU uses it);
/// QEMU's Linux AIO engine hands flushes to its thread pool, so `native` syncs directly.
pub fn fdatasync(mode: AioMode, fd: RawFd) -> io::Result<()> {
    match mode {
        AioMode::IoUring => uring::fdatasync(fd),
        AioMode::Threads | AioMode::Native => {
            // SAFETY: plain syscall on a descriptor the caller owns.
            if unsafe { libc::fdatasync(fd) } != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }
}

/// Whether an error is worth retrying the same request for.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_matches_strerror() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(errno_text(&e), "Operation not permitted");
    }
}
