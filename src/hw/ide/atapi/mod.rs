//! The ATAPI CD-ROM packet command set (`-cdrom`, `media=cdrom`, `-device ide-cd`), answering
//! as QEMU 7.2's `ide-cd` does, byte for byte. Read-only media of 2048-byte blocks.
//!
//! The IDE layer moves the 12-byte packet in and the data out; this module decides what a
//! command answers: data, a block range to read, success, or a sense code. QEMU builds every
//! reply in one buffer that also held the packet and earlier replies, and a few replies
//! (MODE SENSE page 0x0e) leave bytes of that buffer unwritten, so [`io_buffer`] keeps the
//! same buffer to answer those bytes identically.
//!
//! Unit attention follows QEMU 7.2: there is none at power-on or after reset; after a medium
//! change the next command that does not allow unit attention fails with NOT READY / MEDIUM
//! NOT PRESENT, the one after with UNIT ATTENTION / MEDIUM MAY HAVE CHANGED, and that unit
//! attention then blocks such commands until REQUEST SENSE reports it.

mod commands;
mod identify;
mod io_buffer;
mod toc;

#[cfg(test)]
mod qemu_reference;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::block::drive::{Drive, DriveSlot, IoKind};

use io_buffer::IoBuffer;

/// Bytes of a logical block of the medium.
pub const BLOCK_SIZE: usize = 2048;
/// Bytes of a raw CD sector (READ CD with all header fields).
pub const RAW_SECTOR_SIZE: usize = 2352;

/// Sense keys QEMU's ATAPI emulation reports.
pub mod sense_key {
    pub const NO_SENSE: u8 = 0x00;
    pub const NOT_READY: u8 = 0x02;
    pub const ILLEGAL_REQUEST: u8 = 0x05;
    pub const UNIT_ATTENTION: u8 = 0x06;
}

/// Additional sense codes QEMU's ATAPI emulation reports (its ASCQ is always 0).
pub mod asc {
    pub const ILLEGAL_OPCODE: u8 = 0x20;
    pub const LOGICAL_BLOCK_OUT_OF_RANGE: u8 = 0x21;
    pub const INVALID_FIELD_IN_CDB: u8 = 0x24;
    pub const MEDIUM_MAY_HAVE_CHANGED: u8 = 0x28;
    pub const INCOMPATIBLE_FORMAT: u8 = 0x30;
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: u8 = 0x39;
    pub const MEDIUM_NOT_PRESENT: u8 = 0x3a;
    pub const DATA_PHASE_ERROR: u8 = 0x4b;
    pub const MEDIA_REMOVAL_PREVENTED: u8 = 0x53;
}

/// A SCSI sense triple: what REQUEST SENSE reports after a failed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    pub const fn new(key: u8, asc: u8) -> Sense {
        Sense { key, asc, ascq: 0 }
    }

    /// The ATA error register after a failed packet command: the sense key in bits 7-4.
    pub fn error_register(&self) -> u8 {
        self.key << 4
    }
}

/// What a packet command asks of the IDE layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketOutcome {
    /// Finished without data: status DRDY|DSC, interrupt reason I/O|C/D.
    Done,
    /// Data for the host, already cut to the command's allocation length. Empty data ends the
    /// command as [`PacketOutcome::Done`] does in PIO mode (in DMA mode QEMU still starts the
    /// DMA engine, which finishes at once).
    DataIn(Vec<u8>),
    /// Read `count` 2048-byte blocks from `lba` with [`Atapi::read_blocks`] and send them.
    /// The range is checked against the medium; `count` is at least 1.
    ReadBlocks { lba: u32, count: u32 },
    /// The command failed with this sense: error register `key << 4`, status DRDY|ERR,
    /// interrupt reason I/O|C/D.
    Error(Sense),
}

/// How the host issued the PACKET command: ATA Features bit 0 (DMA) and the byte count
/// limit in LBA mid/high (QEMU treats 0xffff as 0xfffe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketTransfer {
    pub dma: bool,
    pub byte_count_limit: u16,
}

impl PacketTransfer {
    /// A DMA transfer, for which QEMU ignores the byte count limit.
    pub const DMA: PacketTransfer = PacketTransfer {
        dma: true,
        byte_count_limit: 0,
    };

    /// QEMU's check before a data transfer: DMA, or PIO with a non-zero byte count limit.
    fn byte_count_limit_valid(self) -> bool {
        self.dma || self.byte_count_limit != 0
    }
}

