//! Initial vCPU register state for the boot entries of [`super::boot`], and the local APIC
//! wiring a PC's firmware would leave behind (LINT0 = ExtINT from the 8259, LINT1 = NMI).

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::boot::{BootEntry, BOOT_GDT_ADDR, PML4_ADDR};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Boot GDT selectors.
const SELECTOR_CODE64: u16 = 0x10;
const SELECTOR_DATA: u16 = 0x18;
const SELECTOR_TSS: u16 = 0x20;
const SELECTOR_CODE32: u16 = 0x28;

/// Flat descriptors: null, null, code64, data, TSS, code32.
const BOOT_GDT: [u64; 6] = [
    0,
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
    0x00cf_9b00_0000_ffff,
];

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Loads the same descriptor into every data segment register.
fn set_data_segments(sregs: &mut kvm_sregs, data: kvm_segment) {
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
}

/// Puts the boot vCPU at `entry` with the processor mode its protocol requires.
pub fn set_boot_state(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    entry: BootEntry,
) -> Result<(), RegsError> {
    if entry == BootEntry::ResetVector {
        return set_reset_state(vcpu);
    }
    let gdt: Vec<u8> = BOOT_GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(BOOT_GDT_ADDR))?;

    let mut sregs: kvm_sregs = vcpu.get_sregs()?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (gdt.len() - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    set_data_segments(&mut sregs, segment(SELECTOR_DATA, 0x3, false));
    sregs.tr = kvm_segment {
        limit: 0x67,
        g: 0,
        s: 0,
        db: 0,
        ..segment(SELECTOR_TSS, 0xb, false)
    };
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match entry {
        BootEntry::Pvh { entry, start_info } => {
            sregs.cs = segment(SELECTOR_CODE32, 0xb, false);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        BootEntry::Linux64 { entry, zero_page } => {
            sregs.cs = segment(SELECTOR_CODE64, 0xb, true);
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = zero_page;
        }
        BootEntry::ResetVector => unreachable!("handled above"),
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    vcpu.set_fpu(&kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })?;
    Ok(())
}

/// The architectural power-on state: real mode, CS selector 0xF000 with base 0xFFFF0000,
/// IP 0xFFF0, so the first instruction is fetched at 0xFFFFFFF0 (the firmware's reset
/// vector); EDX holds the processor signature as after a hardware reset.
fn set_reset_state(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let real_mode = |selector: u16, base: u64, type_: u8| kvm_segment {
        base,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let mut sregs: kvm_sregs = vcpu.get_sregs()?;
    sregs.cs = real_mode(0xf000, 0xffff_0000, 0xb);
    set_data_segments(&mut sregs, real_mode(0, 0, 0x3));
    sregs.tr = kvm_segment {
        s: 0,
        ..real_mode(0, 0, 0xb)
    };
    sregs.ldt = kvm_segment {
        s: 0,
        ..real_mode(0, 0, 0x2)
    };
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xffff;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xffff;
    sregs.cr0 = 0x6000_0010;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&kvm_regs {
        rip: 0xfff0,
        rflags: 0x2,
        rdx: processor_signature(vcpu),
        ..Default::default()
    })?;
    vcpu.set_fpu(&kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })?;
    Ok(())
}

/// An application processor waiting for INIT/SIPI keeps KVM's power-on registers, but with
/// the processor signature in EDX as after a hardware reset (QEMU shows it there too).
pub fn set_power_on_edx(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut regs = vcpu.get_regs()?;
    regs.rdx = processor_signature(vcpu);
    vcpu.set_regs(&regs)?;
    Ok(())
}

/// CPUID leaf 1 EAX of this vCPU (family, model, stepping), which a CPU leaves in EDX
/// after reset (QEMU does the same); the generic family-6 value if KVM cannot say.
fn processor_signature(vcpu: &VcpuFd) -> u64 {
    vcpu.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .ok()
        .and_then(|cpuid| {
            cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == 1 && e.index == 0)
                .map(|e| u64::from(e.eax))
        })
        .unwrap_or(0x600)
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_delivery_mode(lapic: &mut kvm_lapic_state, reg: usize, mode: u32) {
    let bytes: [u8; 4] = lapic.regs[reg..reg + 4]
        .iter()
        .map(|&b| b as u8)
        .collect::<Vec<u8>>()
        .try_into()
        .expect("four bytes");
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (dst, src) in lapic.regs[reg..reg + 4].iter_mut().zip(value.to_le_bytes()) {
        *dst = src as _;
    }
}

/// Routes the 8259's output to LINT0 (ExtINT) and NMIs to LINT1, as SeaBIOS does.
pub fn wire_local_apic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic()?;
    set_delivery_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
    set_delivery_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("KVM refused vCPU state: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
    #[error("writing the boot GDT failed: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}
