//! The `pc` machine describing itself by QEMU's names, for `info qtree` and `info mtree`:
//! the device tree from the system bus down, and the memory regions of the system memory
//! and I/O address spaces. Everything listed is something this machine wires; values that
//! change at run time (PCI BARs, PAM, the PM block, bus mastering) are read from the
//! devices' configuration space as it is now.
//!
//! The interrupt controllers and the PIT are KVM's in-kernel models, which QEMU calls
//! `kvm-ioapic`, `kvm-i8259` and `kvm-pit` when it uses them too.

use std::sync::Arc;

use super::Machine;
use crate::config::DebugconConfig;
use crate::hw::describe::{
    pci_device, MemoryMap, PortRegion, QdevBus, QdevDevice, QdevProp, RegionId, RegionKind,
    WHOLE_64BIT_SPACE,
};
use crate::hw::ide::PiixIde;
use crate::hw::pc::i440fx;
use crate::hw::pc::pam::{self, PamAccess, PAM_FIRST_REGISTER};
use crate::hw::pc::rtc::Rtc;
use crate::hw::pci::devfn;

/// What the description needs beyond the machine's own fields, kept at creation.
pub(super) struct DescribeFacts {
    /// Size of the BIOS ROM below 4 GiB; `None` for direct kernel boot (no ROM mapped).
    pub bios_size: Option<u64>,
    pub debugcons: Vec<DebugconConfig>,
    pub cpus: u32,
    pub ide: Arc<PiixIde>,
    pub rtc: Arc<Rtc>,
}

/// Where the chipset's functions sit on bus 0 (the machine wires buses behind two of them,
/// and reads the host bridge's PAM and the PM function's base).
const I440FX_DEVFN: u8 = devfn(0, 0);
const PIIX3_DEVFN: u8 = devfn(1, 0);
const IDE_DEVFN: u8 = devfn(1, 1);
const PIIX4_PM_DEVFN: u8 = devfn(1, 3);

/// What `info qtree` calls a PCI function that does not describe itself.
const UNDESCRIBED_PCI_TYPE: &str = "vmscope-undescribed-pci-function";

/// The PCI command register's bus-master enable.
const COMMAND_BUS_MASTER: u32 = 1 << 2;

/// PIIX4 PM registers: the PM base (PMBA) and its enable (PMREGMISC bit 0).
const PMBA: u8 = 0x40;
const PMREGMISC: u8 = 0x80;
const PM_BLOCK_LEN: u128 = 0x40;

/// Where the in-kernel devices answer (the I/O APIC, the MSI window).
const IOAPIC_BASE: u64 = 0xfec0_0000;
const IOAPIC_SIZE: u128 = 0x1000;
const MSI_WINDOW_BASE: u64 = 0xfee0_0000;
const MSI_WINDOW_SIZE: u128 = 0x10_0000;
/// Above the PCI and RAM regions, as QEMU's APIC MSI region is.
const MSI_WINDOW_PRIORITY: i32 = 4096;

/// The legacy VGA window that i440FX routes to PCI while SMRAM is closed.
const SMRAM_WINDOW: u64 = 0xa0000;
const SMRAM_WINDOW_SIZE: u128 = 0x20000;
/// The most of the BIOS ROM visible below 1 MiB.
const ISA_BIOS_MAX: u64 = 128 << 10;
const FOUR_GIB: u64 = 1 << 32;

impl Machine {
    /// A dword of the configuration space of function `devfn` on bus 0.
    fn config_dword(&self, devfn: u8, offset: u8) -> u32 {
        self.chipset.pci.read(0, devfn, offset)
    }

