# ATA register-level probe, booted by SeaBIOS from the primary master. It prints on COM1
# what a driver sees: IDENTIFY words, task file registers, interrupt line (IRQ 14 switched
# to level mode and masked, so the 8259's IRR shows the line), data checksums, and the
# bus-master status, for PIO and DMA commands, good and bad. The same disk gives the same
# lines on QEMU 7.2 and on vmscope (tests/ide_probe.rs). Ends with an ACPI poweroff.
#
# Disk layout (written by the test): this program in LBA 0-15, sector s filled with
# (7*s + i) & 0xff from LBA 16 on; 2048 sectors.

    .code16
    .set BUF, 0xc000            # PIO buffer (up to 8 sectors)
    .set PRD, 0xb000            # PRD table
    .set DMA0, 0x2000           # DMA buffer segments (0x20000, 0x30000)
    .set DMA1, 0x3000

    .section .text
    .global _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    cld
    # Load LBA 1-15 after the boot sector (int 13h, CHS 0/0/2, 15 sectors).
    mov $0x020f, %ax
    mov $0x0002, %cx
    mov $0x0080, %dx
    mov $0x7e00, %bx
    int $0x13
    jc load_failed
    jmp main
load_failed:
    mov $'L', %al
    call putc
    hlt

# ---- output ----
putc:
    push %dx
    push %ax
    mov $0x3fd, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    pop %ax
    mov $0x3f8, %dx
    out %al, %dx
    pop %dx
    ret

puts:                           # si: string
    push %ax
1:  lodsb
    test %al, %al
    jz 2f
    call putc
    jmp 1b
2:  pop %ax
    ret

hexw:
    push %ax
    mov %ah, %al
    call hexb
    pop %ax
hexb:
    push %ax
    shr $4, %al
    call nib
    pop %ax
nib:
    push %ax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 1f
    add $7, %al
1:  call putc
    pop %ax
    ret

nl:
    push %ax
    mov $'\n', %al
    call putc
    pop %ax
    ret

    .org 510
    .byte 0x55, 0xaa

# ---- sector 1 on ----
# The 8259's view of IRQ 14 (level mode, masked): 1 while the line is asserted.
irq:
    push %dx
    mov $0xa0, %dx
    mov $0x0a, %al
    out %al, %dx
    in %dx, %al
    shr $6, %al
    and $1, %al
    pop %dx
    ret

# Polls the alternate status until BSY clears.
wait_bsy:
    push %ax
    push %cx
    push %dx
    push %bx
    mov $0x3f6, %dx
    mov $64, %bx
1:  mov $0xffff, %cx
2:  in %dx, %al
    test $0x80, %al
    jz 3f
    loop 2b
    dec %bx
    jnz 1b
3:  pop %bx
    pop %dx
    pop %cx
    pop %ax
    ret

# " i=X s=SS ERR SC SN CL CH DH a=X": line before and after reading the status register.
report:
    push %ax
    push %dx
    push %si
    call wait_bsy
    mov $s_irq, %si
    call puts
    call irq
    call nib
    mov $s_st, %si
    call puts
    mov $0x3f6, %dx
    in %dx, %al
    call hexb
    mov $0x1f1, %dx
1:  mov $' ', %al
    call putc
    in %dx, %al
    call hexb
    inc %dx
    cmp $0x1f7, %dx
    jne 1b
    in %dx, %al                 # acknowledge
    mov $s_ack, %si
    call puts
    call irq
    call nib
    pop %si
    pop %dx
    pop %ax
    ret

# Reads cx words from the data port into BUF (rep insw) and prints " sum=XXXX".
rdsum:
    push %ax
    push %cx
    push %dx
    push %di
    push %si
    mov $0x1f0, %dx
    mov $BUF, %di
    push %cx
    rep insw
    pop %cx
    mov $BUF, %si
    call sum_ds
    pop %si
    pop %di
    pop %dx
    pop %cx
    pop %ax
    ret

