//! QEMU's per-drive I/O buffer, as far as packet replies can show it.
//!
//! QEMU receives the packet into the start of `io_buffer`, builds the reply over it in place,
//! and leaves the buffer as it is afterwards; IDENTIFY data and sectors read pass through the
//! same buffer. Most replies write every byte they return, but some leave holes (MODE SENSE
//! page 0x0e's bytes 10-16, 18, 20 and 22 show the packet's last bytes and whatever the
//! previous reply or read left there), so keeping the buffer is what makes them identical.
//!
//! The largest reply is 2052 bytes (READ DVD STRUCTURE); QEMU's buffer is 128 KiB + 4, but
//! nothing past the largest reply can ever reach the guest through a reply, so 4 KiB hold
//! everything observable.

/// Bytes kept; every reply fits.
pub const IO_BUFFER_LEN: usize = 4096;

pub struct IoBuffer {
    bytes: Box<[u8; IO_BUFFER_LEN]>,
}

impl IoBuffer {
    /// QEMU zeroes the buffer when the drive is created.
    pub fn new() -> IoBuffer {
        IoBuffer {
            bytes: Box::new([0; IO_BUFFER_LEN]),
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8; IO_BUFFER_LEN] {
        &mut self.bytes
    }

    /// Data passing through the buffer (sectors read, IDENTIFY data) from its start.
    pub fn store(&mut self, data: &[u8]) {
        let n = data.len().min(IO_BUFFER_LEN);
        self.bytes[..n].copy_from_slice(&data[..n]);
    }

    /// IDENTIFY data, stored little-endian as QEMU keeps it.
    pub fn store_words(&mut self, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            let at = i * 2;
            if at + 2 > IO_BUFFER_LEN {
                break;
            }
            self.bytes[at..at + 2].copy_from_slice(&w.to_le_bytes());
        }
    }

    /// A reset ends any transfer by filling the first four bytes with 0xff (QEMU's
    /// `ide_dummy_transfer_stop`).
    pub fn reset_pattern(&mut self) {
        self.bytes[..4].fill(0xff);
    }
}

/// Stores `v` big-endian at `at`.
pub fn put_be16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Stores `v` big-endian at `at`.
pub fn put_be32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

pub fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Copies `text` into `field`, padding with spaces (QEMU's `padstr8`).
pub fn pad_ascii(field: &mut [u8], text: &str) {
    let mut src = text.bytes();
    for byte in field.iter_mut() {
        *byte = src.next().unwrap_or(b' ');
    }
}
