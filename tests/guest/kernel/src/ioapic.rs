//! The I/O APIC, through its index/data register window.

use crate::phys;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION_BASE: u32 = 0x10;

const MASKED: u32 = 1 << 16;
const LEVEL_TRIGGERED: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

/// MPS INTI flags (as in MADT interrupt source overrides).
const INTI_POLARITY_MASK: u16 = 0b11;
const INTI_POLARITY_ACTIVE_LOW: u16 = 0b11;
const INTI_TRIGGER_MASK: u16 = 0b11 << 2;
const INTI_TRIGGER_LEVEL: u16 = 0b11 << 2;

pub struct IoApic {
    base: u64,
}

impl IoApic {
    pub fn new(base: u64) -> IoApic {
        IoApic { base }
    }

    fn window(&self, offset: u64) -> *mut u32 {
        let addr = self.base + offset;
        if !phys::is_mapped(addr, 4) {
            crate::power::poweroff();
        }
        addr as *mut u32
    }

    fn read(&self, reg: u32) -> u32 {
        // SAFETY: the IOAPIC's register window in the identity-mapped MMIO hole (checked);
        // this kernel touches it from one CPU only.
        unsafe {
            self.window(IOREGSEL).write_volatile(reg);
            self.window(IOWIN).read_volatile()
        }
    }

    fn write(&self, reg: u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            self.window(IOREGSEL).write_volatile(reg);
            self.window(IOWIN).write_volatile(value);
        }
    }

    /// Number of redirection entries (input pins).
    pub fn pins(&self) -> u32 {
        ((self.read(REG_VERSION) >> 16) & 0xff) + 1
    }

    /// Routes `pin` to `vector` on the CPU with `apic_id` (fixed delivery, physical
    /// destination) with the polarity and trigger of MPS INTI `flags` (conforming means ISA:
    /// active high, edge). Left masked when `masked`.
    pub fn route(&self, pin: u32, vector: u8, flags: u16, apic_id: u32, masked: bool) {
        let mut low = u32::from(vector);
        if flags & INTI_POLARITY_MASK == INTI_POLARITY_ACTIVE_LOW {
            low |= ACTIVE_LOW;
        }
        if flags & INTI_TRIGGER_MASK == INTI_TRIGGER_LEVEL {
            low |= LEVEL_TRIGGERED;
        }
        if masked {
            low |= MASKED;
        }
        let reg = REG_REDIRECTION_BASE + 2 * pin;
        self.write(reg, MASKED);
        self.write(reg + 1, apic_id << 24);
        self.write(reg, low);
    }

    pub fn mask(&self, pin: u32) {
        let reg = REG_REDIRECTION_BASE + 2 * pin;
        let low = self.read(reg);
        self.write(reg, low | MASKED);
    }
}
