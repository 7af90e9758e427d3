//! One IDE channel: the task file registers both devices see, the device control register,
//! command execution for ATA disks and ATAPI devices, PIO data phases through the data port,
//! bus-master DMA through [`super::bmdma`], and the channel's interrupt line.
//!
//! Behaviour follows QEMU 7.2's `hw/ide/core.c` wherever the guest can observe it (which
//! commands a device accepts, status and error values, when the interrupt is raised and
//! lowered, the signature after resets). I/O is done synchronously in the vCPU's port
//! access, so BSY is never seen set by the guest.
//!
//! This file holds the devices' state and the register interface; [`commands`] runs ATA
//! commands, [`disk_io`] the PIO sector transfers, [`dma`] the bus-master transfers and
//! [`packet_protocol`] the ATAPI PACKET protocol.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::GuestMemoryMmap;

use super::bmdma::{
    scatter_list, BusMaster, DmaFault, ScatterCursor, StartStop, BM_COMMAND, BM_PRD_ADDRESS,
    BM_STATUS, BM_STATUS_ACTIVE, BM_STATUS_ERROR, BM_STATUS_INT,
};
use super::geometry::{Geometry, Translation};
use super::identify::{self, DiskIdentity, MAX_MULT_SECTORS};
use super::packet::{PacketDevice, PacketMode, PacketResult, PacketSense};
use crate::block::drive::{Drive, IoKind};
use crate::block::error::BlockError;
use crate::hw::irq::InterruptLine;

mod commands;
mod disk_io;
mod dma;
mod packet_protocol;

/// Status register bits.
pub const STATUS_BSY: u8 = 0x80;
pub const STATUS_DRDY: u8 = 0x40;
pub const STATUS_DSC: u8 = 0x10;
pub const STATUS_DRQ: u8 = 0x08;
pub const STATUS_ERR: u8 = 0x01;
/// Error register: command aborted.
pub const ERROR_ABRT: u8 = 0x04;
/// Device control register bits.
pub const CONTROL_NIEN: u8 = 0x02;
pub const CONTROL_SRST: u8 = 0x04;
pub const CONTROL_HOB: u8 = 0x80;
/// Device register: bits 7 and 5 always read as one; LBA addressing; device 1; head.
const DEVICE_ALWAYS_ON: u8 = 0xa0;
const DEVICE_LBA: u8 = 0x40;
const DEVICE_SELECT: u8 = 0x10;
const DEVICE_HEAD: u8 = 0x0f;
/// ATAPI interrupt reason, in the sector count register.
pub const REASON_COD: u32 = 0x01;
pub const REASON_IO: u32 = 0x02;

const SECTOR_SIZE: u64 = 512;
const CD_BLOCK_SIZE: u64 = 2048;
const PACKET_SIZE: usize = 12;
/// DMA transfers go through a bounce buffer of at most this many bytes at a time.
const DMA_CHUNK: u64 = 1 << 20;
/// ATAPI DMA reads the medium in QEMU's chunks (its 128 KiB I/O buffer), which the device
/// model's reply buffer mirrors.
const PACKET_DMA_CHUNK: u64 = 64 * CD_BLOCK_SIZE;

/// Why a drive cannot be attached to an IDE position (QEMU's messages).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("Device needs media, but drive is empty")]
    NoMedium,
    #[error("Can't use a read-only drive")]
    ReadOnly,
    #[error("cannot read the disk size: {0}")]
    Size(#[source] BlockError),
}

/// A hard disk on a channel.
pub struct Disk {
    drive: Arc<Drive>,
    total_sectors: u64,
    geometry: Geometry,
    translation: Translation,
    /// The guest can turn the write cache off (SET FEATURES 82h); writes are then flushed
    /// before they complete.
    write_cache: bool,
}

