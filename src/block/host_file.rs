//! A host file (regular file or block device) with QEMU's cache semantics: O_DIRECT with
//! aligned bounce buffers, write-through by syncing after each write, and `cache.no-flush`.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::aio;
use super::error::{BlockError, BlockResult};
use super::options::{AioMode, CacheMode};

/// Alignment used for O_DIRECT transfers. 4096 satisfies both 512e and 4Kn devices.
const DIRECT_ALIGN: usize = 4096;

/// A heap buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (rounded up to the alignment).
    pub fn zeroed(len: usize) -> Self {
        let len = len.max(DIRECT_ALIGN).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let layout = std::alloc::Layout::from_size_align(len, DIRECT_ALIGN)
            .expect("aligned layout of a bounded size");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, DIRECT_ALIGN)
            .expect("layout used at allocation");
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// One open host file.
pub struct HostFile {
    file: File,
    path: PathBuf,
    read_only: bool,
    direct: bool,
    writethrough: bool,
    no_flush: bool,
    is_block_device: bool,
    /// The engine reads, writes and flushes go through (`aio=`).
    aio: AioMode,
    /// Requests completed through the `native` or `io_uring` engine: lets tests and
    /// statistics see that the engine asked for is the one doing the work.
    engine_requests: AtomicU64,
    /// Serialises read-modify-write cycles of unaligned O_DIRECT writes.
    rmw_lock: Mutex<()>,
}

impl HostFile {
    /// Opens `path` with the given cache mode and the default `aio=threads` engine.
    pub fn open(path: &Path, read_only: bool, cache: CacheMode) -> BlockResult<Self> {
        Self::open_with_aio(path, read_only, cache, AioMode::Threads)
    }

    /// Opens `path` with the given cache mode and I/O engine. The engine is checked here
    /// (QEMU's rules and messages), so an engine that cannot run fails the open.
    pub fn open_with_aio(
        path: &Path,
        read_only: bool,
        cache: CacheMode,
        aio_mode: AioMode,
    ) -> BlockResult<Self> {
        aio_mode.validate(cache)?;
        aio::check_available(aio_mode)?;
        let mut oo = FsOpenOptions::new();
        oo.read(true).write(!read_only);
        let mut flags = libc::O_CLOEXEC;
        if cache.direct() {
            flags |= libc::O_DIRECT;
        }
        oo.custom_flags(flags);
        let file = oo.open(path).map_err(|source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let is_block_device = file
            .metadata()
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        Ok(HostFile {
            file,
            path: path.to_path_buf(),
            read_only,
            direct: cache.direct(),
            writethrough: cache.writethrough(),
            no_flush: cache.no_flush(),
            is_block_device,
            aio: aio_mode,
            engine_requests: AtomicU64::new(0),
            rmw_lock: Mutex::new(()),
        })
    }

    /// The I/O engine this file uses.
    pub fn aio_mode(&self) -> AioMode {
        self.aio
    }

    /// How many requests the `native`/`io_uring` engine has completed for this file (0
    /// with `aio=threads`).
    pub fn engine_requests(&self) -> u64 {
        self.engine_requests.load(Ordering::Relaxed)
    }

    fn count_engine_request(&self) {
        if self.aio != AioMode::Threads {
            self.engine_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Current length in bytes (device size for block devices).
    #[allow(clippy::len_without_is_empty)] // a file length query, not a collection
    pub fn len(&self) -> BlockResult<u64> {
        if self.is_block_device {
            let mut f = &self.file;
            return io::Seek::seek(&mut f, io::SeekFrom::End(0))
                .map_err(|e| BlockError::io("Could not get block device size", e));
        }
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| BlockError::io("Could not stat file", e))
    }

    /// Bytes allocated on the host (st_blocks * 512), as `disk size` in `qemu-img info`.
    pub fn allocated_size(&self) -> BlockResult<u64> {
        use std::os::unix::fs::MetadataExt;
        self.file
            .metadata()
            .map(|m| m.blocks() * 512)
            .map_err(|e| BlockError::io("Could not stat file", e))
    }

    fn aligned(&self, ptr: *const u8, len: usize, off: u64) -> bool {
        !self.direct
            || ((ptr as usize).is_multiple_of(DIRECT_ALIGN)
                && len.is_multiple_of(DIRECT_ALIGN)
                && off.is_multiple_of(DIRECT_ALIGN as u64))
    }

    /// Reads `buf.len()` bytes at `off`. Bytes past the end of the file read as zeros, as
    /// QEMU's file driver does.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> BlockResult<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.aligned(buf.as_ptr(), buf.len(), off) {
            return self.read_exact_or_zero(buf, off);
        }
        if self.aligned(std::ptr::null::<u8>(), buf.len(), off) {
            let mut bounce = AlignedBuf::zeroed(buf.len());
            self.read_exact_or_zero(&mut bounce.as_mut_slice()[..buf.len()], off)?;
            buf.copy_from_slice(&bounce.as_slice()[..buf.len()]);
            return Ok(());
        }
        let start = off & !(DIRECT_ALIGN as u64 - 1);
        let end = (off + buf.len() as u64).div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64;
        let mut bounce = AlignedBuf::zeroed((end - start) as usize);
        self.read_exact_or_zero(bounce.as_mut_slice(), start)?;
        let skip = (off - start) as usize;
        buf.copy_from_slice(&bounce.as_slice()[skip..skip + buf.len()]);
        Ok(())
    }