# Sums cx words at ds:si into bx.
sum_words:
    push %ax
    push %si
    xor %bx, %bx
1:  lodsw
    add %ax, %bx
    loop 1b
    pop %si
    pop %ax
    ret

# Prints " sum=XXXX" of bx.
put_sum:
    push %ax
    push %si
    mov $s_sum, %si
    call puts
    mov %bx, %ax
    call hexw
    pop %si
    pop %ax
    ret

# Sums cx words at ds:si, prints " sum=XXXX".
sum_ds:
    push %bx
    call sum_words
    call put_sum
    pop %bx
    ret

# Sums cx words at es:0 (a DMA buffer segment).
sum_seg:
    push %bx
    push %ds
    push %si
    push %es
    pop %ds
    xor %si, %si
    call sum_words
    pop %si
    pop %ds
    call put_sum
    pop %bx
    ret

# Writes cx words of 3*i + bx from BUF through the data port (rep outsw).
wrpat:
    push %ax
    push %cx
    push %dx
    push %di
    push %si
    push %cx
    mov $BUF, %di
    xor %ax, %ax
1:  push %ax
    imul $3, %ax, %ax
    add %bx, %ax
    stosw
    pop %ax
    inc %ax
    loop 1b
    pop %cx
    mov $BUF, %si
    mov $0x1f0, %dx
    rep outsw
    pop %si
    pop %di
    pop %dx
    pop %cx
    pop %ax
    ret

# LBA28 task file: dh=device (0xe0 | LBA 24-27), ch=count, cl/bh/bl = LBA 0-7/8-15/16-23.
taskfile:
    push %ax
    push %dx
    mov %dh, %al
    mov $0x1f6, %dx
    out %al, %dx
    mov $0x1f2, %dx
    mov %ch, %al
    out %al, %dx
    inc %dx
    mov %cl, %al
    out %al, %dx
    inc %dx
    mov %bh, %al
    out %al, %dx
    inc %dx
    mov %bl, %al
    out %al, %dx
    pop %dx
    pop %ax
    ret

# Writes al to the command register.
command:
    push %dx
    mov $0x1f7, %dx
    out %al, %dx
    pop %dx
    ret

# Prints the step name at si.
step:
    call puts
    ret

# Starts the bus master (al = command), waits until it is idle or interrupted, prints
# " bm=SS", stops it and reports the task file.
dma_run:
    push %ax
    push %cx
    push %dx
    push %bx
    mov bmbase, %dx
    out %al, %dx
    add $2, %dx
    mov $64, %bx
1:  mov $0xffff, %cx
2:  in %dx, %al
    test $0x04, %al
    jnz 3f
    test $0x01, %al
    jz 3f
    loop 2b
    dec %bx
    jnz 1b
3:  mov $s_bm, %si
    call puts
    call hexb
    mov bmbase, %dx
    xor %al, %al
    out %al, %dx
    call report
    add $2, %dx
    mov $0x66, %al              # clear interrupt and error, keep the capable bits
    out %al, %dx
    pop %bx
    pop %dx
    pop %cx
    pop %ax
    ret

# PRD entry di: address eax, control ecx.
prd:
    mov %eax, (%di)
    mov %ecx, 4(%di)
    add $8, %di
    ret

main:
    # IRQ 14: level triggered and masked, so the slave 8259's IRR follows the line.
    mov $0x4d1, %dx
    in %dx, %al
    or $0x40, %al
    out %al, %dx
    mov $0xa1, %dx
    in %dx, %al
    or $0x40, %al
    out %al, %dx
    mov $0x3f6, %dx
    mov $0x08, %al
    out %al, %dx

    # IDENTIFY DEVICE, all 256 words.
    mov $0x1f6, %dx
    mov $0xa0, %al
    out %al, %dx
    mov $0xec, %al
    call command
    mov $s_identify, %si
    call step
    call wait_bsy
    call report
    call nl
    mov $0x1f0, %dx
    mov $32, %bx
