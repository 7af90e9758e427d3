//! Line output on COM1 without `core::fmt` (its precompiled code uses SSE, which the KVM
//! on the project's machines cannot emulate).
//!
//! `kprintln!("a ", Dec(1), " b ", Hex(2, 4))` writes [`LINE_PREFIX`], the pieces and a
//! CR LF. The prefix lets a test pick the kernel's lines out of the serial stream, which on
//! QEMU also carries SeaBIOS's and iPXE's boot messages.

use crate::serial;

/// Starts every line the kernel prints.
pub const LINE_PREFIX: &str = "tk: ";

/// Something that can be written to the console.
pub trait Emit {
    fn emit(&self);
}

impl Emit for &str {
    fn emit(&self) {
        serial::write_bytes(self.as_bytes());
    }
}

impl Emit for &[u8] {
    fn emit(&self) {
        serial::write_bytes(self);
    }
}

/// An unsigned number in decimal.
pub struct Dec(pub u64);

impl Emit for Dec {
    fn emit(&self) {
        let mut digits = [0u8; 20];
        let mut n = self.0;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        serial::write_bytes(&digits[i..]);
    }
}

/// An unsigned number in hexadecimal with `0x` and at least `.1` digits.
pub struct Hex(pub u64, pub usize);

impl Emit for Hex {
    fn emit(&self) {
        let mut digits = [0u8; 16];
        let mut n = self.0;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let width = self.1.min(digits.len());
        while digits.len() - i < width {
            i -= 1;
            digits[i] = b'0';
        }
        serial::write_bytes(b"0x");
        serial::write_bytes(&digits[i..]);
    }
}

#[macro_export]
macro_rules! kprintln {
    ($($piece:expr),* $(,)?) => {{
        $crate::serial::write_bytes($crate::console::LINE_PREFIX.as_bytes());
        $( $crate::console::Emit::emit(&$piece); )*
        $crate::serial::write_bytes(b"\r\n");
    }};
}

/// Words separated by single spaces.
pub struct Words<'a>(pub &'a [&'a str]);

impl Emit for Words<'_> {
    fn emit(&self) {
        for (i, word) in self.0.iter().enumerate() {
            if i > 0 {
                serial::write_byte(b' ');
            }
            serial::write_bytes(word.as_bytes());
        }
    }
}
