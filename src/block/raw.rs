//! The raw format: the file is the disk. Allocation status comes from SEEK_DATA/SEEK_HOLE.

use super::error::{BlockError, BlockResult};
use super::host_file::HostFile;

pub struct RawImage {
    file: HostFile,
}

impl RawImage {
    pub fn new(file: HostFile) -> Self {
        RawImage { file }
    }

    pub fn file(&self) -> &HostFile {
        &self.file
    }

    /// The file length rounded up to whole 512-byte sectors, as QEMU reports raw images
    /// (the tail past the end of the file reads as zeros).
    pub fn virtual_size(&self) -> BlockResult<u64> {
        Ok(self.file.len()?.div_ceil(512).saturating_mul(512))
    }

    fn check_range(&self, off: u64, len: u64) -> BlockResult<()> {
        let size = self.virtual_size()?;
        if off.checked_add(len).is_none_or(|e| e > size) {
            return Err(BlockError::OutOfRange {
                offset: off,
                len,
                size,
            });
        }
        Ok(())
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) -> BlockResult<()> {
        self.file.read_at(buf, off)
    }

    pub fn write(&self, off: u64, buf: &[u8]) -> BlockResult<()> {
        self.check_range(off, buf.len() as u64)?;
        self.file.write_at(buf, off)
    }

    pub fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> BlockResult<()> {
        self.check_range(off, len)?;
        if unmap {
            self.file.punch_hole(off, len)
        } else {
            self.file.write_zeroes(off, len)
        }
    }

    pub fn discard(&self, off: u64, len: u64) -> BlockResult<()> {
        self.check_range(off, len)?;
        self.file.punch_hole(off, len)
    }

    /// (is data, run length) at `off`, at most `max` bytes.
    pub fn data_run(&self, off: u64, max: u64) -> BlockResult<(bool, u64)> {
        self.file.data_run(off, max)
    }

    pub fn resize(&self, size: u64) -> BlockResult<()> {
        self.file.set_len(size)
    }
}
