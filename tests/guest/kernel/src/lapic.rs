//! The local APIC in xAPIC mode, through its MMIO page.

use crate::phys;

const IA32_APIC_BASE: u32 = 0x1b;

const REG_ID: u64 = 0x20;
const REG_TPR: u64 = 0x80;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_LINT0: u64 = 0x350;
const REG_LVT_LINT1: u64 = 0x360;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_DIVIDE: u64 = 0x3e0;

const SVR_ENABLE: u32 = 1 << 8;
pub const SPURIOUS_VECTOR: u8 = 0xff;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const DELIVERY_NMI: u32 = 0b100 << 8;
const DELIVERY_EXTINT: u32 = 0b111 << 8;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an architectural MSR that every x86-64 CPU with an APIC has.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
                         options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Physical address of this CPU's APIC page, from IA32_APIC_BASE.
pub fn base() -> u64 {
    rdmsr(IA32_APIC_BASE) & 0xf_ffff_f000
}

fn read(reg: u64) -> u32 {
    phys::read_u32(base() + reg)
}

fn write(reg: u64, value: u32) {
    let addr = base() + reg;
    if !phys::is_mapped(addr, 4) {
        crate::power::poweroff();
    }
    // SAFETY: an APIC register in the identity-mapped MMIO page; xAPIC registers take
    // aligned 32-bit writes.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Software-enables the APIC and sets up the local interrupt lines the way firmware does on
/// the boot CPU: LINT0 takes the 8259's interrupts (ExtINT), LINT1 is NMI. Set here so that
/// the kernel does not depend on what the firmware (or its absence) left behind.
pub fn init_boot_cpu() {
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, DELIVERY_EXTINT);
    write(REG_LVT_LINT1, DELIVERY_NMI);
    write(REG_LVT_TIMER, LVT_MASKED);
}

pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

fn send_ipi(apic_id: u32, command: u32) {
    write(REG_ICR_HIGH, apic_id << 24);
    write(REG_ICR_LOW, command);
    while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
}

pub fn send_init(apic_id: u32) {
    send_ipi(apic_id, ICR_INIT | ICR_LEVEL_ASSERT);
}

/// Start-up IPI: the target starts in real mode at `vector << 12`.
pub fn send_startup(apic_id: u32, vector: u8) {
    send_ipi(apic_id, ICR_STARTUP | ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Periodic timer at `vector`, the clock divided by 16, `count` ticks per period.
pub fn start_periodic_timer(vector: u8, count: u32) {
    write(REG_TIMER_DIVIDE, 0b0011); // divide by 16
    write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(vector));
    write(REG_TIMER_INITIAL, count);
}

pub fn stop_timer() {
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_INITIAL, 0);
}
