//! One IDE channel: the task file registers both devices see, the device control register,
//! command execution for ATA disks and ATAPI devices, PIO data phases through the data port,
//! bus-master DMA through [`super::bmdma`], and the channel's interrupt line.
//!
//! Behaviour follows QEMU 7.2's `hw/ide/core.c` wherever the guest can observe it (which
//! commands a device accepts, status and error values, when the interrupt is raised and
//! lowered, the signature after resets). I/O is done synchronously in the vCPU's port
//! access, so BSY is never seen set by the guest.

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

/// ATA command codes (ACS-2 table B.2), as QEMU names them.
mod cmd {
    pub const DSM: u8 = 0x06;
    pub const DEVICE_RESET: u8 = 0x08;
    pub const RECALIBRATE: u8 = 0x10;
    pub const READ: u8 = 0x20;
    pub const READ_ONCE: u8 = 0x21;
    pub const READ_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_NATIVE_MAX_EXT: u8 = 0x27;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE: u8 = 0x30;
    pub const WRITE_ONCE: u8 = 0x31;
    pub const WRITE_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const WRITE_VERIFY: u8 = 0x3c;
    pub const VERIFY: u8 = 0x40;
    pub const VERIFY_ONCE: u8 = 0x41;
    pub const VERIFY_EXT: u8 = 0x42;
    pub const SEEK: u8 = 0x70;
    pub const DIAGNOSE: u8 = 0x90;
    pub const SPECIFY: u8 = 0x91;
    pub const STANDBY_NOW2: u8 = 0x94;
    pub const IDLE_IMMEDIATE2: u8 = 0x95;
    pub const STANDBY2: u8 = 0x96;
    pub const SET_IDLE2: u8 = 0x97;
    pub const CHECK_POWER_MODE2: u8 = 0x98;
    pub const SLEEP_NOW2: u8 = 0x99;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET: u8 = 0xa1;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_ONCE: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_ONCE: u8 = 0xcb;
    pub const STANDBY_NOW1: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const SET_IDLE1: u8 = 0xe3;
    pub const CHECK_POWER_MODE1: u8 = 0xe5;
    pub const SLEEP_NOW1: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const IDENTIFY: u8 = 0xec;
    pub const SET_FEATURES: u8 = 0xef;
    pub const SECURITY_FREEZE_LOCK: u8 = 0xf5;
    pub const READ_NATIVE_MAX: u8 = 0xf8;
}

/// Which devices accept a command, and whether success sets DSC (QEMU's `ide_cmd_table`).
struct CommandFlags {
    disk: bool,
    cdrom: bool,
    set_dsc: bool,
}

fn command_flags(code: u8) -> Option<CommandFlags> {
    use cmd::*;
    let (disk, cdrom, set_dsc) = match code {
        DEVICE_RESET | PACKET | IDENTIFY_PACKET => (false, true, false),
        READ | DIAGNOSE | FLUSH_CACHE | IDENTIFY => (true, true, false),
        SET_FEATURES => (true, true, true),
        DSM | READ_ONCE | READ_EXT | READ_DMA_EXT | READ_MULTIPLE_EXT | WRITE | WRITE_ONCE
        | WRITE_EXT | WRITE_DMA_EXT | WRITE_MULTIPLE_EXT | WRITE_VERIFY | STANDBY_NOW2
        | IDLE_IMMEDIATE2 | STANDBY2 | SET_IDLE2 | SLEEP_NOW2 | READ_MULTIPLE | WRITE_MULTIPLE
        | READ_DMA | READ_DMA_ONCE | WRITE_DMA | WRITE_DMA_ONCE | STANDBY_NOW1 | IDLE_IMMEDIATE
        | STANDBY | SET_IDLE1 | SLEEP_NOW1 | FLUSH_CACHE_EXT => (true, false, false),
        RECALIBRATE | READ_NATIVE_MAX_EXT | VERIFY | VERIFY_ONCE | VERIFY_EXT | SEEK | SPECIFY
        | CHECK_POWER_MODE2 | SET_MULTIPLE | CHECK_POWER_MODE1 | SECURITY_FREEZE_LOCK
        | READ_NATIVE_MAX => (true, false, true),
        _ => return None,
    };
    Some(CommandFlags {
        disk,
        cdrom,
        set_dsc,
    })
}