    fn read_exact_or_zero(&self, buf: &mut [u8], off: u64) -> BlockResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let r = aio::pread(
                self.aio,
                self.file.as_raw_fd(),
                &mut buf[done..],
                off + done as u64,
            );
            self.count_engine_request();
            match r {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(BlockError::io(
                        format!("Could not read '{}'", self.path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `off`; durable before returning in write-through modes.
    pub fn write_at(&self, buf: &[u8], off: u64) -> BlockResult<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.aligned(buf.as_ptr(), buf.len(), off) {
            self.write_all(buf, off)?;
        } else if self.aligned(std::ptr::null::<u8>(), buf.len(), off) {
            // Only the memory is misaligned: copy, no read-modify-write needed.
            let mut bounce = AlignedBuf::zeroed(buf.len());
            bounce.as_mut_slice()[..buf.len()].copy_from_slice(buf);
            self.write_all(&bounce.as_slice()[..buf.len()], off)?;
        } else {
            let start = off & !(DIRECT_ALIGN as u64 - 1);
            let end = (off + buf.len() as u64).div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64;
            let mut bounce = AlignedBuf::zeroed((end - start) as usize);
            let _guard = self.rmw_lock.lock().unwrap_or_else(|p| p.into_inner());
            let file_len = self.len()?;
            let need_head = off != start;
            let need_tail = off + buf.len() as u64 != end;
            if need_head || need_tail {
                self.read_exact_or_zero(bounce.as_mut_slice(), start)?;
            }
            let skip = (off - start) as usize;
            bounce.as_mut_slice()[skip..skip + buf.len()].copy_from_slice(buf);
            // Never grow a file by the padding of the bounce buffer beyond what was asked.
            let write_len = if end > file_len && !self.is_block_device {
                let want = off + buf.len() as u64;
                let aligned_want = want.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64;
                (aligned_want - start) as usize
            } else {
                (end - start) as usize
            };
            self.write_all(&bounce.as_slice()[..write_len], start)?;
            let want = off + buf.len() as u64;
            if want > file_len && !self.is_block_device && write_len as u64 + start > want {
                self.file
                    .set_len(want)
                    .map_err(|e| BlockError::io("Could not truncate", e))?;
            }
        }
        if self.writethrough {
            self.sync()?;
        }
        Ok(())
    }

    fn write_all(&self, buf: &[u8], off: u64) -> BlockResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let r = aio::pwrite(
                self.aio,
                self.file.as_raw_fd(),
                &buf[done..],
                off + done as u64,
            );
            self.count_engine_request();
            match r {
                Ok(0) => {
                    return Err(BlockError::io(
                        format!("Could not write '{}'", self.path.display()),
                        io::Error::from(io::ErrorKind::WriteZero),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(BlockError::io(
                        format!("Could not write '{}'", self.path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// A guest flush: fdatasync unless `cache.no-flush` is on.
    pub fn flush(&self) -> BlockResult<()> {
        if self.no_flush || self.read_only {
            return Ok(());
        }
        self.sync()
    }

    /// An internal ordering barrier. Skipped with `cache=unsafe`, whose whole point is that
    /// nothing is made durable before the process ends cleanly.
    pub fn barrier(&self) -> BlockResult<()> {
        self.flush()
    }

    fn sync(&self) -> BlockResult<()> {
        let r = aio::fdatasync(self.aio, self.file.as_raw_fd());
        self.count_engine_request();
        r.map_err(|e| BlockError::io(format!("Could not flush '{}'", self.path.display()), e))
    }

    /// Sets the file length (regular files only).
    pub fn set_len(&self, len: u64) -> BlockResult<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if self.is_block_device {
            return Err(BlockError::Unsupported(
                "Cannot resize a block device".into(),
            ));
        }
        self.file
            .set_len(len)
            .map_err(|e| BlockError::io("Could not resize file", e))
    }

    /// Deallocates a range so it reads back as zeros. Falls back to writing zeros when the
    /// file system cannot punch holes.
    pub fn punch_hole(&self, off: u64, len: u64) -> BlockResult<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if len == 0 {
            return Ok(());
        }
        if !self.is_block_device {
            // SAFETY: plain syscall on an fd we own; no memory is passed.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off as libc::off_t,
                    len as libc::off_t,
                )
            };
            if r == 0 {
                return Ok(());
            }
        }
        self.write_zeroes_explicit(off, len)
    }

    /// Makes a range read as zeros, keeping it allocated when possible.
    pub fn write_zeroes(&self, off: u64, len: u64) -> BlockResult<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if len == 0 {
            return Ok(());
        }
        if !self.is_block_device {
            // SAFETY: plain syscall on an fd we own; no memory is passed.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_ZERO_RANGE,
                    off as libc::off_t,
                    len as libc::off_t,
                )
            };
            if r == 0 {
                if self.writethrough {
                    self.sync()?;
                }
                return Ok(());
            }
        }
        self.write_zeroes_explicit(off, len)
    }

    fn write_zeroes_explicit(&self, off: u64, len: u64) -> BlockResult<()> {
        let chunk = AlignedBuf::zeroed(1 << 20);
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = ((end - pos) as usize).min(1 << 20);
            self.write_at(&chunk.as_slice()[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Preallocates `[off, off+len)` with fallocate (`preallocation=falloc`).
    pub fn fallocate(&self, off: u64, len: u64) -> BlockResult<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                0,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            return Err(BlockError::io(
                "Could not preallocate data",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Whether `off` is in a data region; returns (is_data, length of the run from `off`,
    /// capped at `max`). Files whose file system cannot tell report data everywhere.
    pub fn data_run(&self, off: u64, max: u64) -> BlockResult<(bool, u64)> {
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                // No data after off: a hole up to the end.
                return Ok((false, max));
            }
            return Ok((true, max));
        }
        let data = data as u64;
        if data > off {
            return Ok((false, (data - off).min(max)));
        }
        // SAFETY: lseek on an fd we own.
        let hole = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Ok((true, max));
        }
        let hole = hole as u64;
        Ok((true, hole.saturating_sub(off).max(1).min(max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("vmscope-hostfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn unaligned_direct_io_round_trips() {
        let p = tmp("direct");
        std::fs::write(&p, vec![7u8; 10000]).unwrap();
        let f = HostFile::open(&p, false, CacheMode::None).unwrap();
        assert!(f.is_direct());
        f.write_at(b"hello", 4093).unwrap();
        let mut b = [0u8; 9];
        f.read_at(&mut b, 4091).unwrap();
        assert_eq!(&b, b"\x07\x07hello\x07\x07");
        // Growing the file by an unaligned write keeps the exact length.
        f.write_at(b"end", 10000).unwrap();
        assert_eq!(f.len().unwrap(), 10003);
        let mut tail = [1u8; 8];
        f.read_at(&mut tail, 10000).unwrap();
        assert_eq!(&tail, b"end\0\0\0\0\0");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn holes_are_reported() {
        let p = tmp("holes");
        let f = {
            std::fs::write(&p, b"").unwrap();
            HostFile::open(&p, false, CacheMode::Writeback).unwrap()
        };
        f.set_len(4 << 20).unwrap();
        f.write_at(&[1u8; 65536], 1 << 20).unwrap();
        let (data, len) = f.data_run(0, 4 << 20).unwrap();
        assert!(!data);
        assert_eq!(len, 1 << 20);
        let (data, _) = f.data_run(1 << 20, 4 << 20).unwrap();
        assert!(data);
        std::fs::remove_file(&p).unwrap();
    }
}
