//! The PIIX3 IDE PCI function (00:01.1) with QEMU 7.2's identity: Intel 8086:7010, class
//! 01.01 programming interface 0x80 (both channels in legacy mode, bus mastering), no
//! interrupt pin (the channels use ISA IRQs 14 and 15), and the 16-byte bus-master window
//! in BAR4 that firmware places.

use std::sync::{Arc, Mutex, OnceLock};

use vm_memory::GuestMemoryMmap;

use super::channel::{AttachError, Attachment, Channel, Disk};
use super::identify::default_serial;
use super::packet::PacketDevice;
use super::{
    COMMAND_BLOCK_LEN, PRIMARY_COMMAND_BASE, PRIMARY_CONTROL_PORT, SECONDARY_COMMAND_BASE,
    SECONDARY_CONTROL_PORT,
};
use crate::block::drive::{Drive, DriveKind, DriveSet};
use crate::hw::bus::{PioBus, PioDevice, PortConflict};
use crate::hw::irq::InterruptLine;
use crate::hw::pc::{INTEL_VENDOR, QEMU_SUBSYSTEM, QEMU_SUBSYSTEM_VENDOR};
use crate::hw::pci::bar::{Bar, BarKind, IoBarWindow};
use crate::hw::pci::config::{ConfigSpace, Identity, COMMAND, STATUS};
use crate::hw::pci::{IoSpace, PciFunction};

pub const PIIX3_IDE_DEVICE_ID: u16 = 0x7010;
/// Mass storage, IDE, legacy mode on both channels with bus-master support.
const CLASS_IDE_LEGACY: u32 = 0x01_01_80;
const BUS_MASTER_BAR: Bar = Bar {
    index: 4,
    kind: BarKind::Io,
    size: 16,
};
/// QEMU's reset value of the status register: fast back-to-back, medium DEVSEL.
const RESET_STATUS: u16 = 0x0280;

/// Makes the ATAPI device model for a CD-ROM drive (the channel only knows the trait).
pub type CdromFactory<'a> = &'a dyn Fn(Arc<Drive>) -> Result<Box<dyn PacketDevice>, AttachError>;

/// A drive that cannot be attached, with its name.
#[derive(Debug, thiserror::Error)]
#[error("{drive}: {source}")]
pub struct IdeAttachError {
    pub drive: String,
    #[source]
    pub source: AttachError,
}

/// The IDE function and its two channels.
pub struct PiixIde {
    config: Mutex<ConfigSpace>,
    channels: [Arc<Channel>; 2],
    /// Set once the chipset's I/O space exists ([`PiixIde::attach_io_space`]).
    bus_master_window: OnceLock<IoBarWindow>,
}

impl PiixIde {
    /// The controller with `channels` (primary, secondary).
    pub fn new(channels: [Arc<Channel>; 2]) -> PiixIde {
        let mut config = ConfigSpace::new(Identity {
            vendor: INTEL_VENDOR,
            device: PIIX3_IDE_DEVICE_ID,
            revision: 0,
            class: CLASS_IDE_LEGACY,
            subsystem_vendor: QEMU_SUBSYSTEM_VENDOR,
            subsystem: QEMU_SUBSYSTEM,
            header_type: 0,
        });
        config.set_u16(STATUS, RESET_STATUS);
        BUS_MASTER_BAR
            .declare(&mut config)
            .expect("a valid fixed BAR");
        PiixIde {
            config: Mutex::new(config),
            channels,
            bus_master_window: OnceLock::new(),
        }
    }

    /// Maps the bus-master registers into `io_space` wherever firmware puts BAR4 from now
    /// on (the chipset creates the space, after the functions on its bus).
    pub fn attach_io_space(&self, io_space: Arc<IoSpace>) {
        let window = self.bus_master_window.get_or_init(|| {
            IoBarWindow::new(
                BUS_MASTER_BAR,
                io_space,
                Arc::new(BusMasterPorts(self.channels.clone())),
            )
        });
        window.update(&self.config.lock().unwrap());
    }

    fn update_window(&self, config: &ConfigSpace) {
        if let Some(window) = self.bus_master_window.get() {
            window.update(config);
        }
    }