/// Why a drive cannot be attached to an IDE position (QEMU's messages).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("Device needs media, but drive is empty")]
    NoMedium,
    #[error("Can't use a read-only drive")]
    ReadOnly,
    #[error("cannot read the disk size: {0}")]
    Size(#[source] BlockError),
    /// No ATAPI model is available for CD-ROM drives.
    #[error("IDE CD-ROM drives are not supported yet by vmscope")]
    CdromUnsupported,
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

    // ---- commands ----

    fn execute(&mut self, code: u8) {
        let u = self.selected;
        // Commands to an absent device 1 go nowhere.
        if u == 1 && self.units[1].attachment.is_empty() {
            return;
        }
        let is_cdrom = self.units[u].attachment.is_cdrom();
        if self.units[u].tf.status & (STATUS_BSY | STATUS_DRQ) != 0
            && !(code == cmd::DEVICE_RESET && is_cdrom)
        {
            return;
        }
        let permitted = command_flags(code).filter(|f| if is_cdrom { f.cdrom } else { f.disk });
        let Some(flags) = permitted else {
            self.units[u].abort();
            self.raise_irq();
            return;
        };
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_BSY;
        unit.tf.error = 0;
        if self.run_command(u, code) {
            let tf = &mut self.units[u].tf;
            tf.status &= !STATUS_BSY;
            if flags.set_dsc && tf.error == 0 {
                tf.status |= STATUS_DSC;
            }
            self.raise_irq();
        }
    }

    /// Runs a permitted command; true when it completed and the caller should finish it
    /// (clear BSY, raise the interrupt), false when the command manages that itself.
    fn run_command(&mut self, u: usize, code: u8) -> bool {
        use cmd::*;
        let unit = &mut self.units[u];
        let has_disk = unit.disk().is_some();
        match code {
            DEVICE_RESET => {
                unit.transfer_stop();
                self.dma = self.dma.filter(|&(unit, _)| unit != u);
                let unit = &mut self.units[u];
                unit.reset();
                unit.tf.status = 0;
                false
            }
            RECALIBRATE | SPECIFY | STANDBY_NOW1 | STANDBY_NOW2 | IDLE_IMMEDIATE
            | IDLE_IMMEDIATE2 | STANDBY | STANDBY2 | SET_IDLE1 | SET_IDLE2 | SLEEP_NOW1
            | SLEEP_NOW2 | SEEK => true,
            CHECK_POWER_MODE1 | CHECK_POWER_MODE2 => {
                unit.tf.nsector = 0xff; // active or idle
                true
            }
            SECURITY_FREEZE_LOCK => {
                unit.tf.nsector = 0;
                true
            }
            VERIFY | VERIFY_ONCE | VERIFY_EXT => {
                unit.lba48_transform(code == VERIFY_EXT);
                true
            }
            READ | READ_ONCE | READ_EXT => {
                if unit.attachment.is_cdrom() {
                    // ATA/ATAPI-4 8.27.5.2: a packet device answers with its signature.
                    unit.set_signature();
                    unit.abort();
                    return true;
                }
                if !has_disk {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_EXT);
                unit.req_sectors = 1;
                self.sector_read(u);
                false
            }
            READ_MULTIPLE | READ_MULTIPLE_EXT => {
                if !has_disk || unit.mult_sectors == 0 {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_MULTIPLE_EXT);
                unit.req_sectors = unit.mult_sectors;
                self.sector_read(u);
                false
            }
            WRITE | WRITE_ONCE | WRITE_EXT | WRITE_VERIFY => {
                if !has_disk {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == WRITE_EXT);
                unit.req_sectors = 1;
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.transfer_start(SECTOR_SIZE as usize, OnEnd::SectorWrite);
                false
            }
            WRITE_MULTIPLE | WRITE_MULTIPLE_EXT => {
                if !has_disk || unit.mult_sectors == 0 {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == WRITE_MULTIPLE_EXT);
                unit.req_sectors = unit.mult_sectors;
                let n = unit.tf.nsector.min(unit.req_sectors);
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.transfer_start(n as usize * SECTOR_SIZE as usize, OnEnd::SectorWrite);
                false
            }
            READ_DMA | READ_DMA_ONCE | READ_DMA_EXT | WRITE_DMA | WRITE_DMA_ONCE
            | WRITE_DMA_EXT => {
                if !has_disk {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_DMA_EXT || code == WRITE_DMA_EXT);
                let job = if matches!(code, READ_DMA | READ_DMA_ONCE | READ_DMA_EXT) {
                    DmaJob::Read
                } else {
                    DmaJob::Write
                };
                self.start_dma(u, job);
                false
            }
            DSM => {
                // Data set management: only TRIM, its ranges come by DMA.
                if unit.tf.feature == 0x01 && has_disk {
                    self.start_dma(u, DmaJob::Trim);
                    return false;
                }
                unit.abort();
                true
            }
            READ_NATIVE_MAX | READ_NATIVE_MAX_EXT => {
                let total = unit.disk().map_or(0, |d| d.total_sectors);
                if total == 0 {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_NATIVE_MAX_EXT);
                unit.set_sector_number(total as i64 - 1);
                true
            }
            SET_MULTIPLE => {
                let n = unit.tf.nsector & 0xff;
                if n != 0 && (n > MAX_MULT_SECTORS || !n.is_power_of_two()) {
                    unit.abort();
                } else {
                    unit.mult_sectors = n;
                }
                true
            }
            FLUSH_CACHE | FLUSH_CACHE_EXT => {
                self.flush(u);
                false
            }
            IDENTIFY => {
                let Some(disk) = unit.disk() else {
                    if unit.attachment.is_cdrom() {
                        unit.set_signature();
                    }
                    unit.abort();
                    return true;
                };
                let words = match unit.identify {
                    Some(words) => words,
                    None => identify::identify_disk(&DiskIdentity {
                        serial: unit.serial.clone(),
                        geometry: disk.geometry,
                        total_sectors: disk.total_sectors,
                        write_cache: disk.write_cache,
                        mult_sectors: unit.mult_sectors,
                    }),
                };
                unit.identify = Some(words);
                self.send_identify(u, &words);
                false
            }
            IDENTIFY_PACKET => {
                let words = match (&unit.attachment, unit.identify) {
                    (_, Some(words)) => words,
                    (Attachment::Cdrom(cd), None) => cd.identify(&unit.serial),
                    _ => {
                        unit.abort();
                        return true;
                    }
                };
                unit.identify = Some(words);
                self.send_identify(u, &words);
                false
            }
            DIAGNOSE => {
                self.diagnose(u);
                false
            }
            SET_FEATURES => self.set_features(u),
            PACKET => {
                if unit.tf.feature & 0x02 != 0 {
                    // Overlapped commands are not supported.
                    unit.abort();
                    return true;
                }
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.atapi_dma = unit.tf.feature & 0x01 != 0;
                unit.tf.nsector = REASON_COD;
                unit.transfer_start(PACKET_SIZE, OnEnd::PacketCommand);
                false
            }
            _ => {
                unit.abort();
                true
            }
        }
    }

    fn send_identify(&mut self, u: usize, words: &[u16; 256]) {
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        unit.transfer_start(512, OnEnd::Stop);
        unit.buffer[..512].copy_from_slice(&identify::to_bytes(words));
        self.raise_irq();
    }

    /// EXECUTE DEVICE DIAGNOSTIC, also the end of a software reset.
    fn diagnose(&mut self, u: usize) {
        let unit = &mut self.units[u];
        unit.set_signature();
        unit.tf.error = 0x01; // passed
        if unit.attachment.is_cdrom() {
            // Packet devices come out with a clear status register, DRDY included.
            unit.tf.status = 0;
        } else {
            unit.tf.status = STATUS_DRDY | STATUS_DSC;
            self.raise_irq();
        }
    }

    fn set_features(&mut self, u: usize) -> bool {
        let unit = &mut self.units[u];
        if unit.attachment.is_empty() {
            unit.abort();
            return true;
        }
        match unit.tf.feature {
            0x02 | 0x82 => {
                let enable = unit.tf.feature == 0x02;
                if let Attachment::Disk(disk) = &mut unit.attachment {
                    disk.write_cache = enable;
                }
                if let Some(words) = &mut unit.identify {
                    if !unit.attachment.is_cdrom() {
                        words[85] = identify::enabled_features_word(enable);
                    }
                }
                if enable {
                    true
                } else {
                    self.flush(u);
                    false
                }
            }
            // Power-on defaults, read look-ahead, APM, acoustic management, vendor NOPs.
            0xcc | 0x66 | 0xaa | 0x55 | 0x05 | 0x85 | 0x69 | 0x67 | 0x96 | 0x9a | 0x42 | 0xc2 => {
                true
            }
            0x03 => {
                // Set transfer mode: recorded in the cached IDENTIFY data.
                let mode = unit.tf.nsector as u8;
                let bit = 1u16 << ((mode & 0x07) + 8);
                let (w62, w63, w88) = match mode >> 3 {
                    0x00 | 0x01 => (0x07, 0x07, 0x3f),
                    0x02 => (0x07 | bit, 0x07, 0x3f),
                    0x04 => (0x07, 0x07 | bit, 0x3f),
                    0x08 => (0x07, 0x07, 0x3f | bit),
                    _ => {
                        unit.abort();
                        return true;
                    }
                };
                if let Some(words) = &mut unit.identify {
                    words[62] = w62;
                    words[63] = w63;
                    words[88] = w88;
                }
                true
            }
            _ => {
                unit.abort();
                true
            }
        }
    }

    // ---- disk I/O ----

    /// Runs one block-layer request and accounts it.
    fn disk_io(
        drive: &Drive,
        kind: IoKind,
        offset: u64,
        bytes: u64,
        io: impl FnOnce() -> Result<(), BlockError>,
    ) -> Result<(), IoFailed> {
        let started = Instant::now();
        let result = io();
        drive
            .stats()
            .record(kind, offset, bytes, started.elapsed(), result.is_ok());
        result.map_err(|_| IoFailed)
    }

    /// The PIO read state machine: the next DRQ block, or the end of the command.
    fn sector_read(&mut self, u: usize) {
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        unit.tf.error = 0;
        let remaining = unit.tf.nsector;
        if remaining == 0 {
            unit.transfer_stop();
            return;
        }
        let n = remaining.min(unit.req_sectors.max(1));
        let sector = unit.sector_number();
        let Some(disk) = unit.disk() else {
            unit.abort();
            self.raise_irq();
            return;
        };
        let drive = disk.drive.clone();
        if !unit.range_ok(sector, u64::from(n)) {
            drive.stats().record_invalid(IoKind::Read);
            unit.abort();
            self.raise_irq();
            return;
        }
        let len = n as usize * SECTOR_SIZE as usize;
        if unit.buffer.len() < len {
            unit.buffer.resize(len, 0);
        }
        let offset = sector as u64 * SECTOR_SIZE;
        let buffer = &mut unit.buffer[..len];
        let result = Self::disk_io(&drive, IoKind::Read, offset, len as u64, || {
            drive
                .node()
                .ok_or(BlockError::Unsupported("no medium".into()))?
                .read_at(offset, buffer)
        });
        if result.is_err() {
            unit.abort();
            self.raise_irq();
            return;
        }
        unit.set_sector_number(sector + i64::from(n));
        unit.tf.nsector -= n;
        unit.transfer_start(len, OnEnd::SectorRead);
        self.raise_irq();
    }

    /// A DRQ block of a PIO write arrived: write it, then ask for the next one or finish.
    fn sector_write(&mut self, u: usize) {
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_DSC | STATUS_BSY;
        let n = unit.tf.nsector.min(unit.req_sectors.max(1));
        let sector = unit.sector_number();
        let Some(disk) = unit.disk() else {
            unit.abort();
            self.raise_irq();
            return;
        };
        let drive = disk.drive.clone();
        let write_cache = disk.write_cache;
        if !unit.range_ok(sector, u64::from(n)) {
            drive.stats().record_invalid(IoKind::Write);
            unit.abort();
            self.raise_irq();
            return;
        }
        let len = n as usize * SECTOR_SIZE as usize;
        let offset = sector as u64 * SECTOR_SIZE;
        let data = &unit.buffer[..len];
        let result = Self::disk_io(&drive, IoKind::Write, offset, len as u64, || {
            write_through(&drive, offset, data, write_cache)
        });
        if result.is_err() {
            unit.abort();
            self.raise_irq();
            return;
        }
        unit.tf.status &= !STATUS_BSY;
        unit.tf.nsector -= n;
        unit.set_sector_number(sector + i64::from(n));
        if unit.tf.nsector == 0 {
            unit.transfer_stop();
        } else {
            let next = unit.tf.nsector.min(unit.req_sectors.max(1));
            unit.transfer_start(next as usize * SECTOR_SIZE as usize, OnEnd::SectorWrite);
        }
        self.raise_irq();
    }

    fn flush(&mut self, u: usize) {
        let unit = &mut self.units[u];
        if let Some(disk) = unit.disk() {
            let drive = disk.drive.clone();
            let result = Self::disk_io(&drive, IoKind::Flush, 0, 0, || match drive.node() {
                Some(node) => node.flush(),
                None => Ok(()),
            });
            if result.is_err() {
                unit.abort();
                self.raise_irq();
                return;
            }
        }
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        self.raise_irq();
    }

    // ---- bus-master DMA ----

    fn start_dma(&mut self, u: usize, job: DmaJob) {
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ;
        if job == DmaJob::Packet
            && matches!(
                unit.packet.as_ref().map(|p| &p.source),
                Some(PacketSource::Blocks { .. })
            )
        {
            unit.tf.status |= STATUS_BSY;
        }
        self.dma = Some((u, job));
        if self.bus_master.status & BM_STATUS_ACTIVE != 0 {
            self.run_dma();
        }
    }

    fn write_bm_command(&mut self, value: u8) {
        match self.bus_master.write_command(value) {
            StartStop::Started => {
                if self.bus_master.status & BM_STATUS_ACTIVE == 0 {
                    self.bus_master.status |= BM_STATUS_ACTIVE;
                    if self.dma.is_some() {
                        self.run_dma();
                    }
                }
            }
            // Transfers complete inside the port access, so there is nothing to cancel.
            StartStop::Stopped | StartStop::Unchanged => {}
        }
    }

    /// The transfer is over: the bus master goes idle (or stays active when the PRDs
    /// described more than the command moved, as on the PIIX).
    fn dma_inactive(&mut self, stay_active: bool) {
        self.dma = None;
        if stay_active {
            self.bus_master.status |= BM_STATUS_ACTIVE;
        } else {
            self.bus_master.status &= !BM_STATUS_ACTIVE;
        }
    }

    fn dma_error(&mut self, u: usize) {
        self.units[u].abort();
        self.dma_inactive(false);
        self.raise_irq();
    }

    fn dma_fault(&mut self, u: usize, _fault: DmaFault) {
        // A PCI master abort: the bus master's error bit, and the command fails.
        self.bus_master.status |= BM_STATUS_ERROR;
        self.dma_error(u);
    }

    fn run_dma(&mut self) {
        let Some((u, job)) = self.dma else {
            return;
        };
        match job {
            DmaJob::Read | DmaJob::Write | DmaJob::Trim => self.run_ata_dma(u, job),
            DmaJob::Packet => self.run_packet_dma(u),
        }
    }

    fn run_ata_dma(&mut self, u: usize, job: DmaJob) {
        let count = u64::from(self.units[u].tf.nsector);
        let bytes = count * SECTOR_SIZE;
        let list = match scatter_list(&self.memory, self.bus_master.prd_table, bytes) {
            Ok(list) => list,
            Err(fault) => return self.dma_fault(u, fault),
        };
        let unit = &mut self.units[u];
        let Some(disk) = unit.disk() else {
            return self.dma_error(u);
        };
        let drive = disk.drive.clone();
        let write_cache = disk.write_cache;
        if list.prepared < bytes {
            // PRDs shorter than the transfer: the PIIX stops with Active and Interrupt both
            // clear, which is how the guest learns of the error.
            unit.tf.status = STATUS_DRDY | STATUS_DSC;
            self.dma_inactive(false);
            return;
        }
        let sector = unit.sector_number();
        let kind = match job {
            DmaJob::Read => IoKind::Read,
            DmaJob::Trim => IoKind::Unmap,
            _ => IoKind::Write,
        };
        if job != DmaJob::Trim && !unit.range_ok(sector, count) {
            drive.stats().record_invalid(kind);
            return self.dma_error(u);
        }
        let offset = sector.max(0) as u64 * SECTOR_SIZE;
        let memory = self.memory.clone();
        let mut cursor = ScatterCursor::new(&memory, &list);
        let mut fault = None;
        let started = Instant::now();
        let result = match job {
            DmaJob::Read => dma_read(&drive, offset, bytes, &mut cursor, &mut fault)
                .map_err(|_| DmaIoError::Block),
            DmaJob::Write => dma_write(&drive, offset, bytes, write_cache, &mut cursor, &mut fault)
                .map_err(|_| DmaIoError::Block),
            _ => {
                let total = unit.disk().map_or(0, |d| d.total_sectors);
                dma_trim(&drive, bytes, total, &mut cursor, &mut fault).map_err(|e| match e {
                    TrimError::OutOfRange => {
                        drive.stats().record_invalid(IoKind::Unmap);
                        DmaIoError::TrimOutOfRange
                    }
                })
            }
        };
        let result = match result {
            Ok(()) => Ok(()),
            Err(DmaIoError::TrimOutOfRange) => return self.dma_error(u),
            Err(DmaIoError::Block) => Err(()),
        };
        if job != DmaJob::Trim {
            drive
                .stats()
                .record(kind, offset, bytes, started.elapsed(), result.is_ok());
        }
        if let Some(fault) = fault {
            return self.dma_fault(u, fault);
        }
        if result.is_err() {
            return self.dma_error(u);
        }
        let unit = &mut self.units[u];
        if job != DmaJob::Trim {
            unit.set_sector_number(sector + count as i64);
        }
        unit.tf.nsector = 0;
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        self.raise_irq();
        self.dma_inactive(list.described > bytes);
    }

    // ---- ATAPI ----

    /// The 12-byte command packet arrived.
    fn packet_command(&mut self, u: usize) {
        let unit = &mut self.units[u];
        let mut cdb = [0u8; PACKET_SIZE];
        cdb.copy_from_slice(&unit.buffer[..PACKET_SIZE]);
        let Attachment::Cdrom(cd) = &mut unit.attachment else {
            unit.abort();
            self.raise_irq();
            return;
        };
        let mode = PacketMode {
            dma: unit.atapi_dma,
            byte_count_limit: u16::from(unit.tf.lcyl) | (u16::from(unit.tf.hcyl) << 8),
        };
        match cd.execute(&cdb, mode) {
            PacketResult::Done => self.packet_ok(u),
            PacketResult::Error(sense) => self.packet_error(u, sense),
            PacketResult::UnitAttention => {
                let unit = &mut self.units[u];
                unit.tf.error = 0x60; // UNIT ATTENTION, media change requested
                unit.tf.status = STATUS_ERR;
                unit.tf.nsector = 0;
                unit.transfer_stop();
                self.raise_irq();
            }
            PacketResult::AtaAbort => {
                self.units[u].abort();
                self.raise_irq();
            }
            PacketResult::DataIn(data) => {
                let total = data.len() as u64;
                self.packet_reply_start(u, PacketSource::Buffer(data), total);
            }
            PacketResult::ReadBlocks { count: 0, .. } => self.packet_ok(u),
            PacketResult::ReadBlocks { lba, count } => {
                let total = u64::from(count) * CD_BLOCK_SIZE;
                self.packet_reply_start(u, PacketSource::Blocks { lba }, total);
            }
        }
    }

    fn packet_ok(&mut self, u: usize) {
        let unit = &mut self.units[u];
        unit.packet = None;
        unit.tf.error = 0;
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO | REASON_COD;
        unit.transfer_stop();
        self.raise_irq();
    }

    /// CHECK CONDITION: the sense key in the error register (QEMU's `ide_atapi_cmd_error`).
    fn packet_error(&mut self, u: usize, sense: PacketSense) {
        let unit = &mut self.units[u];
        unit.packet = None;
        unit.tf.error = sense.key << 4;
        unit.tf.status = STATUS_DRDY | STATUS_ERR;
        unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO | REASON_COD;
        unit.transfer_stop();
        self.raise_irq();
    }

    fn packet_reply_start(&mut self, u: usize, source: PacketSource, total: u64) {
        let unit = &mut self.units[u];
        unit.packet = Some(PacketTransfer {
            source,
            total,
            done: 0,
        });
        if unit.atapi_dma {
            self.start_dma(u, DmaJob::Packet);
        } else {
            unit.tf.status = STATUS_DRDY | STATUS_DSC;
            self.packet_reply(u);
        }
    }

    /// The next PIO data block of a packet command (at most the byte count limit the host
    /// put in the cylinder registers), or the command's end.
    fn packet_reply(&mut self, u: usize) {
        let unit = &mut self.units[u];
        let Some(transfer) = &unit.packet else {
            return self.packet_ok(u);
        };
        let remaining = transfer.total - transfer.done;
        if remaining == 0 {
            return self.packet_ok(u);
        }
        unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO;
        let mut limit = u64::from(unit.tf.lcyl) | (u64::from(unit.tf.hcyl) << 8);
        if limit == 0xffff {
            limit = 0xfffe;
        }
        if limit == 0 {
            // A zero byte count limit cannot move data: refuse instead of hanging in DRQ.
            unit.packet = None;
            unit.abort();
            unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO | REASON_COD;
            self.raise_irq();
            return;
        }
        let mut size = remaining;
        if size > limit {
            size = limit & !1;
        }
        unit.tf.lcyl = size as u8;
        unit.tf.hcyl = (size >> 8) as u8;
        let start = transfer.done;
        let chunk = match self.packet_data(u, start, size, false) {
            Ok(chunk) => chunk,
            Err(sense) => return self.packet_error(u, sense),
        };
        let unit = &mut self.units[u];
        if let Some(transfer) = &mut unit.packet {
            transfer.done += size;
        }
        unit.transfer_start(size as usize, OnEnd::PacketReply);
        unit.buffer[..size as usize].copy_from_slice(&chunk);
        self.raise_irq();
    }

    /// Bytes `start..start+len` of the running packet command's data. PIO reads go block
    /// by block, each accounted, as QEMU's do; DMA reads are accounted by the caller.
    fn packet_data(
        &mut self,
        u: usize,
        start: u64,
        len: u64,
        dma: bool,
    ) -> Result<Vec<u8>, PacketSense> {
        let unit = &self.units[u];
        let (Some(transfer), Attachment::Cdrom(cd)) = (&unit.packet, &unit.attachment) else {
            return Ok(vec![0; len as usize]);
        };
        match &transfer.source {
            PacketSource::Buffer(data) => Ok(data[start as usize..(start + len) as usize].to_vec()),
            PacketSource::Blocks { lba } => {
                let first = start / CD_BLOCK_SIZE;
                let last = (start + len - 1) / CD_BLOCK_SIZE;
                let count = (last - first + 1) as u32;
                let mut blocks = vec![0u8; count as usize * CD_BLOCK_SIZE as usize];
                let block = u64::from(*lba) + first;
                if dma {
                    cd.read_blocks(block as u32, count, &mut blocks, false)?;
                } else {
                    for (i, chunk) in blocks.chunks_exact_mut(CD_BLOCK_SIZE as usize).enumerate() {
                        cd.read_blocks((block + i as u64) as u32, 1, chunk, true)?;
                    }
                }
                let skip = (start % CD_BLOCK_SIZE) as usize;
                Ok(blocks[skip..skip + len as usize].to_vec())
            }
        }
    }

    fn run_packet_dma(&mut self, u: usize) {
        let Some((total, offset)) = self.units[u].packet.as_ref().map(|p| {
            let offset = match p.source {
                PacketSource::Blocks { lba } => u64::from(lba) * CD_BLOCK_SIZE,
                PacketSource::Buffer(_) => 0,
            };
            (p.total - p.done, offset)
        }) else {
            return self.dma_error(u);
        };
        let list = match scatter_list(&self.memory, self.bus_master.prd_table, total) {
            Ok(list) => list,
            Err(fault) => return self.dma_fault(u, fault),
        };
        if list.prepared < total {
            self.units[u].tf.status = STATUS_DRDY | STATUS_DSC;
            self.units[u].packet = None;
            self.dma_inactive(false);
            return;
        }
        let memory = self.memory.clone();
        let mut cursor = ScatterCursor::new(&memory, &list);
        let started = Instant::now();
        let mut done = 0;
        let mut failure = None;
        while done < total {
            let len = (total - done).min(PACKET_DMA_CHUNK);
            match self.packet_data(u, done, len, true) {
                Ok(chunk) => {
                    if let Err(fault) = cursor.write_to_guest(&chunk) {
                        failure = Some(Err(fault));
                        break;
                    }
                }
                Err(sense) => {
                    failure = Some(Ok(sense));
                    break;
                }
            }
            done += len;
        }
        if let Attachment::Cdrom(cd) = &self.units[u].attachment {
            cd.account_read(offset, total, started, failure.is_none());
        }
        match failure {
            Some(Ok(sense)) => {
                self.packet_error(u, sense);
                self.dma_inactive(false);
            }
            Some(Err(fault)) => {
                self.units[u].packet = None;
                self.dma_fault(u, fault);
            }
            None => {
                let unit = &mut self.units[u];
                unit.packet = None;
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO | REASON_COD;
                self.raise_irq();
                self.dma_inactive(false);
            }
        }
    }
}