/// The complete answer to a packet command, for an IDE layer that reproduces every
/// register QEMU sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketReply {
    /// The command ran (or failed with a sense) as [`PacketOutcome`] describes.
    Outcome(PacketOutcome),
    /// A unit attention is pending and the command may not run under one (QEMU's
    /// `ide_atapi_cmd_check_status`): error register 0x60 (UNIT ATTENTION with MC), status ERR
    /// without DRDY, sector count register 0. The sense stays pending for REQUEST SENSE.
    UnitAttentionPending,
    /// A PIO data command with byte count limit 0: aborted at the ATA level (error ABRT,
    /// status DRDY|ERR, sector count untouched); the sense data is unchanged.
    AtaAbort,
}

/// The medium-change sequence QEMU reports to commands that do not allow unit attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MediumChange {
    None,
    /// Next such command: NOT READY / MEDIUM NOT PRESENT (the guest sees the old medium go).
    ReportRemoved,
    /// Next such command: UNIT ATTENTION / MEDIUM MAY HAVE CHANGED.
    ReportChanged,
}

/// Drive state that packet commands read and change (QEMU's `IDEState` ATAPI fields).
#[derive(Debug)]
struct DeviceState {
    serial: String,
    tray_open: bool,
    tray_locked: bool,
    medium_change: MediumChange,
    /// GET EVENT STATUS NOTIFICATION's pending media events.
    new_media_event: bool,
    eject_request_event: bool,
    /// DEVICE_TRAY_MOVED events not yet taken (`true`: opened).
    tray_moves: Vec<bool>,
}

/// The sense data REQUEST SENSE reports (QEMU keeps it across successful commands).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SenseState {
    key: u8,
    asc: u8,
}

/// State that the `&self` methods (IDENTIFY, block reads) also change.
struct Shared {
    io: IoBuffer,
    sense: SenseState,
}

/// The medium as packet commands see it.
#[derive(Clone, Copy, Debug)]
struct Media {
    /// A medium is in the drive (QEMU's `blk_is_inserted`).
    inserted: bool,
    /// Size in 512-byte sectors (QEMU's `nb_sectors`), 0 without a medium.
    sectors_512: u64,
    tray_open: bool,
}

/// QEMU's `CD_MAX_SECTORS`: media larger than 80 minutes of 2048-byte frames are DVDs.
const CD_MAX_SECTORS_512: u64 = 80 * 60 * 75 * 4;

impl Media {
    /// QEMU's `media_present`: the tray is closed and there are sectors.
    fn present(&self) -> bool {
        !self.tray_open && self.sectors_512 > 0
    }

    fn is_dvd(&self) -> bool {
        self.present() && self.sectors_512 > CD_MAX_SECTORS_512
    }

    fn is_cd(&self) -> bool {
        self.present() && self.sectors_512 <= CD_MAX_SECTORS_512
    }

    /// Logical blocks of 2048 bytes (QEMU's `nb_sectors >> 2`).
    fn blocks(&self) -> u64 {
        self.sectors_512 >> 2
    }
}

/// An ATAPI CD-ROM drive's command interpreter.
pub struct Atapi {
    drive: Arc<Drive>,
    device: DeviceState,
    shared: Mutex<Shared>,
}

impl Atapi {
    /// A drive reading `drive`'s medium (none for an empty drive). The serial number
    /// defaults to QEMU's for the drive's IDE position (`QM00001`..`QM00004`); see
    /// [`Atapi::set_serial`].
    pub fn new(drive: Arc<Drive>) -> Atapi {
        let serial = match drive.slot() {
            DriveSlot::Ide { bus, unit } => default_serial(bus, unit),
            DriveSlot::Unattached => String::new(),
        };
        Atapi {
            drive,
            device: DeviceState {
                serial,
                tray_open: false,
                tray_locked: false,
                medium_change: MediumChange::None,
                new_media_event: false,
                eject_request_event: false,
                tray_moves: Vec::new(),
            },
            shared: Mutex::new(Shared {
                io: IoBuffer::new(),
                sense: SenseState::default(),
            }),
        }
    }

    /// The serial number INQUIRY's device identification page reports (`serial=`, or QEMU's
    /// `QM%05d` by the IDE unit's creation order when the IDE layer knows it better).
    pub fn set_serial(&mut self, serial: &str) {
        self.device.serial = serial.to_string();
    }