    /// Builds both channels from the VM's drives at IDE positions: disks become ATA hard
    /// disks, CD-ROM drives ATAPI devices made by `cdrom`. `irqs` are the primary and
    /// secondary channels' lines.
    pub fn from_drives(
        drives: &DriveSet,
        irqs: [Arc<dyn InterruptLine>; 2],
        memory: &GuestMemoryMmap,
        cdrom: CdromFactory<'_>,
    ) -> Result<PiixIde, IdeAttachError> {
        let [irq0, irq1] = irqs;
        let mut channels = Vec::new();
        for (bus, irq) in [(0u32, irq0), (1, irq1)] {
            let mut devices = Vec::new();
            for unit in 0..2u32 {
                let attachment = match drives.ide(bus, unit) {
                    None => Attachment::Empty,
                    Some(drive) => match drive.kind() {
                        DriveKind::Disk => {
                            Attachment::Disk(Disk::new(drive.clone()).map_err(|source| {
                                IdeAttachError {
                                    drive: drive.id().to_string(),
                                    source,
                                }
                            })?)
                        }
                        DriveKind::Cdrom => {
                            Attachment::Cdrom(cdrom(drive.clone()).map_err(|source| {
                                IdeAttachError {
                                    drive: drive.id().to_string(),
                                    source,
                                }
                            })?)
                        }
                    },
                };
                devices.push((attachment, default_serial(bus, unit)));
            }
            let [master, slave]: [(Attachment, String); 2] =
                devices.try_into().map_err(|_| ()).expect("two units");
            channels.push(Arc::new(Channel::new([master, slave], irq, memory.clone())));
        }
        let [primary, secondary]: [Arc<Channel>; 2] =
            channels.try_into().map_err(|_| ()).expect("two channels");
        Ok(PiixIde::new([primary, secondary]))
    }

    /// Registers the legacy command and control blocks of both channels.
    pub fn register_legacy_ports(&self, pio: &mut PioBus) -> Result<(), PortConflict> {
        let layout = [
            (PRIMARY_COMMAND_BASE, PRIMARY_CONTROL_PORT),
            (SECONDARY_COMMAND_BASE, SECONDARY_CONTROL_PORT),
        ];
        for (channel, (command, control)) in self.channels.iter().zip(layout) {
            pio.register(
                command,
                COMMAND_BLOCK_LEN,
                Arc::new(CommandBlockPorts(channel.clone())),
            )?;
            pio.register(control, 1, Arc::new(ControlPort(channel.clone())))?;
        }
        Ok(())
    }

    pub fn channel(&self, index: usize) -> &Arc<Channel> {
        &self.channels[index & 1]
    }

    /// What the board writes into CMOS about the disks (QEMU's `pc_cmos_init_late`).
    pub fn cmos_bytes(&self) -> Vec<(u8, u8)> {
        let [a, b] = self.channels[0].disk_geometries();
        let [c, d] = self.channels[1].disk_geometries();
        super::cmos::cmos_bytes(&[a, b, c, d])
    }

    /// Where the bus-master registers answer now, if firmware enabled them.
    pub fn bus_master_base(&self) -> Option<u16> {
        self.bus_master_window.get().and_then(IoBarWindow::base)
    }
}

impl PiixIde {
    /// The legacy command and control blocks under QEMU's region name (`ide`), and, while
    /// firmware has BAR4 mapped, the bus-master block (QEMU's `piix-bmdma-container` with
    /// each channel's `piix-bmdma` and `bmdma` halves, at BAR priority 1).
    pub fn io_regions(&self) -> Vec<crate::hw::describe::PortRegion> {
        use crate::hw::describe::PortRegion;
        let mut regions = Vec::new();
        for (command, control) in [
            (PRIMARY_COMMAND_BASE, PRIMARY_CONTROL_PORT),
            (SECONDARY_COMMAND_BASE, SECONDARY_CONTROL_PORT),
        ] {
            regions.push(PortRegion::new("ide", command, COMMAND_BLOCK_LEN));
            regions.push(PortRegion::new("ide", control, 1));
        }
        if let Some(base) = self.bus_master_base() {
            let mut container = PortRegion::new("piix-bmdma-container", base, 16).with_priority(1);
            for channel in 0..2u16 {
                container = container
                    .with_child(PortRegion::new("piix-bmdma", channel * 8, 4))
                    .with_child(PortRegion::new("bmdma", channel * 8 + 4, 4));
            }
            regions.push(container);
        }
        regions
    }

