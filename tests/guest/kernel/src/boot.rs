//! The PVH entry point and the switch to long mode, for the boot CPU and for the APs.
//!
//! A PVH loader (QEMU's `pvh.bin` option ROM, vmscope's direct boot) jumps to the address in
//! the `XEN_ELFNOTE_PHYS32_ENTRY` note in 32-bit protected mode with paging off, flat CS/DS,
//! and EBX = physical address of the `hvm_start_info`. Everything else (GDT, page tables,
//! stack, IDT) is ours to set up. APs start in real mode at the trampoline that `smp` copies
//! below 1 MiB, then take the same path to long mode on the same page tables.

use core::arch::global_asm;

/// Physical address the AP trampoline is copied to; the SIPI vector is its page number.
pub const AP_TRAMPOLINE_BASE: u64 = 0x8000;

/// Gigabytes identity-mapped with 2 MiB pages: covers the 32-bit MMIO hole (LAPIC, IOAPIC)
/// and RAM above 4 GiB for the `-m` sizes the tests use.
pub const IDENTITY_MAPPED_GIB: u64 = 8;

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The AP trampoline code, to be copied to [`AP_TRAMPOLINE_BASE`].
pub fn ap_trampoline() -> &'static [u8] {
    // SAFETY: both symbols are labels in the same section of this image (the asm below),
    // start before end; the bytes between them are immutable code.
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let end = core::ptr::addr_of!(ap_trampoline_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

// The PVH note. QEMU reads the descriptor as a pointer-sized value at the name aligned to the
// segment alignment, linux-loader as a u32: a .quad at offset 16 with 4-byte alignment
// satisfies both.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_entry32
"#,
    options(att_syntax)
);

// GDT: 0x08 flat 32-bit code, 0x10 flat data, 0x18 64-bit code.
global_asm!(
    r#"
    .section .data.boot_gdt, "aw"
    .p2align 3
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
boot_gdt_end:
    .p2align 3
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .p2align 2
    .global boot_start_info
boot_start_info:
    .long 0

    .section .bss.boot_tables, "aw", @nobits
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096

    .section .stacks, "aw", @nobits
    .p2align 12
boot_pd:
    .skip 4096 * {gib}
boot_stack:
    .skip 65536
boot_stack_top:
"#,
    gib = const IDENTITY_MAPPED_GIB,
    options(att_syntax)
);

// Boot CPU: 32-bit PVH entry -> long mode -> kernel_main(start_info).
global_asm!(
    r#"
    .section .text.boot, "ax"
    .code32
    .global pvh_entry32
pvh_entry32:
    cli
    cld
    movl %ebx, boot_start_info

    # Zero .bss (the stacks and the page directories live outside it: they need no zeroing).
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    lgdtl boot_gdt_ptr
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    # PML4[0] -> PDPT; PDPT[i] -> PD i; each PD maps 1 GiB with 2 MiB pages.
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    movl $boot_pdpt, %edi
    movl ${gib}, %ecx
1:
    movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b

    movl $boot_pd, %edi
    xorl %eax, %eax
    xorl %edx, %edx
    movl ${gib} * 512, %ecx
2:
    movl %eax, %ebx
    orl $0x83, %ebx
    movl %ebx, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 2b

    .global boot_enter_long_mode
boot_enter_long_mode:
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmpl $0x18, $boot_entry64

    .code64
boot_entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_start_info(%rip), %edi
    call kernel_main
3:
    cli
    hlt
    jmp 3b
"#,
    gib = const IDENTITY_MAPPED_GIB,
    options(att_syntax)
);

// AP trampoline, copied to AP_TRAMPOLINE_BASE: real mode -> protected mode -> the same
// long-mode switch as the BSP (same GDT and page tables) -> ap_main on the stack that the
// BSP put in ap_boot_stack_top before sending the SIPI.
global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .global ap_trampoline_start
    .global ap_trampoline_end
    .code16
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (ap_tramp_gdt_ptr - ap_trampoline_start + {base})
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(ap_tramp32 - ap_trampoline_start + {base})
    .code32
ap_tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmpl $0x18, $ap_entry64
    .p2align 2
ap_tramp_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
ap_trampoline_end:

    .section .text.ap_entry64, "ax"
    .code64
ap_entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movq ap_boot_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call ap_main
4:
    cli
    hlt
    jmp 4b
"#,
    base = const AP_TRAMPOLINE_BASE,
    options(att_syntax)
);
