//! HMP `info registers`: one vCPU's state in QEMU 7.2's x86_64 dump format (the format
//! of `x86_cpu_dump_state` with the FPU section), from the state KVM holds.
//!
//! The layout depends on the CPU mode as QEMU's does: 64-bit code (long mode with a
//! 64-bit CS) prints `RAX=` lines with R8-R15 and 64-bit segment bases; otherwise the
//! `EAX=` form. Long mode prints 64-bit GDT/IDT bases and CR2/CR3; protected mode adds
//! each present segment's `DPL=` and type. The SSE section prints 16 XMM registers in
//! 64-bit code and 8 otherwise, or 16 YMM registers once the guest enabled AVX in XCR0.

use std::fmt::Write;

use kvm_bindings::{kvm_debugregs, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events};

/// One vCPU's registers as KVM reports them (read while the vCPU is not running).
#[derive(Clone, Debug, Default)]
pub struct VcpuRegisters {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
    pub debugregs: kvm_debugregs,
    pub events: kvm_vcpu_events,
    /// The vCPU waits in HLT (`KVM_MP_STATE_HALTED`).
    pub halted: bool,
    pub xcr0: u64,
    /// The upper halves of YMM0-15 (from the XSAVE area), when the guest enabled AVX.
    pub ymm_high: Option<[[u8; 16]; 16]>,
}

const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
const XCR0_YMM: u64 = 1 << 2;
/// XCR0 bits of the AVX-512 state (opmask, ZMM_Hi256, Hi16_ZMM).
const XCR0_AVX512: u64 = 0xe0;

/// Descriptor flags in the layout of a descriptor's high dword (QEMU's `SegmentCache`).
fn descriptor_flags(s: &kvm_segment) -> u32 {
    (u32::from(s.type_) << 8)
        | (u32::from(s.s & 1) << 12)
        | (u32::from(s.dpl & 3) << 13)
        | (u32::from(s.present != 0 && s.unusable == 0) << 15)
        | (u32::from(s.avl & 1) << 20)
        | (u32::from(s.l & 1) << 21)
        | (u32::from(s.db & 1) << 22)
        | (u32::from(s.g & 1) << 23)
}

/// The CPU mode bits QEMU derives (its `hflags`).
struct Mode {
    protected: bool,
    long: bool,
    code64: bool,
}

fn segment_line(out: &mut String, name: &str, s: &kvm_segment, mode: &Mode) {
    let flags = descriptor_flags(s);
    if mode.code64 {
        let _ = write!(
            out,
            "{name:<3}={:04x} {:016x} {:08x} {:08x}",
            s.selector, s.base, s.limit, flags
        );
    } else {
        let _ = write!(
            out,
            "{name:<3}={:04x} {:08x} {:08x} {:08x}",
            s.selector, s.base as u32, s.limit, flags
        );
    }
    let present = flags & (1 << 15) != 0;
    if mode.protected && present {
        let _ = write!(out, " DPL={} ", s.dpl & 3);
        let kind = s.type_ & 0xf;
        if s.s != 0 {
            let bit = |mask: u8, c: char| if kind & mask != 0 { c } else { '-' };
            if kind & 8 != 0 {
                let width = if s.l != 0 {
                    "CS64"
                } else if s.db != 0 {
                    "CS32"
                } else {
                    "CS16"
                };
                let _ = write!(out, "{width} [{}{}", bit(4, 'C'), bit(2, 'R'));
            } else {
                let width = if s.db != 0 || mode.long {
                    "DS  "
                } else {
                    "DS16"
                };
                let _ = write!(out, "{width} [{}{}", bit(4, 'E'), bit(2, 'W'));
            }
            let _ = write!(out, "{}]", bit(1, 'A'));
        } else {
            const LEGACY: [&str; 16] = [
                "Reserved",
                "TSS16-avl",
                "LDT",
                "TSS16-busy",
                "CallGate16",
                "TaskGate",
                "IntGate16",
                "TrapGate16",
                "Reserved",
                "TSS32-avl",
                "Reserved",
                "TSS32-busy",
                "CallGate32",
                "Reserved",
                "IntGate32",
                "TrapGate32",
            ];
            const LONG: [&str; 16] = [
                "<hiword>",
                "Reserved",
                "LDT",
                "Reserved",
                "Reserved",
                "Reserved",
                "Reserved",
                "Reserved",
                "Reserved",
                "TSS64-avl",
                "Reserved",
                "TSS64-busy",
                "CallGate64",
                "Reserved",
                "IntGate64",
                "TrapGate64",
            ];
            let names = if mode.long { &LONG } else { &LEGACY };
            out.push_str(names[kind as usize]);
        }
    }
    out.push('\n');
}