    /// IDENTIFY PACKET DEVICE data, QEMU 7.2's words for ide-cd (model "QEMU DVD-ROM",
    /// firmware "2.5+", serial as given). QEMU computes these once and then only SET FEATURES
    /// (transfer mode, words 62, 63 and 88) changes them; the IDE layer keeps that copy.
    pub fn identify(&self, serial: &str) -> [u16; 256] {
        let words = identify::identify_packet_device(serial);
        // QEMU copies the data through its I/O buffer, where later replies may show it.
        self.shared().io.store_words(&words);
        words
    }

    /// Runs one packet command (12-byte CDB) as if issued by DMA, where QEMU ignores the
    /// byte count limit. A pending unit attention that blocks the command is reported as
    /// `Error(UNIT ATTENTION / current ASC)`; [`Atapi::execute_packet`] tells it apart.
    pub fn execute(&mut self, cdb: &[u8; 12]) -> PacketOutcome {
        match self.execute_packet(cdb, PacketTransfer::DMA) {
            PacketReply::Outcome(outcome) => outcome,
            PacketReply::UnitAttentionPending => {
                let sense = self.shared().sense;
                PacketOutcome::Error(Sense::new(sense.key, sense.asc))
            }
            // Cannot happen for DMA; kept total rather than panicking.
            PacketReply::AtaAbort => PacketOutcome::Error(Sense::new(
                sense_key::ILLEGAL_REQUEST,
                asc::INVALID_FIELD_IN_CDB,
            )),
        }
    }

    /// Runs one packet command with the transfer mode the host chose, reporting every
    /// outcome QEMU distinguishes in the ATA registers.
    pub fn execute_packet(&mut self, cdb: &[u8; 12], transfer: PacketTransfer) -> PacketReply {
        let media = self.media();
        let shared = self
            .shared
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let node = self.drive.node();
        let mut exec = commands::Exec {
            buf: shared.io.bytes_mut(),
            sense: &mut shared.sense,
            device: &mut self.device,
            media,
            transfer,
            node: node.as_deref(),
            stats: self.drive.stats(),
        };
        exec.buf[..12].copy_from_slice(cdb);
        let step = commands::run(&mut exec);
        match step {
            commands::Step::Ok => PacketReply::Outcome(PacketOutcome::Done),
            commands::Step::Reply { size, max_len } => {
                let len = size.min(max_len).min(exec.buf.len());
                PacketReply::Outcome(PacketOutcome::DataIn(exec.buf[..len].to_vec()))
            }
            commands::Step::Data(data) => PacketReply::Outcome(PacketOutcome::DataIn(data)),
            commands::Step::Read { lba, count } => {
                PacketReply::Outcome(PacketOutcome::ReadBlocks { lba, count })
            }
            commands::Step::Fail { key, asc } => {
                exec.sense.key = key;
                exec.sense.asc = asc;
                PacketReply::Outcome(PacketOutcome::Error(Sense::new(key, asc)))
            }
            commands::Step::UnitAttentionPending => PacketReply::UnitAttentionPending,
            commands::Step::AtaAbort => PacketReply::AtaAbort,
        }
    }

    /// Reads `count` 2048-byte blocks from `lba` into `buf` (for ReadBlocks outcomes) and
    /// accounts one read request of that size in the drive's statistics. QEMU accounts a
    /// PIO read per block and a DMA read once per command: call this per block in PIO mode,
    /// and use [`Atapi::read_blocks_unaccounted`] plus [`Atapi::account_read`] for DMA.
    ///
    /// The data also lands in the I/O buffer as in QEMU, which reads a PIO transfer block by
    /// block and a DMA transfer in chunks of up to 64 blocks into it: calling this (or the
    /// unaccounted variant) with QEMU's chunks keeps later replies byte-identical.
    pub fn read_blocks(&self, lba: u32, count: u32, buf: &mut [u8]) -> Result<(), Sense> {
        let start = Instant::now();
        let result = self.read_blocks_unaccounted(lba, count, buf);
        self.account_read(
            u64::from(lba) * BLOCK_SIZE as u64,
            u64::from(count) * BLOCK_SIZE as u64,
            start,
            result.is_ok(),
        );
        result
    }