impl Disk {
    /// A disk over `drive`'s medium, with QEMU's guessed geometry.
    pub fn new(drive: Arc<Drive>) -> Result<Disk, AttachError> {
        let node = drive.node().ok_or(AttachError::NoMedium)?;
        if node.is_read_only() {
            return Err(AttachError::ReadOnly);
        }
        let total_sectors = node.virtual_size().map_err(AttachError::Size)? / SECTOR_SIZE;
        let mut mbr = [0u8; 512];
        // An unreadable first sector just means no partition table to guess from.
        if total_sectors == 0 || node.read_at(0, &mut mbr).is_err() {
            mbr = [0; 512];
        }
        let (geometry, translation) = Geometry::guess(total_sectors, &mbr);
        let write_cache = !matches!(
            node.cache_mode(),
            crate::block::options::CacheMode::Writethrough
                | crate::block::options::CacheMode::Directsync
        );
        Ok(Disk {
            drive,
            total_sectors,
            geometry,
            translation,
            write_cache,
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The CHS translation a BIOS should use (what QEMU reports in CMOS).
    pub fn translation(&self) -> Translation {
        self.translation
    }

    pub fn total_sectors(&self) -> u64 {
        self.total_sectors
    }
}

/// What sits at a device position of the channel.
pub enum Attachment {
    Empty,
    Disk(Disk),
    Cdrom(Box<dyn PacketDevice>),
}

impl Attachment {
    fn is_empty(&self) -> bool {
        matches!(self, Attachment::Empty)
    }

    fn is_cdrom(&self) -> bool {
        matches!(self, Attachment::Cdrom(_))
    }

    fn is_disk(&self) -> bool {
        matches!(self, Attachment::Disk(_))
    }
}

/// The shadow registers of one device (both devices latch every write).
#[derive(Clone, Debug, Default)]
struct TaskFile {
    feature: u8,
    hob_feature: u8,
    /// After a read/write command this holds the whole count (up to 65536).
    nsector: u32,
    hob_nsector: u8,
    sector: u8,
    hob_sector: u8,
    lcyl: u8,
    hob_lcyl: u8,
    hcyl: u8,
    hob_hcyl: u8,
    select: u8,
    status: u8,
    error: u8,
    lba48: bool,
}

/// What happens when the guest has moved the whole PIO buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnEnd {
    /// Nothing was started since reset: the data port is dead.
    Idle,
    Stop,
    SectorRead,
    SectorWrite,
    PacketCommand,
    PacketReply,
}

impl OnEnd {
    /// Whether the data moves from the device to the guest.
    fn is_data_in(self) -> bool {
        !matches!(self, OnEnd::SectorWrite | OnEnd::PacketCommand)
    }
}

/// Where an ATAPI data phase gets its bytes.
enum PacketSource {
    Buffer(Vec<u8>),
    Blocks { lba: u32 },
}

struct PacketTransfer {
    source: PacketSource,
    total: u64,
    done: u64,
}

/// A DMA command waiting for (or running with) the bus master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DmaJob {
    Read,
    Write,
    Trim,
    Packet,
}

struct Unit {
    attachment: Attachment,
    serial: String,
    tf: TaskFile,
    mult_sectors: u32,
    /// Sectors per DRQ block of the running PIO command.
    req_sectors: u32,
    /// Built on the first IDENTIFY and then kept, SET FEATURES edits included (as QEMU).
    identify: Option<[u16; 256]>,
    buffer: Vec<u8>,
    pos: usize,
    end: usize,
    on_end: OnEnd,
    atapi_dma: bool,
    packet: Option<PacketTransfer>,
}

impl Unit {
    fn new(attachment: Attachment, serial: String) -> Unit {
        let mut unit = Unit {
            attachment,
            serial,
            tf: TaskFile::default(),
            mult_sectors: MAX_MULT_SECTORS,
            req_sectors: 0,
            identify: None,
            buffer: Vec::new(),
            pos: 0,
            end: 0,
            on_end: OnEnd::Idle,
            atapi_dma: false,
            packet: None,
        };
        unit.reset();
        unit
    }

    /// The unit's IDENTIFY words, built on first use and then kept (QEMU's `identify_set`).
    ///
    /// SET FEATURES builds them too: under QEMU the firmware has always issued IDENTIFY
    /// before an operating system runs, so its transfer-mode and cache edits are always
    /// visible to the guest; a direct boot here has no firmware pass to do that.
    /// `None` when no device is attached.
    fn identify_words(&mut self) -> Option<&mut [u16; 256]> {
        if self.identify.is_none() {
            self.identify = match &self.attachment {
                Attachment::Disk(disk) => Some(identify::identify_disk(&DiskIdentity {
                    serial: self.serial.clone(),
                    geometry: disk.geometry,
                    total_sectors: disk.total_sectors,
                    write_cache: disk.write_cache,
                    mult_sectors: self.mult_sectors,
                })),
                Attachment::Cdrom(cd) => Some(cd.identify(&self.serial)),
                Attachment::Empty => None,
            };
        }
        self.identify.as_mut()
    }