fn u64_at(bytes: &[u8; 16], half: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[half * 8..half * 8 + 8]);
    u64::from_le_bytes(b)
}

/// `info registers` for vCPU `index`: the `CPU#N` header and the dump, `\n` line ends.
/// Fails (naming what is missing) for AVX-512 state, which vmscope does not print.
pub fn dump(index: u32, r: &VcpuRegisters) -> Result<String, String> {
    let (regs, sregs) = (&r.regs, &r.sregs);
    let mode = Mode {
        protected: sregs.cr0 & CR0_PE != 0,
        long: sregs.efer & EFER_LMA != 0,
        code64: sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0,
    };
    let mut out = format!("\nCPU#{index}\n");
    let rflags = regs.rflags;
    let flag = |bit: u32, c: char| if rflags & (1 << bit) != 0 { c } else { '-' };
    let flag_text: String = [
        flag(10, 'D'),
        flag(11, 'O'),
        flag(7, 'S'),
        flag(6, 'Z'),
        flag(4, 'A'),
        flag(2, 'P'),
        flag(0, 'C'),
    ]
    .iter()
    .collect();
    let cpl = sregs.ss.dpl & 3;
    let status = format!(
        "[{flag_text}] CPL={cpl} II={} A20=1 SMM={} HLT={}\n",
        u8::from(r.events.interrupt.shadow != 0),
        u8::from(r.events.smi.smm != 0),
        u8::from(r.halted)
    );
    if mode.code64 {
        let _ = write!(
            out,
            "RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\n\
             RSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}\n\
             R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}\n\
             R12={:016x} R13={:016x} R14={:016x} R15={:016x}\n\
             RIP={:016x} RFL={:08x} {status}",
            regs.rax,
            regs.rbx,
            regs.rcx,
            regs.rdx,
            regs.rsi,
            regs.rdi,
            regs.rbp,
            regs.rsp,
            regs.r8,
            regs.r9,
            regs.r10,
            regs.r11,
            regs.r12,
            regs.r13,
            regs.r14,
            regs.r15,
            regs.rip,
            rflags as u32
        );
    } else {
        let _ = write!(
            out,
            "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}\n\
             ESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}\n\
             EIP={:08x} EFL={:08x} {status}",
            regs.rax as u32,
            regs.rbx as u32,
            regs.rcx as u32,
            regs.rdx as u32,
            regs.rsi as u32,
            regs.rdi as u32,
            regs.rbp as u32,
            regs.rsp as u32,
            regs.rip as u32,
            rflags as u32
        );
    }
    for (name, segment) in [
        ("ES", &sregs.es),
        ("CS", &sregs.cs),
        ("SS", &sregs.ss),
        ("DS", &sregs.ds),
        ("FS", &sregs.fs),
        ("GS", &sregs.gs),
        ("LDT", &sregs.ldt),
        ("TR", &sregs.tr),
    ] {
        segment_line(&mut out, name, segment, &mode);
    }
    let dr = &r.debugregs;
    if mode.long {
        let _ = write!(
            out,
            "GDT=     {:016x} {:08x}\nIDT=     {:016x} {:08x}\n\
             CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x}\n",
            sregs.gdt.base,
            sregs.gdt.limit,
            sregs.idt.base,
            sregs.idt.limit,
            sregs.cr0 as u32,
            sregs.cr2,
            sregs.cr3,
            sregs.cr4 as u32
        );
    } else {
        let _ = write!(
            out,
            "GDT=     {:08x} {:08x}\nIDT=     {:08x} {:08x}\n\
             CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x}\n",
            sregs.gdt.base as u32,
            sregs.gdt.limit,
            sregs.idt.base as u32,
            sregs.idt.limit,
            sregs.cr0 as u32,
            sregs.cr2 as u32,
            sregs.cr3 as u32,
            sregs.cr4 as u32
        );
    }
    for (i, value) in dr.db.iter().enumerate() {
        let _ = write!(out, "DR{i}={value:016x} ");
    }
    let _ = write!(
        out,
        "\nDR6={:016x} DR7={:016x}\nEFER={:016x}\n",
        dr.dr6, dr.dr7, sregs.efer
    );

    let fpu = &r.fpu;
    let top = (fpu.fsw >> 11) & 7;
    let _ = writeln!(
        out,
        "FCW={:04x} FSW={:04x} [ST={top}] FTW={:02x} MXCSR={:08x}",
        fpu.fcw, fpu.fsw, fpu.ftwx, fpu.mxcsr
    );
    for (i, reg) in fpu.fpr.iter().enumerate() {
        let upper = u16::from_le_bytes([reg[8], reg[9]]);
        let _ = write!(out, "FPR{i}={:016x} {upper:04x}", u64_at(reg, 0));
        out.push(if i % 2 == 1 { '\n' } else { ' ' });
    }
    if r.xcr0 & XCR0_AVX512 == XCR0_AVX512 {
        return Err("info registers: AVX-512 register state is not shown by vmscope".into());
    }
    if r.xcr0 & XCR0_YMM != 0 {
        let high = r.ymm_high.unwrap_or([[0; 16]; 16]);
        for (i, (low, high)) in fpu.xmm.iter().zip(high.iter()).enumerate() {
            let _ = writeln!(
                out,
                "YMM{i:02}={:016x} {:016x} {:016x} {:016x}",
                u64_at(high, 1),
                u64_at(high, 0),
                u64_at(low, 1),
                u64_at(low, 0)
            );
        }
    } else {
        let count = if mode.code64 { 16 } else { 8 };
        for (i, xmm) in fpu.xmm.iter().take(count).enumerate() {
            let _ = write!(
                out,
                "XMM{i:02}={:016x} {:016x}",
                u64_at(xmm, 1),
                u64_at(xmm, 0)
            );
            out.push(if i % 2 == 1 { '\n' } else { ' ' });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(
        selector: u16,
        base: u64,
        limit: u32,
        type_: u8,
        dpl: u8,
        db: u8,
        l: u8,
    ) -> kvm_segment {
        kvm_segment {
            base,
            limit,
            selector,
            type_,
            present: 1,
            dpl,
            db,
            s: 1,
            l,
            g: u8::from(limit == 0xffff_ffff),
            ..Default::default()
        }
    }

    fn system(type_: u8) -> kvm_segment {
        kvm_segment {
            limit: 0x67,
            selector: 0x18,
            type_,
            present: 1,
            ..Default::default()
        }
    }

    /// A flat 64-bit kernel state: the long-mode layout, `CS64`, `DS  `, TSS64-busy.
    #[test]
    fn long_mode_layout() {
        let mut r = VcpuRegisters::default();
        r.regs.rax = 0x1122_3344_5566_7788;
        r.regs.r15 = 0xf;
        r.regs.rip = 0xffff_ffff_8100_0000;
        r.regs.rflags = 0x246;
        let data = segment(0x10, 0, 0xffff_ffff, 3, 0, 1, 0);
        r.sregs.cs = segment(0x08, 0, 0xffff_ffff, 0xb, 0, 0, 1);
        r.sregs.ds = data;
        r.sregs.es = data;
        r.sregs.ss = data;
        r.sregs.tr = system(0xb);
        r.sregs.ldt = kvm_segment {
            unusable: 1,
            ..Default::default()
        };
        r.sregs.gdt.base = 0xffff_8000_0000_1000;
        r.sregs.gdt.limit = 0x7f;
        r.sregs.cr0 = 0x8000_0011;
        r.sregs.cr3 = 0x1000;
        r.sregs.cr4 = 0x20;
        r.sregs.efer = 0x500;
        r.debugregs.dr6 = 0xffff0ff0;
        r.debugregs.dr7 = 0x400;
        r.fpu.fcw = 0x37f;
        r.fpu.mxcsr = 0x1f80;
        r.fpu.xmm[15][0] = 1;
        r.xcr0 = 1;
        let text = dump(0, &r).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(lines[1], "CPU#0");
        assert_eq!(
            lines[2],
            "RAX=1122334455667788 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000"
        );
        assert_eq!(
            lines[5],
            "R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=000000000000000f"
        );
        assert_eq!(
            lines[6],
            "RIP=ffffffff81000000 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0"
        );
        assert_eq!(
            lines[7],
            "ES =0010 0000000000000000 ffffffff 00c09300 DPL=0 DS   [-WA]"
        );
        assert_eq!(
            lines[8],
            "CS =0008 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]"
        );
        assert_eq!(
            lines[10],
            "DS =0010 0000000000000000 ffffffff 00c09300 DPL=0 DS   [-WA]"
        );
        assert_eq!(lines[11], "FS =0000 0000000000000000 00000000 00000000");
        assert_eq!(lines[13], "LDT=0000 0000000000000000 00000000 00000000");
        assert_eq!(
            lines[14],
            "TR =0018 0000000000000000 00000067 00008b00 DPL=0 TSS64-busy"
        );
        assert_eq!(lines[15], "GDT=     ffff800000001000 0000007f");
        assert_eq!(
            lines[17],
            "CR0=80000011 CR2=0000000000000000 CR3=0000000000001000 CR4=00000020"
        );
        assert_eq!(lines[20], "EFER=0000000000000500");
        assert_eq!(lines.len(), 21 + 5 + 8);
        assert_eq!(
            lines[33],
            "XMM14=0000000000000000 0000000000000000 XMM15=0000000000000000 0000000000000001"
        );
    }

    /// 32-bit protected mode (as at a PVH entry): `EAX=` layout, `CS32`, 8 XMM registers.
    #[test]
    fn protected_mode_layout() {
        let mut r = VcpuRegisters::default();
        r.regs.rbx = 0x6d000;
        r.regs.rip = 0x100_0000;
        r.regs.rflags = 0x2;
        r.sregs.cs = segment(0x10, 0, 0xffff_ffff, 0xb, 0, 1, 0);
        r.sregs.ds = segment(0x18, 0, 0xffff_ffff, 0x3, 0, 1, 0);
        r.sregs.ss = segment(0x18, 0, 0xffff, 0x3, 0, 0, 0);
        r.sregs.tr = system(0xb);
        r.sregs.cr0 = 0x11;
        r.xcr0 = 1;
        let text = dump(1, &r).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "CPU#1");
        assert_eq!(
            lines[2],
            "EAX=00000000 EBX=0006d000 ECX=00000000 EDX=00000000"
        );
        assert_eq!(
            lines[4],
            "EIP=01000000 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0"
        );
        assert_eq!(
            lines[6],
            "CS =0010 00000000 ffffffff 00c09b00 DPL=0 CS32 [-RA]"
        );
        assert_eq!(
            lines[7],
            "SS =0018 00000000 0000ffff 00009300 DPL=0 DS16 [-WA]"
        );
        assert_eq!(
            lines[12],
            "TR =0018 00000000 00000067 00008b00 DPL=0 TSS32-busy"
        );
        assert_eq!(lines[13], "GDT=     00000000 00000000");
        assert_eq!(lines.len(), 28);
    }

    #[test]
    fn avx512_state_is_refused_by_name() {
        let r = VcpuRegisters {
            xcr0: 0xe7,
            ..Default::default()
        };
        assert!(dump(0, &r).unwrap_err().contains("AVX-512"));
    }
}
