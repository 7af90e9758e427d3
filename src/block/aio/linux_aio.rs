//! Linux native AIO (`aio=native`) through the raw io_setup/io_submit/io_getevents
//! syscalls: libc has no wrappers and the ABI is three small structs, so no crate is needed.
//! Each thread owns one AIO context; a request is submitted and its completion reaped on
//! the same thread.

use std::cell::RefCell;
use std::io;
use std::os::unix::io::RawFd;

use super::{is_transient, setup_error};
use crate::block::options::AioMode;

/// `struct iocb` of <linux/aio_abi.h> on little-endian machines.
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;

/// Events per context. One request per thread is in flight at a time; the kernel rounds
/// this up anyway.
const CONTEXT_EVENTS: libc::c_long = 4;

/// An `aio_context_t`, destroyed with its thread.
struct AioContext(libc::c_ulong);

impl AioContext {
    fn new() -> io::Result<Self> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes one aio_context_t to the pointer we pass.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_setup,
                CONTEXT_EVENTS,
                &mut ctx as *mut libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AioContext(ctx))
    }
}

impl Drop for AioContext {
    fn drop(&mut self) {
        // SAFETY: destroys a context we created; no request is in flight (every submission
        // is reaped before `run` returns).
        unsafe {
            libc::syscall(libc::SYS_io_destroy, self.0);
        }
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<AioContext>> = const { RefCell::new(None) };
}

/// Creates this thread's context if it has none (the open-time availability check).
pub fn ensure_context() -> io::Result<()> {
    with_context(|_| Ok(()))
}

fn with_context<R>(f: impl FnOnce(libc::c_ulong) -> io::Result<R>) -> io::Result<R> {
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ctx = match slot.as_ref() {
            Some(c) => c.0,
            None => {
                let c = AioContext::new().map_err(|e| setup_error(AioMode::Native, e))?;
                let id = c.0;
                *slot = Some(c);
                id
            }
        };
        f(ctx)
    })
}

/// Submits one request and waits for its completion; returns the byte count.
///
/// # Safety
/// `buf` must be valid for `len` bytes (writable for reads) until this returns; it is,
/// because we only return once the kernel has completed the request.
unsafe fn run(opcode: u16, fd: RawFd, buf: *mut u8, len: usize, off: u64) -> io::Result<usize> {
    with_context(|ctx| {
        let mut iocb = Iocb {
            aio_lio_opcode: opcode,
            aio_fildes: fd as u32,
            aio_buf: buf as u64,
            aio_nbytes: len as u64,
            aio_offset: off as i64,
            ..Default::default()
        };
        let mut list = [&mut iocb as *mut Iocb];
        loop {
            // SAFETY: one valid iocb pointer; the iocb and its buffer outlive the request.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    ctx,
                    1 as libc::c_long,
                    list.as_mut_ptr(),
                )
            };
            if r == 1 {
                break;
            }
            let e = if r < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::from_raw_os_error(libc::EAGAIN)
            };
            if is_transient(&e) {
                std::thread::yield_now();
                continue;
            }
            // Not submitted: nothing refers to the buffer.
            return Err(e);
        }
        let mut ev = IoEvent::default();
        loop {
            // SAFETY: room for exactly one event; no timeout (waits for our request).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    ctx,
                    1 as libc::c_long,
                    1 as libc::c_long,
                    &mut ev as *mut IoEvent,
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if r == 1 {
                break;
            }
            let e = io::Error::last_os_error();
            if r < 0 && e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if r == 0 {
                continue;
            }
            // The request is still in flight and the buffer must not be released: there
            // is no safe way back, and io_getevents on our own context cannot fail
            // otherwise.
            std::process::abort();
        }
        if ev.res < 0 {
            Err(io::Error::from_raw_os_error((-ev.res) as i32))
        } else {
            Ok(ev.res as usize)
        }
    })
}

pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    // SAFETY: buf is exclusively borrowed for the whole request.
    unsafe { run(IOCB_CMD_PREAD, fd, buf.as_mut_ptr(), buf.len(), off) }
}

pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    // SAFETY: the kernel only reads from the buffer for a write; it is borrowed for the
    // whole request.
    unsafe { run(IOCB_CMD_PWRITE, fd, buf.as_ptr() as *mut u8, buf.len(), off) }
}