    fn disk(&self) -> Option<&Disk> {
        match &self.attachment {
            Attachment::Disk(disk) => Some(disk),
            _ => None,
        }
    }

    /// QEMU's `ide_reset`: registers, transfer state and the signature.
    fn reset(&mut self) {
        self.mult_sectors = MAX_MULT_SECTORS;
        self.tf = TaskFile {
            select: DEVICE_ALWAYS_ON,
            status: STATUS_DRDY | STATUS_DSC,
            ..TaskFile::default()
        };
        self.req_sectors = 0;
        self.atapi_dma = false;
        self.packet = None;
        if let Attachment::Cdrom(cd) = &mut self.attachment {
            cd.reset();
        }
        self.set_signature();
        self.on_end = OnEnd::Idle;
        self.pos = 0;
        self.end = 0;
    }

    /// The values that tell software what kind of device answers.
    fn set_signature(&mut self) {
        self.tf.select &= !DEVICE_HEAD;
        self.tf.nsector = 1;
        self.tf.sector = 1;
        let (lcyl, hcyl) = match self.attachment {
            Attachment::Cdrom(_) => (0x14, 0xeb),
            Attachment::Disk(_) => (0, 0),
            Attachment::Empty => (0xff, 0xff),
        };
        self.tf.lcyl = lcyl;
        self.tf.hcyl = hcyl;
    }

    fn transfer_start(&mut self, len: usize, on_end: OnEnd) {
        if self.buffer.len() < len {
            self.buffer.resize(len, 0);
        }
        self.pos = 0;
        self.end = len;
        if self.tf.status & STATUS_ERR == 0 {
            self.tf.status |= STATUS_DRQ;
        }
        self.on_end = on_end;
    }

    fn transfer_stop(&mut self) {
        self.on_end = OnEnd::Stop;
        self.pos = 0;
        self.end = 0;
        self.tf.status &= !STATUS_DRQ;
    }

    fn abort(&mut self) {
        self.transfer_stop();
        self.tf.status = STATUS_DRDY | STATUS_ERR;
        self.tf.error = ERROR_ABRT;
    }

    /// Turns the sector count register into the command's count (0 means 256, or 65536
    /// for the 48-bit commands).
    fn lba48_transform(&mut self, lba48: bool) {
        let tf = &mut self.tf;
        tf.lba48 = lba48;
        if !lba48 {
            if tf.nsector == 0 {
                tf.nsector = 256;
            }
        } else if tf.nsector == 0 && tf.hob_nsector == 0 {
            tf.nsector = 65536;
        } else {
            tf.nsector = (u32::from(tf.hob_nsector) << 8) | (tf.nsector & 0xff);
        }
    }

    /// The addressed sector; negative for CHS sector number 0.
    fn sector_number(&self) -> i64 {
        let tf = &self.tf;
        if tf.select & DEVICE_LBA != 0 {
            if tf.lba48 {
                (i64::from(tf.hob_hcyl) << 40)
                    | (i64::from(tf.hob_lcyl) << 32)
                    | (i64::from(tf.hob_sector) << 24)
                    | (i64::from(tf.hcyl) << 16)
                    | (i64::from(tf.lcyl) << 8)
                    | i64::from(tf.sector)
            } else {
                (i64::from(tf.select & DEVICE_HEAD) << 24)
                    | (i64::from(tf.hcyl) << 16)
                    | (i64::from(tf.lcyl) << 8)
                    | i64::from(tf.sector)
            }
        } else {
            let g = self.disk().map(|d| d.geometry).unwrap_or(Geometry {
                cylinders: 0,
                heads: 0,
                sectors: 0,
            });
            let cylinder = (i64::from(tf.hcyl) << 8) | i64::from(tf.lcyl);
            cylinder * i64::from(g.heads) * i64::from(g.sectors)
                + i64::from(tf.select & DEVICE_HEAD) * i64::from(g.sectors)
                + (i64::from(tf.sector) - 1)
        }
    }

