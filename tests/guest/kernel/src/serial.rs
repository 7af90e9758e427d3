//! COM1, a 16550 at 0x3f8: polled output, input through IRQ 4 or polling.

use crate::port::{inb, outb};

const COM1: u16 = 0x3f8;
const RBR_THR: u16 = COM1;
const IER: u16 = COM1 + 1;
const FCR: u16 = COM1 + 2;
const LCR: u16 = COM1 + 3;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;

const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;

/// 115200 8N1, FIFOs on and cleared, interrupts off.
pub fn init() {
    outb(IER, 0x00);
    outb(LCR, 0x80); // DLAB: divisor latch
    outb(RBR_THR, 0x01); // divisor 1 = 115200 baud
    outb(IER, 0x00);
    outb(LCR, 0x03); // 8 data bits, no parity, 1 stop bit
    outb(FCR, 0x07); // FIFO on, both cleared, receive trigger at 1 byte
    outb(MCR, 0x03); // DTR, RTS
}

pub fn write_byte(byte: u8) {
    while inb(LSR) & LSR_THR_EMPTY == 0 {}
    outb(RBR_THR, byte);
}

pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        write_byte(b);
    }
}

/// The next received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    if inb(LSR) & LSR_DATA_READY != 0 {
        Some(inb(RBR_THR))
    } else {
        None
    }
}

/// Raises IRQ 4 whenever a byte is received (OUT2 gates the line on a PC).
pub fn enable_receive_interrupt() {
    outb(MCR, 0x0b); // DTR, RTS, OUT2
    outb(IER, 0x01); // received data available
}

pub fn disable_interrupts() {
    outb(IER, 0x00);
    outb(MCR, 0x03);
}
