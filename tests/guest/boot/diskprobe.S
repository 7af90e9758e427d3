/* diskprobe: a boot program that SeaBIOS loads from an IDE disk (MBR at 0x7c00) or from an
 * El Torito no-emulation CD (the whole image at 0x7c00). It exercises the BIOS disk services
 * (int 13h AH=41/08/48 queries, AH=02/03 CHS and AH=42/43 extended LBA transfers) across the
 * whole medium and prints every result and a checksum of every buffer read on COM1, one line
 * each, prefixed `bt: ` (SeaBIOS prints on the same serial line). Then it powers the machine
 * off through the PIIX4 PM1a control register, wherever firmware put the PM block.
 *
 * The sectors it visits depend only on the capacity the BIOS reports: LBA k * ((N-1) / 15)
 * for k = 0..15, and N-1. The tests put data there (tests/common/boot_disk.rs computes the
 * same list) and compare the transcript and the disk afterwards between QEMU and vmscope.
 *
 * Layout: sector 0 holds the start-up code and the console routines; sectors 1..15 the rest.
 * From a hard disk the boot sector loads them with AH=02; El Torito loads all 16 at once.
 *
 * Built by build.sh: `as --32` + `ld -Ttext 0x7c00 --oformat binary`.
 */
    .code16
    .intel_syntax noprefix
    .section .text
    .globl _start

    .set PROGRAM_SECTORS, 16
    .set BUF_SEG, 0x2000            /* transfer buffer at 0x20000, up to 64 KiB */
    .set COM1, 0x3f8
    .set DEBUGCON, 0xe9             /* scripts/bench-boot watches for the first byte here */

_start:
    /* First instruction of the boot program: a byte to the debug console port, the moment
     * scripts/bench-boot measures (a no-op on machines without that device). */
    mov al, 'B'
    out DEBUGCON, al
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    /* Some BIOSes enter at 07c0:0000; run at 0000:7cxx like the linker addresses say. */
    .byte 0xea
    .word normalized, 0
normalized:
    sti
    cld
    mov [drive], dl
    call serial_init
    cmp byte ptr [drive], 0xe0      /* El Torito no-emulation drives are 0xe0 and up */
    jae loaded
    mov ax, 0x0200 + PROGRAM_SECTORS - 1
    mov cx, 0x0002                  /* cylinder 0, sector 2 */
    xor dh, dh
    mov dl, [drive]
    mov bx, 0x7e00
    int 0x13
    jnc loaded
    mov si, offset msg_load_failed
    call puts
    jmp poweroff
loaded:
    jmp main

/* ---- console: COM1 polled, 115200 8N1 ---- */

serial_init:
    mov dx, COM1 + 1
    xor al, al
    out dx, al                      /* IER: no interrupts */
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al                      /* LCR: divisor latch */
    mov dx, COM1
    mov al, 1
    out dx, al                      /* divisor 1 */
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 3
    out dx, al                      /* 8N1 */
    mov dx, COM1 + 2
    mov al, 7
    out dx, al                      /* FIFOs on and cleared */
    mov dx, COM1 + 4
    mov al, 3
    out dx, al                      /* DTR, RTS */
    ret

/* putc: AL */
putc:
    push dx
    push ax
    mov dx, COM1 + 5
1:  in al, dx
    test al, 0x20
    jz 1b
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

/* puts: DS:SI, zero-terminated */
puts:
    push ax
    push si
1:  lodsb
    test al, al
    jz 2f
    call putc
    jmp 1b
2:  pop si
    pop ax
    ret

/* hex4: low nibble of AL */
hex4:
    push ax
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe 1f
    add al, 'a' - '9' - 1
1:  call putc
    pop ax
    ret

/* hex8: AL */
hex8:
    push ax
    ror al, 4
    call hex4
    rol al, 4
    call hex4
    pop ax
    ret

/* hex16: AX */
hex16:
    xchg al, ah
    call hex8
    xchg al, ah
    call hex8
    ret

/* hex32: EAX */
hex32:
    ror eax, 16
    call hex16
    ror eax, 16
    call hex16
    ret

drive:  .byte 0
crlf:   .asciz "\r\n"
msg_load_failed: .asciz "bt: loading sectors 1-15 with int 13h AH=02 failed\r\n"

    .org 510
    .byte 0x55, 0xaa

/* ================= sector 1 onwards ================= */

/* prints SI then returns */
label:
    jmp puts

/* " name=" then hex8 AL / hex16 AX / hex32 EAX */
field8:
    call puts
    jmp hex8
field16:
    call puts
    jmp hex16
field32:
    call puts
    jmp hex32

