//! Reading a vCPU's registers for the monitor (`info registers`) without the vCPU thread:
//! each vCPU fd is duplicated at creation into a second `VcpuFd` used only for these
//! reads. KVM serialises ioctls on one vCPU, and the VM is held at the vCPU gate during
//! the read, so the values are those of a stopped CPU, as on QEMU.

use std::os::fd::AsRawFd;

use kvm_bindings::KVM_MP_STATE_HALTED;
use kvm_ioctls::{VcpuFd, VmFd};

use super::{kvm_err, Machine, MachineError};
use crate::monitor::VcpuRegisters;

/// Byte offsets in the XSAVE legacy area: ST0-7 and XMM0-15, 16 bytes each.
const XSAVE_ST_OFFSET: usize = 32;
const XSAVE_XMM_OFFSET: usize = 160;
/// Byte offset of the YMM upper halves (`YMM_Hi128`) in the standard XSAVE layout.
const XSAVE_YMM_HI128_OFFSET: usize = 576;
const XCR0_YMM: u64 = 1 << 2;

/// A second handle on `vcpu` for reads from other threads.
pub(super) fn inspector(vm: &VmFd, vcpu: &VcpuFd) -> Result<VcpuFd, MachineError> {
    // SAFETY: dup of an open fd we own; the result is checked below.
    let dup = unsafe { libc::dup(vcpu.as_raw_fd()) };
    if dup < 0 {
        return Err(MachineError::Kvm {
            what: "duplicating a vCPU fd",
            source: kvm_ioctls::Error::last(),
        });
    }
    // SAFETY: `dup` is a valid vCPU fd of `vm`, and ownership passes to the VcpuFd.
    unsafe { vm.create_vcpu_from_rawfd(dup) }.map_err(kvm_err("mapping a vCPU"))
}

fn read(fd: &VcpuFd) -> Result<VcpuRegisters, MachineError> {
    let xcr0 = fd
        .get_xcrs()
        .ok()
        .and_then(|xcrs| {
            xcrs.xcrs[..(xcrs.nr_xcrs as usize).min(xcrs.xcrs.len())]
                .iter()
                .find(|x| x.xcr == 0)
                .map(|x| x.value)
        })
        // Without XCR support the guest cannot change XCR0 from its reset value.
        .unwrap_or(1);
    // QEMU reads the FPU/SSE state through XSAVE when KVM offers it; so does this, with
    // KVM_GET_FPU as the fallback.
    let xsave: Option<Vec<u8>> = fd
        .get_xsave()
        .ok()
        .map(|x| x.region.iter().flat_map(|w| w.to_le_bytes()).collect());
    let mut fpu = fd.get_fpu().map_err(kvm_err("reading FPU state"))?;
    if let Some(bytes) = &xsave {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        fpu.fcw = u16_at(0);
        fpu.fsw = u16_at(2);
        fpu.ftwx = bytes[4];
        fpu.mxcsr = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
        for (i, reg) in fpu.fpr.iter_mut().enumerate() {
            reg.copy_from_slice(&bytes[XSAVE_ST_OFFSET + i * 16..XSAVE_ST_OFFSET + i * 16 + 16]);
        }
        for (i, reg) in fpu.xmm.iter_mut().enumerate() {
            reg.copy_from_slice(&bytes[XSAVE_XMM_OFFSET + i * 16..XSAVE_XMM_OFFSET + i * 16 + 16]);
        }
    }
    let ymm_high = match &xsave {
        Some(bytes) if xcr0 & XCR0_YMM != 0 => {
            let mut high = [[0u8; 16]; 16];
            for (i, reg) in high.iter_mut().enumerate() {
                let at = XSAVE_YMM_HI128_OFFSET + i * 16;
                reg.copy_from_slice(&bytes[at..at + 16]);
            }
            Some(high)
        }
        _ => None,
    };
    Ok(VcpuRegisters {
        regs: fd.get_regs().map_err(kvm_err("reading registers"))?,
        sregs: fd
            .get_sregs()
            .map_err(kvm_err("reading special registers"))?,
        fpu,
        debugregs: fd
            .get_debug_regs()
            .map_err(kvm_err("reading debug registers"))?,
        events: fd
            .get_vcpu_events()
            .map_err(kvm_err("reading vCPU events"))?,
        halted: fd
            .get_mp_state()
            .map_err(kvm_err("reading the MP state"))?
            .mp_state
            == KVM_MP_STATE_HALTED,
        xcr0,
        ymm_high,
    })
}

impl Machine {
    /// The registers of vCPU `index`. A running VM is held at the vCPU gate for the read
    /// and released right after (no run-state change, no event).
    pub fn vcpu_registers(&self, index: u32) -> Result<VcpuRegisters, MachineError> {
        let fd = self
            .inspectors
            .get(index as usize)
            .ok_or(MachineError::NoSuchVcpu(index))?;
        // Holding the run-state lock keeps `stop`/`cont` out while the gate is borrowed.
        let _state = self.run_state.lock().unwrap();
        let hold = self.shared.gate.is_open();
        if hold {
            self.shared.gate.close();
        }
        let result = read(fd);
        if hold {
            self.shared.gate.open();
        }
        result
    }
}