1:  mov $s_words, %si
    call puts
    mov $8, %cx
2:  in %dx, %ax
    call hexw
    mov $' ', %al
    call putc
    loop 2b
    call nl
    dec %bx
    jnz 1b
    mov $s_after, %si
    call step
    call report
    call nl

    # READ SECTORS, LBA 100, 2 sectors: a DRQ block and an interrupt per sector.
    mov $s_r28, %si
    call step
    mov $0xe000, %dx
    mov $0x0264, %cx
    xor %bx, %bx
    call taskfile
    mov $0x20, %al
    call command
    call report
    mov $256, %cx
    call rdsum
    call report
    mov $256, %cx
    call rdsum
    call report
    call nl

    # WRITE SECTORS, LBA 300 (0x12c); FLUSH CACHE; read it back.
    mov $s_w28, %si
    call step
    mov $0xe000, %dx
    mov $0x012c, %cx
    mov $0x0100, %bx
    call taskfile
    mov $0x30, %al
    call command
    call report
    mov $256, %cx
    mov $0x1111, %bx
    call wrpat
    call report
    mov $0xe7, %al
    call command
    call report
    mov $0xe000, %dx
    mov $0x012c, %cx
    mov $0x0100, %bx
    call taskfile
    mov $0x20, %al
    call command
    call report
    mov $256, %cx
    call rdsum
    call report
    call nl

    # READ SECTORS EXT, LBA 101; the registers with HOB set read the previous bytes.
    mov $s_r48, %si
    call step
    mov $0x1f6, %dx
    mov $0x40, %al
    out %al, %dx
    mov $0x1f2, %dx
    xor %al, %al
    out %al, %dx
    inc %dx
    out %al, %dx
    inc %dx
    out %al, %dx
    inc %dx
    out %al, %dx
    mov $0x1f2, %dx
    mov $1, %al
    out %al, %dx
    inc %dx
    mov $0x65, %al
    out %al, %dx
    inc %dx
    xor %al, %al
    out %al, %dx
    inc %dx
    out %al, %dx
    mov $0x24, %al
    call command
    call report
    mov $256, %cx
    call rdsum
    call report
    mov $0x3f6, %dx
    mov $0x88, %al
    out %al, %dx
    mov $s_hob, %si
    call puts
    mov $0x1f2, %dx