newline:
    push si
    mov si, offset crlf
    call puts
    pop si
    ret

/* int 13h with DL = the boot drive; records CF, AX, BX, CX, DX; ES restored to 0. */
bios_disk:
    mov dl, [drive]
    int 0x13
    setc byte ptr [r_cf]
    mov [r_ax], ax
    mov [r_bx], bx
    mov [r_cx], cx
    mov [r_dx], dx
    push 0
    pop es
    ret

/* " cf=C ax=XXXX" */
print_result:
    mov si, offset s_cf
    mov al, [r_cf]
    call field8
    mov si, offset s_ax
    mov ax, [r_ax]
    jmp field16

/* Fills the buffer (BUF_SEG:0) with 0xcc: CX bytes. */
poison_buffer:
    push es
    push di
    push BUF_SEG
    pop es
    xor di, di
    mov al, 0xcc
    rep stosb
    pop di
    pop es
    ret

/* EAX = checksum of CX bytes (a multiple of 4) at BUF_SEG:0: h = rol(h, 5) + dword. */
checksum:
    push fs
    push si
    push cx
    push BUF_SEG
    pop fs
    xor si, si
    xor eax, eax
    shr cx, 2
1:  rol eax, 5
    add eax, fs:[si]
    add si, 4
    loop 1b
    pop cx
    pop si
    pop fs
    ret

/* Fills CX bytes (a multiple of 4) at BUF_SEG:0 with the write pattern of seed EAX:
 * dword i = seed * 0x01000193 ^ (i * 0x9e3779b9). */
fill_pattern:
    push es
    push di
    push ebx
    push edx
    push BUF_SEG
    pop es
    xor di, di
    imul edx, eax, 0x01000193
    xor ebx, ebx
    shr cx, 2
1:  imul eax, ebx, -0x61c88647       /* 0x9e3779b9 */
    xor eax, edx
    stosd
    inc ebx
    loop 1b
    pop edx
    pop ebx
    pop di
    pop es
    ret

/* CX = AL sectors in bytes (bps from AH=48) */
sectors_to_bytes:
    xor ah, ah
    mul word ptr [bps]
    mov cx, ax
    ret

/* ---- extended transfers: AH=42 read / AH=43 write, EAX = LBA, BL = count ---- */

ext_read:
    mov [dap_lba], eax
    mov [dap_count], bl
    mov al, bl
    call sectors_to_bytes
    call poison_buffer
    mov si, offset s_42
    call puts
    call print_dap
    mov ah, 0x42
    mov si, offset dap
    call bios_disk
    call print_result
    mov si, offset s_done
    mov al, [dap_count]
    call field8
    mov al, [dap_count]             /* what the BIOS says it transferred */
    test al, al
    jz 1f
    call sectors_to_bytes
    call checksum
    mov si, offset s_sum
    call field32
1:  jmp newline

/* writes the pattern of seed = LBA */
ext_write:
    mov [dap_lba], eax
    mov [dap_count], bl
    mov al, bl
    call sectors_to_bytes
    mov eax, [dap_lba]
    call fill_pattern
    mov si, offset s_43
    call puts
    call print_dap
    mov ax, 0x4300                  /* AL=0: write without verify */
    mov si, offset dap
    call bios_disk
    call print_result
    mov si, offset s_done
    mov al, [dap_count]
    call field8
    jmp newline

print_dap:
    mov si, offset s_lba
    mov eax, [dap_lba]
    call field32
    mov si, offset s_n
    mov al, [dap_count]
    jmp field8

/* ---- CHS transfers: AH=02 read / AH=03 write; CX, DH as int 13h wants them, AL = count ---- */

chs_read:
    mov [chs_cx], cx
    mov [chs_dh], dh
    mov [chs_n], al
    call sectors_to_bytes
    call poison_buffer
    mov si, offset s_02
    call puts
    call print_chs
    mov ah, 0x02
    mov al, [chs_n]
    mov cx, [chs_cx]
    mov dh, [chs_dh]
    xor bx, bx
    push BUF_SEG
    pop es
    call bios_disk
    call print_result
    cmp byte ptr [r_cf], 0
    jne 1f
    mov al, [chs_n]
    call sectors_to_bytes
    call checksum
    mov si, offset s_sum
    call field32
1:  jmp newline

/* writes the pattern of seed 0xc0000000 | CX << 8 | DH */
chs_write:
    mov [chs_cx], cx
    mov [chs_dh], dh
    mov [chs_n], al
    call sectors_to_bytes
    movzx eax, word ptr [chs_cx]
    shl eax, 8
    mov al, [chs_dh]
    or eax, 0xc0000000
    call fill_pattern
    mov si, offset s_03
    call puts
    call print_chs
    mov ah, 0x03
    mov al, [chs_n]
    mov cx, [chs_cx]
    mov dh, [chs_dh]
    xor bx, bx
    push BUF_SEG
    pop es
    call bios_disk
    call print_result
    jmp newline