    fn set_sector_number(&mut self, n: i64) {
        let g = self.disk().map(|d| d.geometry);
        let tf = &mut self.tf;
        if tf.select & DEVICE_LBA != 0 {
            if tf.lba48 {
                tf.sector = n as u8;
                tf.lcyl = (n >> 8) as u8;
                tf.hcyl = (n >> 16) as u8;
                tf.hob_sector = (n >> 24) as u8;
                tf.hob_lcyl = (n >> 32) as u8;
                tf.hob_hcyl = (n >> 40) as u8;
            } else {
                tf.select = (tf.select & !DEVICE_HEAD) | ((n >> 24) as u8 & DEVICE_HEAD);
                tf.hcyl = (n >> 16) as u8;
                tf.lcyl = (n >> 8) as u8;
                tf.sector = n as u8;
            }
        } else if let Some(g) = g.filter(|g| g.heads != 0 && g.sectors != 0) {
            let per_cylinder = i64::from(g.heads * g.sectors);
            let cylinder = n / per_cylinder;
            let rest = n % per_cylinder;
            tf.hcyl = (cylinder >> 8) as u8;
            tf.lcyl = cylinder as u8;
            tf.select =
                (tf.select & !DEVICE_HEAD) | ((rest / i64::from(g.sectors)) as u8 & DEVICE_HEAD);
            tf.sector = (rest % i64::from(g.sectors) + 1) as u8;
        }
    }

    /// Whether `count` sectors from `sector` lie on the disk.
    fn range_ok(&self, sector: i64, count: u64) -> bool {
        let total = self.disk().map_or(0, |d| d.total_sectors);
        sector >= 0 && (sector as u64) <= total && count <= total - sector as u64
    }
}

/// A block-layer failure of a guest request, with its accounting already done.
struct IoFailed;

/// Why a DMA transfer failed.
enum DmaIoError {
    Block,
    TrimOutOfRange,
}

/// The channel state behind its lock.
struct State {
    units: [Unit; 2],
    selected: usize,
    control: u8,
    bus_master: BusMaster,
    dma: Option<(usize, DmaJob)>,
    irq: Arc<dyn InterruptLine>,
    irq_high: bool,
    memory: GuestMemoryMmap,
}

/// One IDE channel with its two device positions and its bus-master registers.
pub struct Channel {
    state: Mutex<State>,
}

impl Channel {
    /// A channel with `devices` (master, slave); `serials` are the IDENTIFY serial numbers.
    pub fn new(
        devices: [(Attachment, String); 2],
        irq: Arc<dyn InterruptLine>,
        memory: GuestMemoryMmap,
    ) -> Channel {
        let [(a0, s0), (a1, s1)] = devices;
        Channel {
            state: Mutex::new(State {
                units: [Unit::new(a0, s0), Unit::new(a1, s1)],
                selected: 0,
                control: 0,
                bus_master: BusMaster::default(),
                dma: None,
                irq,
                irq_high: false,
                memory,
            }),
        }
    }

    /// An access to the command block (offset 0-7 from 0x1F0/0x170).
    ///
    /// KVM hands string I/O (`rep insw`) over as one buffer of `count * size` bytes without
    /// the access size, so buffers longer than a dword are taken as repeated accesses to the
    /// same port: words at the data port (a dword there moves the same bytes as two words),
    /// bytes elsewhere.
    pub fn read_command_block(&self, offset: u16, data: &mut [u8]) {
        let mut state = self.state.lock().unwrap();
        match (offset, data.len()) {
            (_, 1) => data[0] = state.read_register(offset),
            (0, n) if n % 2 == 0 => {
                for word in data.chunks_exact_mut(2) {
                    state.read_data(word);
                }
            }
            // Word accesses to the byte registers are split, as QEMU's port lists do.
            (_, 2) => {
                data[0] = state.read_register(offset);
                data[1] = if offset + 1 < 8 {
                    state.read_register(offset + 1)
                } else {
                    0xff
                };
            }
            (_, 4) => data.fill(0xff),
            _ => {
                for byte in data.iter_mut() {
                    *byte = state.read_register(offset);
                }
            }
        }
    }