1:  in %dx, %al
    call hexb
    mov $' ', %al
    call putc
    inc %dx
    cmp $0x1f6, %dx
    jne 1b
    mov $0x3f6, %dx
    mov $0x08, %al
    out %al, %dx
    call nl

    # Errors: a sector past the end, an unknown command, PACKET to a disk.
    mov $s_err, %si
    call step
    mov $0xe000, %dx
    mov $0x0100, %cx
    mov $0x0800, %bx            # LBA 2048: one past the last sector
    call taskfile
    mov $0x20, %al
    call command
    call report
    mov $0x55, %al
    call command
    call report
    mov $0xa0, %al
    call command
    call report
    call nl

    # SET MULTIPLE 4, READ MULTIPLE 6 sectors from LBA 100, SET MULTIPLE 3 (refused).
    mov $s_mul, %si
    call step
    mov $0x1f2, %dx
    mov $4, %al
    out %al, %dx
    mov $0xc6, %al
    call command
    call report
    mov $0xe000, %dx
    mov $0x0664, %cx
    xor %bx, %bx
    call taskfile
    mov $0xc4, %al
    call command
    call report
    mov $1024, %cx
    call rdsum
    call report
    mov $512, %cx
    call rdsum
    call report
    mov $0x1f2, %dx
    mov $3, %al
    out %al, %dx
    mov $0xc6, %al
    call command
    call report
    call nl

    # VERIFY, SEEK, CHECK POWER MODE, IDLE IMMEDIATE, READ NATIVE MAX, SET FEATURES.
    mov $s_misc, %si
    call step
    mov $0xe000, %dx
    mov $0x0264, %cx
    xor %bx, %bx
    call taskfile
    mov $0x40, %al
    call command
    call report
    mov $0x70, %al
    call command
    call report
    mov $0xe5, %al
    call command
    call report
    mov $0xe1, %al
    call command
    call report
    mov $0xf8, %al
    call command
    call report
    mov $0x1f1, %dx
    mov $0x82, %al
    out %al, %dx
    mov $0xef, %al
    call command
    call report
    mov $0x1f1, %dx
    mov $0x02, %al
    out %al, %dx
    mov $0xef, %al
    call command
    call report
    mov $0x1f1, %dx
    mov $0x77, %al
    out %al, %dx
    mov $0xef, %al
    call command
    call report
    call nl

    # nIEN: no interrupt; software reset: the signature; the absent slave.
    mov $s_reset, %si
    call step
    mov $0x3f6, %dx
    mov $0x0a, %al
    out %al, %dx
    mov $0x70, %al
    call command
    call report
    mov $0x0e, %al
    out %al, %dx
    mov $0x0a, %al
    out %al, %dx
    call report
    mov $0x08, %al
    out %al, %dx
    mov $0x1f6, %dx
    mov $0xb0, %al
    out %al, %dx
    mov $0xec, %al
    call command
    call report
    mov $0x1f6, %dx
    mov $0xa0, %al
    out %al, %dx
    call report
    call nl

    # Bus master: BAR4 from PCI 00:01.1, I/O and bus mastering on.
    mov $0xcf8, %dx
    mov $0x80000920, %eax
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %eax
    and $0xfffc, %ax
    mov %ax, bmbase
    mov $0xcf8, %dx
    mov $0x80000904, %eax
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %ax
    or $0x05, %ax
    out %ax, %dx
    mov bmbase, %dx
    add $2, %dx
    mov $0x66, %al
    out %al, %dx
    add $2, %dx
    mov $PRD, %eax
    out %eax, %dx

    # READ DMA, LBA 100, 2 sectors into two PRDs.
    mov $s_dmar, %si
    call step
    mov $PRD, %di
    mov $0x20000, %eax
    mov $0x200, %ecx
    call prd
    mov $0x30000, %eax
    mov $0x80000200, %ecx
    call prd
    mov $0xe000, %dx
    mov $0x0264, %cx
    xor %bx, %bx
    call taskfile
    mov $0xc8, %al
    call command
    call report
    mov $0x09, %al
    call dma_run
    mov $DMA0, %ax
    mov %ax, %es
    mov $256, %cx
    call sum_seg
    mov $DMA1, %ax
    mov %ax, %es
    mov $256, %cx
    call sum_seg
    xor %ax, %ax
    mov %ax, %es
    call nl

    # WRITE DMA of that data to LBA 400 (0x190), read back by PIO.
    mov $s_dmaw, %si
    call step
    mov $PRD, %di
    mov $0x20000, %eax
    mov $0x80000400, %ecx
    call prd
    mov $0xe000, %dx
    mov $0x0290, %cx
    mov $0x0100, %bx
    call taskfile
    mov $0xca, %al
    call command
    mov $0x01, %al
    call dma_run
    mov $0xe000, %dx
    mov $0x0290, %cx
    mov $0x0100, %bx
    call taskfile
    mov $0x20, %al
    call command
    call report
    mov $256, %cx
    call rdsum
    call report
    mov $256, %cx
    call rdsum
    call nl

    # PRDs too short (512 bytes for 2 sectors): stops without an interrupt.
    mov $s_short, %si
    call step
    mov $PRD, %di
    mov $0x20000, %eax
    mov $0x80000200, %ecx
    call prd
    mov $0xe000, %dx
    mov $0x0264, %cx
    xor %bx, %bx
    call taskfile
    mov $0xc8, %al
    call command
    mov $0x09, %al
    call dma_run
    call nl

    # A zero byte count is 64 KiB: 128 sectors in one PRD; longer PRDs keep Active set.
    mov $s_big, %si
    call step
    mov $PRD, %di
    mov $0x20000, %eax
    mov $0x80000000, %ecx
    call prd
    mov $0xe000, %dx
    mov $0x8010, %cx            # 128 sectors from LBA 16
    xor %bx, %bx
    call taskfile
    mov $0xc8, %al
    call command
    mov $0x09, %al
    call dma_run
    mov $DMA0 + 0xfe0, %ax
    mov %ax, %es
    mov $256, %cx
    call sum_seg
    xor %ax, %ax
    mov %ax, %es
    mov $PRD, %di
    mov $0x20000, %eax
    mov $0x80001000, %ecx
    call prd
    mov $0xe000, %dx
    mov $0x0164, %cx
    xor %bx, %bx
    call taskfile
    mov $0xc8, %al
    call command
    mov $0x09, %al
    call dma_run
    call nl

    # READ DMA EXT, LBA 0x7ff (the last sector), 1 sector.
    mov $s_dma48, %si
    call step
    mov $PRD, %di
    mov $0x20000, %eax
    mov $0x80000200, %ecx
    call prd
    mov $0x1f6, %dx
    mov $0x40, %al
    out %al, %dx
    mov $0x1f2, %dx
    xor %al, %al
    out %al, %dx
    inc %dx
    out %al, %dx
    inc %dx
    out %al, %dx
    inc %dx
    out %al, %dx
    mov $0x1f2, %dx
    mov $1, %al
    out %al, %dx
    inc %dx
    mov $0xff, %al
    out %al, %dx
    inc %dx
    mov $0x07, %al
    out %al, %dx
    inc %dx
    xor %al, %al
    out %al, %dx
    mov $0x25, %al
    call command
    mov $0x09, %al
    call dma_run
    mov $DMA0, %ax
    mov %ax, %es
    mov $256, %cx
    call sum_seg
    xor %ax, %ax
    mov %ax, %es
    call nl

    # What the board put in CMOS about the disks: types, the primary master's parameters,
    # the BIOS translations.
    mov $s_cmos, %si
    call puts
    mov $cmos_bytes, %si