print_chs:
    mov si, offset s_cx
    mov ax, [chs_cx]
    call field16
    mov si, offset s_dh
    mov al, [chs_dh]
    call field8
    mov si, offset s_n
    mov al, [chs_n]
    jmp field8

/* EAX = LBA of probe point k (in CL): k * ((sectors - 1) / 15) */
probe_lba:
    push edx
    push ecx
    push ebx
    mov eax, [sectors]
    dec eax
    xor edx, edx
    mov ebx, 15
    div ebx
    movzx ecx, cl
    mul ecx
    pop ebx
    pop ecx
    pop edx
    ret

/* ================= main ================= */

main:
    /* SeaBIOS's serial console (active when the machine has no VGA) sends the end of its
     * "Booting from ..." line from its timer interrupt, lazily: let three timer ticks pass
     * (BDA 0x46c) so that it is out before the first line of ours, then end that line. */
    mov cx, 3
1:  mov eax, [0x46c]
2:  hlt
    cmp eax, [0x46c]
    je 2b
    loop 1b
    mov si, offset crlf
    call puts
    mov si, offset s_start
    call puts
    mov al, [drive]
    call hex8
    call newline

    /* AH=41: extensions present? */
    mov ah, 0x41
    mov bx, 0x55aa
    call bios_disk
    mov si, offset s_41
    call puts
    call print_result
    mov si, offset s_bx
    mov ax, [r_bx]
    call field16
    mov si, offset s_cx
    mov ax, [r_cx]
    call field16
    call newline

    /* AH=08: geometry */
    mov ah, 0x08
    xor di, di
    call bios_disk
    mov si, offset s_08
    call puts
    call print_result
    mov si, offset s_cx
    mov ax, [r_cx]
    call field16
    mov si, offset s_dx
    mov ax, [r_dx]
    call field16
    call newline
    mov ax, [r_cx]
    mov [max_cx], ax
    mov ax, [r_dx]
    mov [max_dh], ah

    /* AH=48: drive parameters, EDD 3.0 buffer */
    mov word ptr [params], 0x42
    mov ah, 0x48
    mov si, offset params
    call bios_disk
    mov si, offset s_48
    call puts
    call print_result
    mov si, offset s_size
    mov ax, [params]
    call field16
    mov si, offset s_flags
    mov ax, [params + 2]
    call field16
    mov si, offset s_cyl
    mov eax, [params + 4]
    call field32
    mov si, offset s_heads
    mov eax, [params + 8]
    call field32
    mov si, offset s_spt
    mov eax, [params + 12]
    call field32
    mov si, offset s_sectors
    mov eax, [params + 20]
    call field32
    mov eax, [params + 16]
    call hex32
    mov si, offset s_bps
    mov ax, [params + 24]
    call field16
    call newline
    /* the EDD 3.0 part after the DPTE pointer: key, length, bus, interface, paths, checksum */
    mov si, offset s_48edd
    call puts
    mov si, offset params + 0x1e
    mov cx, 0x42 - 0x1e
1:  lodsb
    call hex8
    loop 1b
    call newline

    cmp byte ptr [r_cf], 0
    jne finish
    mov eax, [params + 16]
    mov [sectors], eax
    mov ax, [params + 24]
    mov [bps], ax
    cmp ax, 512
    je 2f
    cmp ax, 2048
    je 2f
    mov si, offset s_bad_bps
    call puts
    jmp finish
2:
    /* A CD reports no capacity through AH=48 (removable medium): take the volume space
     * size from the ISO 9660 primary volume descriptor (block 16, offset 80). */
    cmp word ptr [bps], 2048
    jne 6f
    mov eax, 16
    mov bl, 1
    call ext_read
    push fs
    push BUF_SEG
    pop fs
    mov eax, fs:[80]
    pop fs
    mov [sectors], eax
    mov si, offset s_volume
    call field32
    call newline
6:

    /* the probe points as they are */
    xor cl, cl
