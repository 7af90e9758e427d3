//! `aio=io_uring`: one io_uring ring per calling thread, through the `io-uring` crate (the
//! ring's shared-memory queues need careful memory ordering that a maintained crate gets
//! right; QEMU uses liburing for the same reason). A request is pushed, submitted and
//! waited for with one `io_uring_enter`.

use std::cell::RefCell;
use std::io;
use std::os::unix::io::RawFd;

use io_uring::{opcode, squeue, types, IoUring};

use super::{is_transient, setup_error};
use crate::block::options::AioMode;

/// Ring size: each thread has one request in flight at a time.
const RING_ENTRIES: u32 = 4;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// Creates this thread's ring if it has none (the open-time availability check: this is
/// where `io_uring_setup` fails on kernels without io_uring or with it disabled).
pub fn ensure_ring() -> io::Result<()> {
    with_ring(|_| Ok(()))
}

fn with_ring<R>(f: impl FnOnce(&mut IoUring) -> io::Result<R>) -> io::Result<R> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(RING_ENTRIES).map_err(|e| setup_error(AioMode::IoUring, e))?);
        }
        match slot.as_mut() {
            Some(ring) => f(ring),
            None => Err(io::Error::other("io_uring ring missing")),
        }
    })
}

/// Runs one request to completion and returns its result (a byte count, or 0).
///
/// # Safety
/// Memory the entry points at must stay valid until this returns; it does, because we only
/// return once the request's completion has been reaped.
unsafe fn run(entry: squeue::Entry) -> io::Result<u32> {
    with_ring(|ring| {
        // Stale completions cannot exist (every request is reaped before returning), but
        // drain defensively so the next completion is ours.
        ring.completion().for_each(drop);
        // SAFETY: see the function's contract.
        if unsafe { ring.submission().push(&entry.user_data(1)) }.is_err() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
        loop {
            if let Some(cqe) = ring.completion().next() {
                let res = cqe.result();
                return if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as u32)
                };
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(_) => {
                    // The request may be in flight with our buffer: returning would let
                    // the caller free memory the kernel still writes to. io_uring_enter on
                    // our own ring cannot fail this way short of a kernel bug.
                    std::process::abort();
                }
            }
        }
    })
}

pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let entry = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32)
        .offset(off)
        .build();
    // SAFETY: buf is exclusively borrowed for the whole request.
    unsafe { run(entry) }.map(|n| n as usize)
}

pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    let entry = opcode::Write::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32)
        .offset(off)
        .build();
    // SAFETY: buf is borrowed for the whole request.
    unsafe { run(entry) }.map(|n| n as usize)
}

pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    let entry = opcode::Fsync::new(types::Fd(fd))
        .flags(types::FsyncFlags::DATASYNC)
        .build();
    // SAFETY: no memory is referenced by an fsync request.
    unsafe { run(entry) }.map(|_| ())
}