    pub fn write_command_block(&self, offset: u16, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        match (offset, data.len()) {
            (_, 1) => state.write_register(offset, data[0]),
            (0, n) if n % 2 == 0 => {
                for word in data.chunks_exact(2) {
                    state.write_data(word);
                }
            }
            (_, 2) => {
                state.write_register(offset, data[0]);
                if offset + 1 < 8 {
                    state.write_register(offset + 1, data[1]);
                }
            }
            (_, 4) => {}
            _ => {
                for &byte in data {
                    state.write_register(offset, byte);
                }
            }
        }
    }

    /// The control block port (0x3F6/0x376): alternate status, device control.
    pub fn read_control(&self, data: &mut [u8]) {
        let state = self.state.lock().unwrap();
        data.fill(0xff);
        if data.len() == 1 {
            data[0] = state.visible_status();
        }
    }

    pub fn write_control(&self, data: &[u8]) {
        if data.len() == 1 {
            self.state.lock().unwrap().write_control(data[0]);
        }
    }

    /// The channel's 8 bytes of the bus-master BAR.
    pub fn read_bus_master(&self, offset: u16, data: &mut [u8]) {
        let state = self.state.lock().unwrap();
        let bm = &state.bus_master;
        match offset {
            BM_COMMAND | BM_STATUS if data.len() == 1 => {
                data[0] = if offset == BM_COMMAND {
                    bm.command
                } else {
                    bm.status
                };
            }
            4..=7 => {
                let value = bm.read_address(offset - BM_PRD_ADDRESS, data.len());
                let bytes = value.to_le_bytes();
                let n = data.len().min(4);
                data[..n].copy_from_slice(&bytes[..n]);
                data[n..].fill(0xff);
            }
            _ => data.fill(0xff),
        }
    }

    pub fn write_bus_master(&self, offset: u16, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        match offset {
            BM_COMMAND if data.len() == 1 => state.write_bm_command(data[0]),
            BM_STATUS if data.len() == 1 => state.bus_master.write_status(data[0]),
            4..=7 => {
                let mut bytes = [0u8; 4];
                let n = data.len().min(4);
                bytes[..n].copy_from_slice(&data[..n]);
                state.bus_master.write_address(
                    offset - BM_PRD_ADDRESS,
                    n,
                    u32::from_le_bytes(bytes),
                );
            }
            _ => {}
        }
    }

    /// The geometry and translation of the disks at (master, slave).
    pub fn disk_geometries(&self) -> [Option<(Geometry, Translation)>; 2] {
        let state = self.state.lock().unwrap();
        let of = |unit: &Unit| unit.disk().map(|d| (d.geometry, d.translation));
        [of(&state.units[0]), of(&state.units[1])]
    }

    /// System reset: both devices, the device control register and the bus master.
    pub fn reset(&self) {
        let mut state = self.state.lock().unwrap();
        state.selected = 0;
        state.control = 0;
        for unit in &mut state.units {
            unit.reset();
        }
        state.dma = None;
        state.bus_master.reset();
        state.set_line(false);
    }
}

impl State {
    fn no_devices(&self) -> bool {
        self.units.iter().all(|u| u.attachment.is_empty())
    }

    /// Reads of an absent device 1 (or of a channel without devices) float to zero.
    fn selected_absent(&self) -> bool {
        self.no_devices() || (self.selected == 1 && self.units[1].attachment.is_empty())
    }

    fn visible_status(&self) -> u8 {
        if self.selected_absent() {
            0
        } else {
            self.units[self.selected].tf.status
        }
    }

    fn set_line(&mut self, high: bool) {
        if self.irq_high != high {
            self.irq_high = high;
            self.irq.set_level(high);
        }
    }

    /// INTRQ, unless the guest disabled it with nIEN; the bus master notes it either way
    /// the line goes up.
    fn raise_irq(&mut self) {
        if self.control & CONTROL_NIEN == 0 {
            self.bus_master.status |= BM_STATUS_INT;
            self.set_line(true);
        }
    }