1:  lodsb
    test %al, %al
    jz 2f
    out %al, $0x70
    in $0x71, %al
    call hexb
    mov $' ', %al
    call putc
    jmp 1b
2:  call nl

    mov $s_done, %si
    call puts
    # ACPI poweroff: PM1a control (PMBA + 4, PIIX4 PM 00:01.3 register 0x40), SLP_EN with
    # sleep type 0.
    mov $0xcf8, %dx
    mov $0x80000b40, %eax
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %eax
    and $0xffc0, %ax
    add $4, %ax
    mov %ax, %dx
    mov $0x2000, %ax
    out %ax, %dx
    hlt

bmbase: .word 0
cmos_bytes: .byte 0x12, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x39, 0
s_cmos:     .asciz "cmos: "
s_irq:      .asciz " i="
s_st:       .asciz " s="
s_ack:      .asciz " a="
s_sum:      .asciz " sum="
s_bm:       .asciz " bm="
s_hob:      .asciz " hob="
s_words:    .asciz "w "
s_identify: .asciz "identify:"
s_after:    .asciz "after:"
s_r28:      .asciz "r28:"
s_w28:      .asciz "w28:"
s_r48:      .asciz "r48:"
s_err:      .asciz "errors:"
s_mul:      .asciz "multiple:"
s_misc:     .asciz "misc:"
s_reset:    .asciz "reset:"
s_dmar:     .asciz "dma-read:"
s_dmaw:     .asciz "dma-write:"
s_short:    .asciz "dma-short:"
s_big:      .asciz "dma-64k:"
s_dma48:    .asciz "dma-ext:"
s_done:     .asciz "probe done\n"
    .org 16 * 512