    /// The device tree as QEMU's `info qtree` lists it, newest device first on each bus.
    pub fn qtree(&self) -> QdevBus {
        let facts = &self.describe;
        let mut isa = Vec::new();
        for debugcon in facts.debugcons.iter().rev() {
            // `-debugcon` is the only way vmscope takes one; QEMU names that device and its
            // chardev `debugcon`.
            isa.push(crate::hw::pc::debugcon::qdev(
                "debugcon",
                debugcon.iobase,
                &debugcon.chardev,
            ));
        }
        isa.push(self.chipset.port92.qdev());
        isa.push(self.i8042.qdev());
        isa.push(crate::hw::serial::com1_qdev());
        // KVM's PIT re-injects lost ticks (vmscope leaves KVM's default on): QEMU's `delay`.
        isa.push(
            QdevDevice::new("kvm-pit")
                .gpio_in("", 1)
                .prop(QdevProp::uint("iobase", 0x40))
                .prop(QdevProp::string("lost_tick_policy", "delay")),
        );
        isa.push(facts.rtc.qdev());
        // KVM's PICs, slave first (created last); the ELCR masks are the ones KVM applies.
        for (iobase, elcr, mask, master) in [(0xa0, 0x4d1, 0xde, false), (0x20, 0x4d0, 0xf8, true)]
        {
            isa.push(
                QdevDevice::new("kvm-i8259")
                    .prop(QdevProp::uint("iobase", iobase))
                    .prop(QdevProp::uint("elcr_addr", elcr))
                    .prop(QdevProp::uint("elcr_mask", mask))
                    .prop(QdevProp::bool("master", master)),
            );
        }

        // Every function on bus 0 describes itself, newest (highest devfn here) first; the
        // machine adds the buses it wires behind them (ISA behind PIIX3, IDE's two).
        let mut isa = Some(isa);
        let mut pci_devices = Vec::new();
        for (devfn, function) in self.chipset.pci.functions().rev() {
            let config = |offset: u8| self.config_dword(devfn, offset);
            let mut device = match function.describe() {
                Some(description) => {
                    let mut device = pci_device(
                        description.type_name,
                        devfn,
                        &config,
                        description.props,
                        &description.bars,
                    );
                    device.gpios = description.gpios;
                    device
                }
                // Visible rather than silently left out.
                None => pci_device(UNDESCRIBED_PCI_TYPE, devfn, &config, Vec::new(), &[]),
            };
            if devfn == PIIX3_DEVFN {
                if let Some(devices) = isa.take() {
                    device.buses.push(QdevBus {
                        name: "isa.0".into(),
                        bus_type: "ISA",
                        devices,
                    });
                }
            }
            if devfn == IDE_DEVFN {
                device.buses = facts.ide.qdev_buses(&self.drives);
            }
            pci_devices.push(device);
        }
        let mut host = QdevDevice::new(i440fx::QEMU_HOST_TYPE);
        host.props = i440fx::host_qdev_props();
        let host = host.bus(QdevBus {
            name: "pci.0".into(),
            bus_type: "PCI",
            devices: pci_devices,
        });
        let ioapic = QdevDevice::new("kvm-ioapic")
            .gpio_in("", 24)
            .prop(QdevProp::uint("gsi_base", 0))
            .bus_line(format!(
                "mmio {IOAPIC_BASE:016x}/{:016x}",
                IOAPIC_SIZE as u64
            ));
        QdevBus {
            name: "main-system-bus".into(),
            bus_type: "System",
            devices: vec![
                QdevDevice::new("ps2-mouse").gpio_out("", 1),
                QdevDevice::new("ps2-kbd").gpio_out("", 1),
                ioapic,
                host,
                crate::hw::pc::fw_cfg::qdev(),
            ],
        }
    }

    /// The memory regions and address spaces as QEMU's `info mtree` lists them.
    pub fn mtree(&self) -> MemoryMap {
        let mut map = MemoryMap::default();
        let system = map.region("system", WHOLE_64BIT_SPACE, RegionKind::Io, 0);
        let io = map.region("io", 0x10000, RegionKind::Io, 0);
        self.describe_memory(&mut map, system);
        self.describe_io(&mut map, io);
        // Each PCI function's bus-master view of system memory, enabled once the guest sets
        // the bus-master bit of a function that does DMA at all.
        let mut bus_masters = Vec::new();
        for (devfn, function) in self.chipset.pci.functions() {
            let description = function.describe();
            let container =
                map.region("bus master container", WHOLE_64BIT_SPACE, RegionKind::Io, 0);
            let view = map.alias("bus master", system, 0, WHOLE_64BIT_SPACE, 0);
            let masters = description.as_ref().is_some_and(|d| d.bus_master);
            let command = self.config_dword(devfn, 0x04);
            map.set_enabled(view, masters && command & COMMAND_BUS_MASTER != 0);
            map.add_subregion(container, 0, view);
            let name = description.map_or(UNDESCRIBED_PCI_TYPE, |d| d.type_name);
            bus_masters.push((name, container));
        }
        // One of QEMU's (run-dependent) orders of the groups: the functions, the I/O space
        // before the last of them, then system memory.
        let last = bus_masters.pop();
        for (name, root) in bus_masters {
            map.add_address_space(name, root);
        }
        map.add_address_space("I/O", io);
        if let Some((name, root)) = last {
            map.add_address_space(name, root);
        }
        for cpu in 0..self.describe.cpus {
            map.add_address_space(&format!("cpu-memory-{cpu}"), system);
        }
        map.add_address_space("memory", system);
        map
    }

