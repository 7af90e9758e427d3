//! What an IDE channel needs from an ATAPI device model: the channel runs the PACKET
//! protocol (command packet, interrupt reason, byte count limit, PIO or DMA data phase) and
//! asks the device what each 12-byte command does. The CD-ROM model is `atapi::Atapi`.

use std::time::Instant;

/// A SCSI sense triple, reported in the error register (key) and by REQUEST SENSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// The result of one packet command.
#[derive(Debug, PartialEq, Eq)]
pub enum PacketResult {
    /// No data phase.
    Done,
    /// Data for the host (already cut to the command's allocation length).
    DataIn(Vec<u8>),
    /// `count` 2048-byte blocks from `lba`, fetched with [`PacketDevice::read_blocks`] as the
    /// data phase proceeds.
    ReadBlocks { lba: u32, count: u32 },
    /// CHECK CONDITION: ERR, the sense key in the error register.
    Error(PacketSense),
    /// A unit attention is pending and the command may not run (QEMU's
    /// `ide_atapi_cmd_check_status`): error 0x60, status ERR alone, sector count 0.
    UnitAttention,
    /// A PIO data command with a zero byte count limit: aborted at the ATA level.
    AtaAbort,
}

/// How the host issued the PACKET command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMode {
    /// Features bit 0: the data phase goes through the bus master.
    pub dma: bool,
    /// The cylinder registers: the most a PIO data block may carry.
    pub byte_count_limit: u16,
}

/// An ATAPI device behind a channel.
pub trait PacketDevice: Send {
    /// IDENTIFY PACKET DEVICE data.
    fn identify(&self, serial: &str) -> [u16; 256];
    /// Runs one packet command.
    fn execute(&mut self, cdb: &[u8; 12], mode: PacketMode) -> PacketResult;
    /// Reads `count` blocks from `lba` into `buf` (`count * 2048` bytes); `account` records
    /// the read in the drive's statistics (QEMU accounts PIO reads per block, DMA reads once
    /// per command through [`PacketDevice::account_read`]).
    fn read_blocks(
        &self,
        lba: u32,
        count: u32,
        buf: &mut [u8],
        account: bool,
    ) -> Result<(), PacketSense>;
    /// Accounts one DMA data phase of `bytes` bytes at byte `offset` begun at `start`.
    fn account_read(&self, offset: u64, bytes: u64, start: Instant, ok: bool);
    /// Device reset (DEVICE RESET, SRST, system reset).
    fn reset(&mut self);
}