/// A write that is durable on return when the guest turned the write cache off.
fn write_through(
    drive: &Drive,
    offset: u64,
    data: &[u8],
    write_cache: bool,
) -> Result<(), BlockError> {
    let node = drive
        .node()
        .ok_or(BlockError::Unsupported("no medium".into()))?;
    node.write_at(offset, data)?;
    if !write_cache {
        node.flush()?;
    }
    Ok(())
}

/// A TRIM range past the end of the disk.
#[derive(Debug)]
enum TrimError {
    OutOfRange,
}

fn dma_read(
    drive: &Drive,
    offset: u64,
    bytes: u64,
    cursor: &mut ScatterCursor<'_>,
    fault: &mut Option<DmaFault>,
) -> Result<(), BlockError> {
    let node = drive
        .node()
        .ok_or(BlockError::Unsupported("no medium".into()))?;
    let mut buffer = vec![0u8; bytes.min(DMA_CHUNK) as usize];
    let mut done = 0;
    while done < bytes {
        let len = (bytes - done).min(DMA_CHUNK) as usize;
        node.read_at(offset + done, &mut buffer[..len])?;
        if let Err(f) = cursor.write_to_guest(&buffer[..len]) {
            *fault = Some(f);
            return Ok(());
        }
        done += len as u64;
    }
    Ok(())
}