    fn describe_memory(&self, map: &mut MemoryMap, system: RegionId) {
        let split = &self.split;
        let ram = map.region(
            "pc.ram",
            u128::from(split.below_4g + split.above_4g),
            RegionKind::Ram,
            0,
        );
        let below = map.alias("ram-below-4g", ram, 0, u128::from(split.below_4g), 0);
        map.add_subregion(system, 0, below);
        if split.above_4g > 0 {
            let above = map.alias(
                "ram-above-4g",
                ram,
                split.below_4g,
                u128::from(split.above_4g),
                0,
            );
            map.add_subregion(system, FOUR_GIB, above);
        }
        let pci = map.region("pci", WHOLE_64BIT_SPACE, RegionKind::Io, -1);
        map.add_subregion(system, 0, pci);
        if let Some(size) = self.describe.bios_size {
            let bios = map.region("pc.bios", u128::from(size), RegionKind::Rom, 0);
            let isa_size = size.min(ISA_BIOS_MAX);
            let isa_bios = map.alias("isa-bios", bios, size - isa_size, u128::from(isa_size), 1);
            map.add_subregion(pci, 0x100000 - isa_size, isa_bios);
            map.add_subregion(pci, FOUR_GIB - size, bios);
        }
        let smram = map.alias("smram-region", pci, SMRAM_WINDOW, SMRAM_WINDOW_SIZE, 1);
        map.add_subregion(system, SMRAM_WINDOW, smram);
        // PAM: four views of each segment, one enabled, as the i440FX registers select.
        let registers: Vec<u8> = (0..pam::PAM_REGISTER_COUNT)
            .map(|i| {
                let offset = PAM_FIRST_REGISTER + i;
                (self.config_dword(I440FX_DEVFN, (offset & !3) as u8) >> (8 * (offset & 3))) as u8
            })
            .collect();
        let registers: [u8; pam::PAM_REGISTER_COUNT] =
            registers.try_into().expect("seven PAM registers");
        let access = pam::decode(&registers);
        for (segment, access) in pam::segments().iter().zip(access) {
            let size = u128::from(segment.len);
            // QEMU creates them in this order; vmscope decodes write-only as PCI, so that
            // view (QEMU's `pam-pci` on RAM) is never the enabled one here.
            let views = [
                (
                    map.alias("pam-pci", pci, segment.start, size, 1),
                    PamAccess::Pci,
                ),
                (
                    map.alias("pam-rom", ram, segment.start, size, 1),
                    PamAccess::ReadOnlyRam,
                ),
                (
                    map.alias("pam-pci", ram, segment.start, size, 1),
                    PamAccess::Pci,
                ),
                (
                    map.alias("pam-ram", ram, segment.start, size, 1),
                    PamAccess::Ram,
                ),
            ];
            for (i, (view, selects)) in views.into_iter().enumerate() {
                map.set_enabled(view, i != 2 && selects == access);
                map.add_subregion(system, segment.start, view);
            }
        }
        let ioapic = map.region("kvm-ioapic", IOAPIC_SIZE, RegionKind::Io, 0);
        map.add_subregion(system, IOAPIC_BASE, ioapic);
        let msi = map.region(
            "kvm-apic-msi",
            MSI_WINDOW_SIZE,
            RegionKind::Io,
            MSI_WINDOW_PRIORITY,
        );
        map.add_subregion(system, MSI_WINDOW_BASE, msi);
    }

    fn describe_io(&self, map: &mut MemoryMap, io: RegionId) {
        // The PIIX4 PM block, where PMBA points once PMREGMISC enables it.
        let pmba = self.config_dword(PIIX4_PM_DEVFN, PMBA) & 0xffc0;
        let pm_enabled = self.config_dword(PIIX4_PM_DEVFN, PMREGMISC) & 1 != 0;
        let pm = map.region("piix4-pm", PM_BLOCK_LEN, RegionKind::Io, 0);
        map.add_port_regions(pm, &crate::hw::pm::pm_block_io_regions());
        map.set_enabled(pm, pm_enabled);
        map.add_subregion(io, if pm_enabled { u64::from(pmba) } else { 0 }, pm);

        // KVM's in-kernel PIC (with its edge/level registers) and PIT.
        map.add_port_regions(
            io,
            &[
                PortRegion::new("kvm-pic", 0x20, 2),
                PortRegion::new("kvm-pit", 0x40, 4),
                PortRegion::new("kvm-pic", 0xa0, 2),
                PortRegion::new("kvm-elcr", 0x4d0, 1),
                PortRegion::new("kvm-elcr", 0x4d1, 1),
            ],
        );
        map.add_port_regions(io, &crate::hw::i8042::io_regions());
        map.add_port_regions(io, &crate::hw::pc::rtc::io_regions());
        map.add_port_regions(io, &crate::hw::pc::port92::io_regions());
        map.add_port_regions(io, &crate::hw::pc::apm::io_regions());
        for debugcon in &self.describe.debugcons {
            map.add_port_regions(io, &crate::hw::pc::debugcon::io_regions(debugcon.iobase));
        }
        map.add_port_regions(io, &self.describe.ide.io_regions());
        map.add_port_regions(io, &crate::hw::serial::com1_io_regions());
        map.add_port_regions(io, &crate::hw::pc::fw_cfg::io_regions());
        map.add_port_regions(io, &crate::hw::pci::host::io_regions());
        map.add_port_regions(io, &crate::hw::pm::gpe0_io_regions());
    }
}
