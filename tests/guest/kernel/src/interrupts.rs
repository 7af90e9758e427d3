//! The IDT: one assembly stub per vector pushes the vector number and calls
//! [`interrupt_dispatch`], which runs the handler registered for it. An exception without a
//! handler is fatal: it is reported and the machine powered off, so a test fails fast.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::console::{Dec, Hex};
use crate::kprintln;

/// The saved state that the stubs leave on the stack, lowest address first.
#[repr(C)]
pub struct InterruptFrame {
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

pub type Handler = fn(vector: u8);

const NO_HANDLER: usize = 0;
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(NO_HANDLER) }; 256];

/// The IDT itself: 256 16-byte gates.
#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

const STUB_SIZE: u64 = 16;
const KERNEL_CS: u64 = 0x18;
const INTERRUPT_GATE: u64 = 0x8e;

extern "C" {
    static interrupt_stubs: u8;
}

// Stubs, 16 bytes apart. The CPU pushes an error code for vectors 8, 10-14, 17, 21, 29 and
// 30; the other stubs push a zero in its place so that every frame looks the same.
global_asm!(
    r#"
    .section .text.interrupt_stubs, "ax"
    .code64
    .p2align 4
    .global interrupt_stubs
interrupt_stubs:
    .set vector, 0
    .rept 256
    .p2align 4
    .if vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30
    .else
    pushq $0
    .endif
    pushq $vector
    jmp interrupt_common
    .set vector, vector + 1
    .endr

interrupt_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    cld
    call interrupt_dispatch
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

#[no_mangle]
extern "C" fn interrupt_dispatch(frame: &InterruptFrame) {
    let vector = frame.vector as u8;
    let handler = HANDLERS[usize::from(vector)].load(Ordering::Acquire);
    if handler == NO_HANDLER {
        kprintln!(
            "kernel: unexpected interrupt ",
            Dec(frame.vector),
            " error ",
            Hex(frame.error_code, 1),
            " rip ",
            Hex(frame.rip, 1)
        );
        crate::power::poweroff();
    }
    // SAFETY: only `set_handler` stores into HANDLERS, and only values cast from `Handler`.
    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
    handler(vector);
}

/// Fills the IDT and loads it on this CPU. Interrupts stay disabled.
pub fn init() {
    // The stub table: 256 stubs of STUB_SIZE bytes (the asm above).
    let stubs = core::ptr::addr_of!(interrupt_stubs) as u64;
    // SAFETY: the IDT is written here, on the boot CPU, before any CPU loads it.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for vector in 0..256u64 {
        let addr = stubs + vector * STUB_SIZE;
        idt.0[2 * vector as usize] = (addr & 0xffff)
            | (KERNEL_CS << 16)
            | (INTERRUPT_GATE << 40)
            | ((addr >> 16) & 0xffff) << 48;
        idt.0[2 * vector as usize + 1] = addr >> 32;
    }
    load();
}

/// Loads the (already filled) IDT on the calling CPU.
pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is a static that lives forever and holds valid gates.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) }
}

pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

pub fn enable() {
    // SAFETY: handlers for every unmasked source are registered by the caller.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

pub fn disable() {
    // SAFETY: masking interrupts only delays them.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// Enables interrupts and halts until the next one, atomically (no wakeup lost between the
/// check the caller made and the halt), then disables them again.
pub fn wait() {
    // SAFETY: `sti` takes effect after `hlt` starts, so a pending interrupt wakes the halt.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}
