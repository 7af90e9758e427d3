//! The vCPU threads: each runs `KVM_RUN` in a loop, dispatches port and MMIO exits to the
//! device buses, and reports what the main loop must act on (poweroff, reset, failures).

use std::sync::Arc;

use kvm_bindings::{
    kvm_lapic_state, kvm_mp_state, kvm_run, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::gate::GateDecision;
use super::regs;
use super::{MachineEvent, Shared};

/// One vCPU and what it needs to return to its power-on state.
pub struct Vcpu {
    pub index: u32,
    pub fd: VcpuFd,
    /// The local APIC as KVM created it, LINT pins already wired; restored on every reset.
    pub initial_lapic: kvm_lapic_state,
}

impl Vcpu {
    fn is_boot_cpu(&self) -> bool {
        self.index == 0
    }

    /// Puts the vCPU back into its power-on state: the boot vCPU at the kernel entry, the
    /// others waiting for INIT/SIPI.
    fn reset(&self, shared: &Shared) -> Result<(), regs::RegsError> {
        self.fd.set_lapic(&self.initial_lapic)?;
        if self.is_boot_cpu() {
            let entry = *shared.boot_entry.lock().unwrap();
            regs::set_boot_state(&self.fd, &shared.memory, entry)?;
            self.fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })?;
        } else {
            self.fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_UNINITIALIZED,
            })?;
        }
        Ok(())
    }
}

/// The body of a vCPU thread.
pub fn run(mut vcpu: Vcpu, shared: Arc<Shared>) {
    shared.gate.register_current_vcpu(vcpu.fd.get_kvm_run());
    // Read after a port exit for the access width, which the exit's data slice does not carry.
    let run_area: *const kvm_run = vcpu.fd.get_kvm_run();
    let mut applied_reset = 0u64;
    loop {
        match shared.gate.pass(&mut applied_reset) {
            GateDecision::Exit => return,
            GateDecision::ResetThenRun => {
                if let Err(e) = vcpu.reset(&shared) {
                    report_failure(&shared, vcpu.index, format!("vCPU reset failed: {e}"));
                    continue;
                }
            }
            GateDecision::Run => {}
        }
        let exit = vcpu.fd.run();
        match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                // SAFETY: `run_area` is this vCPU's kvm_run mapping, alive as long as the fd;
                // KVM filled its `io` member for this exit, and `data` borrows only the bytes
                // at `io.data_offset`, not the header read here.
                let width = unsafe { (*run_area).__bindgen_anon_1.io.size };
                for access in port_accesses_mut(data, width) {
                    shared.pio.read(port, access);
                }
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                // SAFETY: as for IoIn.
                let width = unsafe { (*run_area).__bindgen_anon_1.io.size };
                for access in port_accesses(data, width) {
                    shared.pio.write(port, access);
                }
            }
            // Unassigned addresses read as zeroes and drop writes, as on QEMU.
            Ok(VcpuExit::MmioRead(addr, data)) => shared.mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => shared.mmio.write(addr, data),
            // A triple fault resets a PC.
            Ok(VcpuExit::Shutdown) => shared.events.send(MachineEvent::Reset),
            Ok(VcpuExit::Hlt) => {}
            Ok(VcpuExit::InternalError) => {
                let suberror = vcpu.fd.get_kvm_run();
                // SAFETY: KVM filled the `internal` member of the exit union for this exit.
                let suberror = unsafe { suberror.__bindgen_anon_1.internal.suberror };
                let detail = describe_internal_error(&vcpu.fd, suberror);
                report_failure(&shared, vcpu.index, detail);
            }
            Ok(VcpuExit::FailEntry(reason, _)) => report_failure(
                &shared,
                vcpu.index,
                format!("KVM: entry failed, hardware error {reason:#x}"),
            ),
            Ok(other) => report_failure(
                &shared,
                vcpu.index,
                format!("KVM: unexpected exit {other:?}"),
            ),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => report_failure(&shared, vcpu.index, format!("KVM_RUN failed: {e}")),
        }
        // A reset or poweroff this vCPU asked for (a port write, a triple fault) stops it
        // before it runs further guest code, as a CPU stops on QEMU.
        if super::take_stop_request() {
            shared.gate.wait_for_stop(applied_reset);
        }
    }
}

/// Stops this vCPU from running until the main loop has paused the VM for the failure.
fn report_failure(shared: &Shared, vcpu: u32, detail: String) {
    shared
        .events
        .send(MachineEvent::InternalError { vcpu, detail });
    shared.gate.wait_until_closed();
}

/// QEMU's wording for an internal error, with the registers a developer needs to locate it.
fn describe_internal_error(fd: &VcpuFd, suberror: u32) -> String {
    let mut text = format!("KVM internal error. Suberror: {suberror}");
    if suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
        text.push_str("\nemulation failure");
    }
    if let (Ok(r), Ok(s)) = (fd.get_regs(), fd.get_sregs()) {
        text.push_str(&format!(
            "\nRAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\nRSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}\nRIP={:016x} RFL={:08x} CS={:04x} CR0={:08x} CR3={:016x} CR4={:08x} EFER={:016x}",
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.rip, r.rflags,
            s.cs.selector, s.cr0, s.cr3, s.cr4, s.efer
        ));
    }
    text
}

/// The accesses of one port exit: string I/O (`rep insw`) comes as `count` accesses of
/// `width` bytes in one buffer, and each device sees them one at a time, as on hardware.
fn port_accesses(data: &[u8], width: u8) -> std::slice::Chunks<'_, u8> {
    data.chunks(usize::from(width.max(1)))
}

/// [`port_accesses`] for reads.
fn port_accesses_mut(data: &mut [u8], width: u8) -> std::slice::ChunksMut<'_, u8> {
    data.chunks_mut(usize::from(width.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_io_is_split_into_accesses_of_the_exit_width() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let words: Vec<&[u8]> = port_accesses(&data, 2).collect();
        assert_eq!(words, [&[1, 2][..], &[3, 4], &[5, 6], &[7, 8]]);
        assert_eq!(port_accesses(&data, 4).count(), 2);
        assert_eq!(port_accesses(&data[..1], 1).count(), 1);
        let mut buffer = [0u8; 8];
        for (i, access) in port_accesses_mut(&mut buffer, 4).enumerate() {
            access.fill(i as u8 + 1);
        }
        assert_eq!(buffer, [1, 1, 1, 1, 2, 2, 2, 2]);
    }
}