    fn read_register(&mut self, reg: u16) -> u8 {
        let hob = self.control & CONTROL_HOB != 0;
        let none = self.no_devices();
        let tf = &self.units[self.selected].tf;
        let pick = |low: u8, high: u8| {
            if none {
                0
            } else if hob {
                high
            } else {
                low
            }
        };
        match reg {
            0 => 0xff,
            1 => {
                if self.selected_absent() {
                    0
                } else if hob {
                    tf.hob_feature
                } else {
                    tf.error
                }
            }
            2 => pick(tf.nsector as u8, tf.hob_nsector),
            3 => pick(tf.sector, tf.hob_sector),
            4 => pick(tf.lcyl, tf.hob_lcyl),
            5 => pick(tf.hcyl, tf.hob_hcyl),
            6 => {
                if none {
                    0
                } else {
                    tf.select
                }
            }
            _ => {
                let status = self.visible_status();
                self.set_line(false);
                status
            }
        }
    }

    fn write_register(&mut self, reg: u16, value: u8) {
        if reg == 0 {
            return;
        }
        // While a command owns the registers only a new command gets through.
        if reg != 7 && self.units[self.selected].tf.status & (STATUS_BSY | STATUS_DRQ) != 0 {
            return;
        }
        self.control &= !CONTROL_HOB;
        for unit in &mut self.units {
            let tf = &mut unit.tf;
            match reg {
                1 => {
                    tf.hob_feature = tf.feature;
                    tf.feature = value;
                }
                2 => {
                    tf.hob_nsector = tf.nsector as u8;
                    tf.nsector = u32::from(value);
                }
                3 => {
                    tf.hob_sector = tf.sector;
                    tf.sector = value;
                }
                4 => {
                    tf.hob_lcyl = tf.lcyl;
                    tf.lcyl = value;
                }
                5 => {
                    tf.hob_hcyl = tf.hcyl;
                    tf.hcyl = value;
                }
                6 => tf.select = value | DEVICE_ALWAYS_ON,
                _ => {}
            }
        }
        match reg {
            6 => self.selected = usize::from(value & DEVICE_SELECT != 0),
            7 => {
                self.set_line(false);
                self.execute(value);
            }
            _ => {}
        }
    }

    fn write_control(&mut self, value: u8) {
        let reset = self.control & CONTROL_SRST == 0 && value & CONTROL_SRST != 0;
        self.control = value;
        if reset {
            for u in 0..2 {
                self.dma = self.dma.filter(|&(unit, _)| unit != u);
                self.units[u].reset();
                self.diagnose(u);
            }
            self.control &= !CONTROL_SRST;
        }
    }

    fn read_data(&mut self, out: &mut [u8]) {
        out.fill(0);
        let u = self.selected;
        let unit = &mut self.units[u];
        if unit.tf.status & STATUS_DRQ == 0 || !unit.on_end.is_data_in() {
            return;
        }
        if unit.pos + out.len() > unit.end {
            return;
        }
        out.copy_from_slice(&unit.buffer[unit.pos..unit.pos + out.len()]);
        unit.pos += out.len();
        if unit.pos >= unit.end {
            unit.tf.status &= !STATUS_DRQ;
            self.end_transfer(u);
        }
    }

    fn write_data(&mut self, data: &[u8]) {
        let u = self.selected;
        let unit = &mut self.units[u];
        if unit.tf.status & STATUS_DRQ == 0 || unit.on_end.is_data_in() {
            return;
        }
        if unit.pos + data.len() > unit.end {
            return;
        }
        unit.buffer[unit.pos..unit.pos + data.len()].copy_from_slice(data);
        unit.pos += data.len();
        if unit.pos >= unit.end {
            unit.tf.status &= !STATUS_DRQ;
            self.end_transfer(u);
        }
    }

    fn end_transfer(&mut self, u: usize) {
        match self.units[u].on_end {
            OnEnd::Idle => {
                self.units[u].pos = 0;
                self.units[u].end = 0;
            }
            OnEnd::Stop => self.units[u].transfer_stop(),
            OnEnd::SectorRead => self.sector_read(u),
            OnEnd::SectorWrite => self.sector_write(u),
            OnEnd::PacketCommand => self.packet_command(u),
            OnEnd::PacketReply => self.packet_reply(u),
        }
    }
}