fn dma_write(
    drive: &Drive,
    offset: u64,
    bytes: u64,
    write_cache: bool,
    cursor: &mut ScatterCursor<'_>,
    fault: &mut Option<DmaFault>,
) -> Result<(), BlockError> {
    let mut buffer = vec![0u8; bytes.min(DMA_CHUNK) as usize];
    let mut done = 0;
    while done < bytes {
        let len = (bytes - done).min(DMA_CHUNK) as usize;
        if let Err(f) = cursor.read_from_guest(&mut buffer[..len]) {
            *fault = Some(f);
            return Ok(());
        }
        write_through(drive, offset + done, &buffer[..len], write_cache)?;
        done += len as u64;
    }
    Ok(())
}

/// DATA SET MANAGEMENT / TRIM: 8-byte entries of a 48-bit LBA and a 16-bit count. The
/// drive's discard mode is QEMU's default, `ignore`: every range is checked and accounted as
/// QEMU does, and the image is left as it is.
fn dma_trim(
    drive: &Drive,
    bytes: u64,
    total_sectors: u64,
    cursor: &mut ScatterCursor<'_>,
    fault: &mut Option<DmaFault>,
) -> Result<(), TrimError> {
    let mut ranges = vec![0u8; bytes as usize];
    if let Err(f) = cursor.read_from_guest(&mut ranges) {
        *fault = Some(f);
        return Ok(());
    }
    for entry in ranges.chunks_exact(8) {
        let entry = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
        let sector = entry & 0xffff_ffff_ffff;
        let count = entry >> 48;
        if count == 0 {
            continue;
        }
        if sector > total_sectors || count > total_sectors - sector {
            return Err(TrimError::OutOfRange);
        }
        drive.stats().record(
            IoKind::Unmap,
            sector * SECTOR_SIZE,
            count * SECTOR_SIZE,
            std::time::Duration::ZERO,
            true,
        );
    }
    Ok(())
}
