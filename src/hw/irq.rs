//! Interrupt lines with level semantics, as QEMU's `qemu_set_irq`: a device drives its line
//! high while it wants service and low when the guest acknowledged it. Behind a trait so
//! device models are tested without KVM.

use std::sync::Arc;

use kvm_ioctls::VmFd;

/// One interrupt input of the interrupt controllers.
pub trait InterruptLine: Send + Sync {
    fn set_level(&self, high: bool);
}

/// An ISA IRQ / GSI of KVM's in-kernel PIC and IOAPIC (`KVM_IRQ_LINE`).
pub struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl KvmIrqLine {
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> KvmIrqLine {
        KvmIrqLine { vm, gsi }
    }
}

impl InterruptLine for KvmIrqLine {
    fn set_level(&self, high: bool) {
        // Fails only for a GSI without routing, which the machine never hands out.
        let _ = self.vm.set_irq_line(self.gsi, high);
    }
}

/// A line nobody listens to (devices whose interrupt is not wired, tests).
pub struct UnconnectedLine;

impl InterruptLine for UnconnectedLine {
    fn set_level(&self, _high: bool) {}
}
