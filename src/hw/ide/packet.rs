//! What an IDE channel needs from an ATAPI device model: the channel runs the PACKET
//! protocol (command packet, interrupt reason, byte count limit, PIO or DMA data phase) and
//! asks the device what each 12-byte command does. `atapi::Atapi` is the CD-ROM model.

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
    /// CHECK CONDITION.
    Error(PacketSense),
}

/// An ATAPI device behind a channel.
pub trait PacketDevice: Send {
    /// IDENTIFY PACKET DEVICE data.
    fn identify(&self, serial: &str) -> [u16; 256];
    /// Runs one packet command.
    fn execute(&mut self, cdb: &[u8; 12]) -> PacketResult;
    /// Reads `count` blocks from `lba` into `buf` (`count * 2048` bytes).
    fn read_blocks(&self, lba: u32, count: u32, buf: &mut [u8]) -> Result<(), PacketSense>;
    /// Device reset (DEVICE RESET, SRST, system reset).
    fn reset(&mut self);
}