    /// [`Atapi::read_blocks`] without touching the statistics.
    pub fn read_blocks_unaccounted(
        &self,
        lba: u32,
        count: u32,
        buf: &mut [u8],
    ) -> Result<(), Sense> {
        let result = self.read_medium(lba, count, buf);
        let mut shared = self.shared();
        match result {
            Ok(()) => {
                shared.io.store(buf);
                Ok(())
            }
            Err(sense) => {
                shared.sense = SenseState {
                    key: sense.key,
                    asc: sense.asc,
                };
                Err(sense)
            }
        }
    }

    /// Accounts one guest read of `bytes` bytes at byte `offset` that started at `start`
    /// (for DMA transfers, and for DMA replies, which QEMU accounts as reads too).
    pub fn account_read(&self, offset: u64, bytes: u64, start: Instant, ok: bool) {
        self.drive
            .stats()
            .record(IoKind::Read, offset, bytes, start.elapsed(), ok);
    }

    /// Power-on or device reset (QEMU's `ide_reset`): clears the sense data, the pending
    /// medium-change report and the tray lock, and closes the tray.
    pub fn reset(&mut self) {
        let shared = self
            .shared
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shared.sense = SenseState::default();
        shared.io.reset_pattern();
        self.device.medium_change = MediumChange::None;
        self.device.tray_locked = false;
        self.device.tray_open = false;
    }

    /// The medium was inserted (`loaded`) or removed behind the guest's back (QEMU's
    /// `change_media_cb`): the tray follows, and the guest is told on its next commands.
    pub fn change_medium(&mut self, loaded: bool) {
        self.device.tray_open = !loaded;
        self.device.medium_change = MediumChange::ReportRemoved;
        self.device.new_media_event = true;
        self.device.eject_request_event = false;
    }

    /// The host asked to eject (`eject` without force waits for the guest): GET EVENT
    /// STATUS NOTIFICATION reports an eject request; `force` also unlocks the tray.
    pub fn request_eject(&mut self, force: bool) {
        self.device.eject_request_event = true;
        if force {
            self.device.tray_locked = false;
        }
    }

    /// Whether the tray is open (`query-block`'s `tray_open`).
    pub fn tray_open(&self) -> bool {
        self.device.tray_open
    }

    /// Whether the guest locked the tray (`query-block`'s `locked`).
    pub fn tray_locked(&self) -> bool {
        self.device.tray_locked
    }

    /// Tray movements by the guest (START STOP UNIT) since the last call, oldest first,
    /// `true` for opened: each is a DEVICE_TRAY_MOVED event.
    pub fn take_tray_moves(&mut self) -> Vec<bool> {
        std::mem::take(&mut self.device.tray_moves)
    }

    /// The sense data REQUEST SENSE would report now.
    pub fn sense(&self) -> Sense {
        let sense = self.shared().sense;
        Sense::new(sense.key, sense.asc)
    }

    /// Number of 2048-byte blocks of the medium (0 without one or with the tray open).
    pub fn capacity_blocks(&self) -> u64 {
        let media = self.media();
        if media.present() {
            media.blocks()
        } else {
            0
        }
    }

    fn media(&self) -> Media {
        let sectors_512 = self
            .drive
            .node()
            .and_then(|node| node.virtual_size().ok())
            .map_or(0, |size| size / 512);
        Media {
            inserted: self.drive.node().is_some(),
            sectors_512,
            tray_open: self.device.tray_open,
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads whole blocks, with QEMU's sense for failures: NOT READY without a medium,
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE for anything else.
    fn read_medium(&self, lba: u32, count: u32, buf: &mut [u8]) -> Result<(), Sense> {
        let out_of_range = Sense::new(sense_key::ILLEGAL_REQUEST, asc::LOGICAL_BLOCK_OUT_OF_RANGE);
        let Some(node) = self.drive.node() else {
            return Err(Sense::new(sense_key::NOT_READY, asc::MEDIUM_NOT_PRESENT));
        };
        if self.device.tray_open {
            return Err(Sense::new(sense_key::NOT_READY, asc::MEDIUM_NOT_PRESENT));
        }
        let len = u64::from(count) * BLOCK_SIZE as u64;
        if buf.len() as u64 != len {
            return Err(out_of_range);
        }
        node.read_at(u64::from(lba) * BLOCK_SIZE as u64, buf)
            .map_err(|_| out_of_range)
    }
}

/// QEMU numbers IDE units in creation order from 1 (`QM%05d`): on `pc` that is bus 0
/// master, bus 0 slave, bus 1 master, bus 1 slave.
fn default_serial(bus: u32, unit: u32) -> String {
    format!("QM{:05}", bus * 2 + unit + 1)
}