3:  call probe_lba
    mov bl, 1
    push cx
    call ext_read
    pop cx
    inc cl
    cmp cl, 16
    jb 3b
    mov eax, [sectors]
    dec eax
    mov bl, 1
    call ext_read
    /* a multi-sector read straddling probe point 7 */
    mov cl, 7
    call probe_lba
    sub eax, 3
    mov bl, 8
    call ext_read

    cmp word ptr [bps], 2048
    je cd_part

    /* CHS: the boot sector, the last sector the geometry reaches, 4 sectors mid-track */
    mov cx, 0x0001
    xor dh, dh
    mov al, 1
    call chs_read
    mov cx, [max_cx]
    mov dh, [max_dh]
    mov al, 1
    call chs_read
    mov cx, 0x0103                  /* cylinder 1, sector 3 */
    mov dh, 1
    mov al, 4
    call chs_read

    /* writes at every probe point but 0 (4 sectors; 1 at the last), each read back */
    mov cl, 1
4:  call probe_lba
    mov bl, 4
    cmp cl, 15
    jne 5f
    mov bl, 1
5:  push cx
    push eax
    push bx
    call ext_write
    pop bx
    pop eax
    call ext_read
    pop cx
    inc cl
    cmp cl, 16
    jb 4b
    mov eax, [sectors]
    dec eax
    mov bl, 1
    push eax
    call ext_write
    pop eax
    mov bl, 1
    call ext_read

    /* CHS write of 3 sectors at cylinder 2 head 1 sector 5, read back both ways */
    mov cx, 0x0205
    mov dh, 1
    mov al, 3
    call chs_write
    mov cx, 0x0205
    mov dh, 1
    mov al, 3
    call chs_read

    /* the BIOS must refuse: past the end, sector 0 in CHS */
    mov eax, [sectors]
    mov bl, 1
    call ext_read
    mov eax, [sectors]
    sub eax, 2
    mov bl, 4
    call ext_write
    mov cx, 0x0000
    xor dh, dh
    mov al, 1
    call chs_read
    jmp status

cd_part:
    /* a CD is read-only: the write must fail */
    mov cl, 1
    call probe_lba
    mov bl, 1
    call ext_write

status:
    /* AH=01: status of the last operation; AH=00: reset */
    mov ah, 0x01
    call bios_disk
    mov si, offset s_01
    call puts
    call print_result
    call newline
    mov ah, 0x00
    call bios_disk
    mov si, offset s_00
    call puts
    call print_result
    call newline

finish:
    mov si, offset s_finished
    call puts
    /* fall through */

/* ACPI soft-off: PM1a control = PIIX4 PMBA (PCI 00:01.3 register 0x40) + 4. */
poweroff:
    mov dx, COM1 + 5                /* let the last line leave the UART first */
1:  in al, dx
    test al, 0x40
    jz 1b
    mov eax, 0x80000b40
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    and ax, 0xffc0
    add ax, 4
    mov dx, ax
    mov ax, 0x2000                  /* SLP_EN, SLP_TYP 0 (S5) */
    out dx, ax
    cli
2:  hlt
    jmp 2b

s_start:    .asciz "bt: diskprobe: drive "
s_41:       .asciz "bt: 41"
s_08:       .asciz "bt: 08"
s_48:       .asciz "bt: 48"
s_48edd:    .asciz "bt: 48 edd "
s_42:       .asciz "bt: 42"
s_43:       .asciz "bt: 43"
s_02:       .asciz "bt: 02"
s_03:       .asciz "bt: 03"
s_01:       .asciz "bt: 01"
s_00:       .asciz "bt: 00"
s_cf:       .asciz " cf="
s_ax:       .asciz " ax="
s_bx:       .asciz " bx="
s_cx:       .asciz " cx="
s_dx:       .asciz " dx="
s_dh:       .asciz " dh="
s_n:        .asciz " n="
s_done:     .asciz " done="
s_sum:      .asciz " sum="
s_lba:      .asciz " lba="
s_size:     .asciz " size="
s_flags:    .asciz " flags="
s_cyl:      .asciz " cyl="
s_heads:    .asciz " heads="
s_spt:      .asciz " spt="
s_sectors:  .asciz " sectors="
s_bps:      .asciz " bps="
s_volume:   .asciz "bt: iso9660 volume blocks="
s_bad_bps:  .asciz "bt: unexpected sector size\r\n"
s_finished: .asciz "bt: finished\r\n"

    .p2align 2
r_cf:   .byte 0
r_pad:  .byte 0
r_ax:   .word 0
r_bx:   .word 0
r_cx:   .word 0
r_dx:   .word 0
max_cx: .word 0
max_dh: .byte 0
chs_dh: .byte 0
chs_cx: .word 0
chs_n:  .byte 0
    .p2align 2
sectors: .long 0
bps:    .word 512
    .p2align 2
dap:        .byte 0x10, 0
dap_count:  .byte 0, 0
dap_buffer: .word 0, BUF_SEG
dap_lba:    .long 0, 0
    .p2align 2
params: .fill 0x42, 1, 0

    .org PROGRAM_SECTORS * 512
