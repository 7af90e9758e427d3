//! The two 8259A PICs, remapped so that IRQ n arrives at vector `VECTOR_BASE + n`.

use crate::port::{inb, outb};

pub const VECTOR_BASE: u8 = 0x20;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;
const EOI: u8 = 0x20;

/// Reinitialises both PICs (edge triggered, cascade on IRQ 2) with every line masked.
pub fn init() {
    outb(MASTER_CMD, 0x11); // ICW1: init, ICW4 follows
    outb(SLAVE_CMD, 0x11);
    outb(MASTER_DATA, VECTOR_BASE); // ICW2: vector base
    outb(SLAVE_DATA, VECTOR_BASE + 8);
    outb(MASTER_DATA, 0x04); // ICW3: slave on IRQ 2
    outb(SLAVE_DATA, 0x02); // ICW3: cascade identity
    outb(MASTER_DATA, 0x01); // ICW4: 8086 mode
    outb(SLAVE_DATA, 0x01);
    set_mask(0xffff);
}

/// Bit n set masks IRQ n.
pub fn set_mask(mask: u16) {
    outb(MASTER_DATA, mask as u8);
    outb(SLAVE_DATA, (mask >> 8) as u8);
}

pub fn mask() -> u16 {
    u16::from(inb(MASTER_DATA)) | (u16::from(inb(SLAVE_DATA)) << 8)
}

pub fn unmask(irq: u8) {
    let mut m = mask() & !(1 << irq);
    if irq >= 8 {
        m &= !(1 << 2);
    }
    set_mask(m);
}

pub fn mask_irq(irq: u8) {
    set_mask(mask() | (1 << irq));
}

pub fn end_of_interrupt(irq: u8) {
    if irq >= 8 {
        outb(SLAVE_CMD, EOI);
    }
    outb(MASTER_CMD, EOI);
}