    /// The two IDE buses as QEMU's `info qtree` shows them (`ide.1` first), each with its
    /// hard disks: the drive names come from `drives`, geometry and translation from the
    /// attached disks, serial numbers as QEMU assigns them.
    pub fn qdev_buses(&self, drives: &DriveSet) -> Vec<crate::hw::describe::QdevBus> {
        use super::geometry::Translation;
        use crate::hw::describe::{QdevBus, QdevDevice, QdevProp};
        let mut buses = Vec::new();
        for bus in [1u32, 0] {
            let geometries = self.channels[bus as usize].disk_geometries();
            let mut devices = Vec::new();
            // QEMU lists a bus's newest device first: the slave, created after the master.
            for unit in [1u32, 0] {
                let (Some(drive), Some((geometry, translation))) =
                    (drives.ide(bus, unit), geometries[unit as usize])
                else {
                    continue;
                };
                let translation = match translation {
                    Translation::None => "none",
                    Translation::Lba => "lba",
                    Translation::Large => "large",
                };
                let size = |name, value| QdevProp::size(name, value);
                let mut device = QdevDevice::new("ide-hd")
                    .prop(QdevProp::string("drive", drive.id()))
                    .prop(QdevProp::string("backend_defaults", "auto"))
                    .prop(size("logical_block_size", 512))
                    .prop(size("physical_block_size", 512))
                    .prop(size("min_io_size", 0))
                    .prop(size("opt_io_size", 0))
                    .prop(size("discard_granularity", 512));
                for prop in [
                    QdevProp::string("write-cache", "auto"),
                    QdevProp::bool("share-rw", false),
                    QdevProp::string("account-invalid", "auto"),
                    QdevProp::string("account-failed", "auto"),
                    QdevProp::string("rerror", "auto"),
                    QdevProp::string("werror", "auto"),
                    QdevProp::string("ver", "2.5+"),
                    QdevProp::uint("wwn", 0),
                    QdevProp::string("serial", &default_serial(bus, unit)),
                    QdevProp::string("model", ""),
                    QdevProp::uint("cyls", u64::from(geometry.cylinders)),
                    QdevProp::uint("heads", u64::from(geometry.heads)),
                    QdevProp::uint("secs", u64::from(geometry.sectors)),
                    QdevProp::uint("lcyls", 0),
                    QdevProp::uint("lheads", 0),
                    QdevProp::uint("lsecs", 0),
                    QdevProp::string("bios-chs-trans", translation),
                    QdevProp::uint("rotation_rate", 0),
                    QdevProp::uint("unit", u64::from(unit)),
                ] {
                    device = device.prop(prop);
                }
                devices.push(device);
            }
            buses.push(QdevBus {
                name: format!("ide.{bus}"),
                bus_type: "IDE",
                devices,
            });
        }
        buses
    }
}

impl PciFunction for PiixIde {
    fn describe(&self) -> Option<crate::hw::describe::PciDescription> {
        let mut description = crate::hw::describe::PciDescription::new(QEMU_TYPE);
        description.bars = vec![crate::hw::describe::PciBarInfo {
            index: 4,
            io: true,
            size: 16,
        }];
        description.bus_master = true;
        Some(description)
    }

    fn config_read(&self, offset: u8) -> u32 {
        self.config.lock().unwrap().read_dword(offset)
    }

    fn config_write(&self, offset: u8, value: u32, mask: u32) {
        let mut config = self.config.lock().unwrap();
        config.write_dword(offset, value, mask);
        if offset & 0xfc == COMMAND as u8 || offset & 0xfc == 0x20 {
            self.update_window(&config);
        }
    }

    fn reset(&self) {
        let mut config = self.config.lock().unwrap();
        config.reset();
        self.update_window(&config);
        drop(config);
        for channel in &self.channels {
            channel.reset();
        }
    }
}

/// 0x1F0-0x1F7 / 0x170-0x177.
struct CommandBlockPorts(Arc<Channel>);

impl PioDevice for CommandBlockPorts {
    fn read(&self, offset: u16, data: &mut [u8]) {
        self.0.read_command_block(offset, data);
    }

    fn write(&self, offset: u16, data: &[u8]) {
        self.0.write_command_block(offset, data);
    }
}

/// 0x3F6 / 0x376.
struct ControlPort(Arc<Channel>);

impl PioDevice for ControlPort {
    fn read(&self, _offset: u16, data: &mut [u8]) {
        self.0.read_control(data);
    }

    fn write(&self, _offset: u16, data: &[u8]) {
        self.0.write_control(data);
    }
}

/// BAR4: eight bytes of bus-master registers per channel.
struct BusMasterPorts([Arc<Channel>; 2]);

impl PioDevice for BusMasterPorts {
    fn read(&self, offset: u16, data: &mut [u8]) {
        self.0[usize::from(offset >= 8)].read_bus_master(offset & 7, data);
    }

    fn write(&self, offset: u16, data: &[u8]) {
        self.0[usize::from(offset >= 8)].write_bus_master(offset & 7, data);
    }
}

/// QEMU's type name of the IDE function.
pub const QEMU_TYPE: &str = "piix3-ide";
