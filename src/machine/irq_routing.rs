//! KVM's GSI routing table: the PC's fixed routes (8259 pair and IOAPIC pins) plus one MSI
//! route per MSI-X vector a device uses, and the irqfds through which devices raise those
//! vectors without a system call into the vCPU threads. KVM replaces the whole table on every
//! change, so the table lives here, in one place.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::hw::pci::msix::{MsiDelivery, MsiMessage};

/// The IOAPIC's pin count: GSIs from here on are free for MSI routes.
const FIRST_MSI_GSI: u32 = 24;
/// KVM's default limit on routing entries.
const MAX_GSI: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("no free GSI for {0} more MSI vector(s)")]
    Exhausted(u32),
    #[error("KVM: {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot create an eventfd for an MSI vector: {0}")]
    EventFd(#[source] std::io::Error),
}

struct Table {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// The VM's routing table.
pub struct GsiRouting {
    vm: Arc<VmFd>,
    table: Mutex<Table>,
}

fn irqchip_route(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip.irqchip = irqchip;
    entry.u.irqchip.pin = pin;
    entry
}

fn msi_route(gsi: u32, message: MsiMessage) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    entry.u.msi.address_lo = message.address as u32;
    entry.u.msi.address_hi = (message.address >> 32) as u32;
    entry.u.msi.data = message.data;
    entry
}

/// QEMU's KVM routing for a PC: GSIs 0-15 on the 8259 pair (2 is the cascade) and GSIs
/// 0-23 on the IOAPIC, with the PIT's GSI 0 arriving at IOAPIC pin 2 (the MADT override).
fn pc_routes() -> Vec<kvm_irq_routing_entry> {
    let mut entries = Vec::new();
    for gsi in (0..8).filter(|&g| g != 2) {
        entries.push(irqchip_route(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
    }
    for gsi in 8..16 {
        entries.push(irqchip_route(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
    }
    for gsi in (0..24).filter(|&g| g != 2) {
        let pin = if gsi == 0 { 2 } else { gsi };
        entries.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, pin));
    }
    entries
}

impl GsiRouting {
    /// Installs the PC routes.
    pub fn new(vm: Arc<VmFd>) -> Result<GsiRouting, RoutingError> {
        let routing = GsiRouting {
            vm,
            table: Mutex::new(Table {
                msi: BTreeMap::new(),
                next_gsi: FIRST_MSI_GSI,
            }),
        };
        routing.commit(&routing.table.lock().unwrap())?;
        Ok(routing)
    }

    fn commit(&self, table: &Table) -> Result<(), RoutingError> {
        let mut entries = pc_routes();
        entries.extend(table.msi.iter().map(|(&gsi, &m)| msi_route(gsi, m)));
        let routing = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| RoutingError::Exhausted(entries.len() as u32))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|source| RoutingError::Kvm {
                what: "setting the interrupt routing",
                source,
            })
    }

    /// Reserves `count` GSIs for MSI routes.
    fn allocate(&self, count: u32) -> Result<u32, RoutingError> {
        let mut table = self.table.lock().unwrap();
        let first = table.next_gsi;
        if first + count > MAX_GSI {
            return Err(RoutingError::Exhausted(count));
        }
        table.next_gsi += count;
        Ok(first)
    }

    /// Points `gsi` at `message`, or removes its route.
    fn set_msi(&self, gsi: u32, message: Option<MsiMessage>) -> Result<(), RoutingError> {
        let mut table = self.table.lock().unwrap();
        let changed = match message {
            Some(m) => table.msi.insert(gsi, m) != Some(m),
            None => table.msi.remove(&gsi).is_some(),
        };
        if changed {
            self.commit(&table)?;
        }
        Ok(())
    }
}

/// One function's MSI-X vectors, each with its own GSI and irqfd.
pub struct KvmMsiVectors {
    routing: Arc<GsiRouting>,
    first_gsi: u32,
    irqfds: Vec<EventFd>,
    /// Reports routing failures (a full KVM table): they stop the VM like other internal
    /// errors, instead of silently losing interrupts.
    on_error: Box<dyn Fn(String) + Send + Sync>,
}

impl KvmMsiVectors {
    pub fn new(
        routing: Arc<GsiRouting>,
        vectors: u16,
        on_error: Box<dyn Fn(String) + Send + Sync>,
    ) -> Result<KvmMsiVectors, RoutingError> {
        let first_gsi = routing.allocate(u32::from(vectors))?;
        let mut irqfds = Vec::with_capacity(usize::from(vectors));
        for i in 0..u32::from(vectors) {
            let fd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(RoutingError::EventFd)?;
            routing
                .vm
                .register_irqfd(&fd, first_gsi + i)
                .map_err(|source| RoutingError::Kvm {
                    what: "wiring an MSI vector",
                    source,
                })?;
            irqfds.push(fd);
        }
        Ok(KvmMsiVectors {
            routing,
            first_gsi,
            irqfds,
            on_error,
        })
    }

    /// The GSI of `vector`.
    pub fn gsi(&self, vector: u16) -> u32 {
        self.first_gsi + u32::from(vector)
    }
}

impl MsiDelivery for KvmMsiVectors {
    fn route(&self, vector: u16, message: Option<MsiMessage>) {
        if usize::from(vector) >= self.irqfds.len() {
            return;
        }
        if let Err(e) = self.routing.set_msi(self.gsi(vector), message) {
            (self.on_error)(e.to_string());
        }
    }

    fn fire(&self, vector: u16) {
        if let Some(fd) = self.irqfds.get(usize::from(vector)) {
            // A full counter still means "raise": the interrupt is pending either way.
            let _ = fd.write(1);
        }
    }
}

impl Drop for KvmMsiVectors {
    fn drop(&mut self) {
        for (i, fd) in (0u32..).zip(&self.irqfds) {
            let _ = self.routing.vm.unregister_irqfd(fd, self.first_gsi + i);
            let _ = self.routing.set_msi(self.first_gsi + i, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn msi_vectors_get_routes_and_irqfds_on_a_real_vm() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: skipped");
            return;
        };
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let routing = Arc::new(GsiRouting::new(vm).unwrap());
        let errors = Arc::new(AtomicUsize::new(0));
        let seen = errors.clone();
        let vectors = KvmMsiVectors::new(
            routing.clone(),
            4,
            Box::new(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        assert_eq!(vectors.gsi(0), FIRST_MSI_GSI);
        vectors.route(
            2,
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x41,
            }),
        );
        vectors.fire(2);
        vectors.route(2, None);
        vectors.route(99, None);
        assert_eq!(errors.load(Ordering::SeqCst), 0);
        assert_eq!(routing.table.lock().unwrap().msi.len(), 0);
        let more = KvmMsiVectors::new(routing.clone(), 2, Box::new(|_| {})).unwrap();
        assert_eq!(more.gsi(0), FIRST_MSI_GSI + 4);
        assert!(matches!(
            KvmMsiVectors::new(routing, 2000, Box::new(|_| {})),
            Err(RoutingError::Exhausted(2000))
        ));
    }
}
