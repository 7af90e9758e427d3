//! The PIIX3 IDE function (00:01.1): two legacy ATA channels (0x1F0/0x3F6 on IRQ 14,
//! 0x170/0x376 on IRQ 15) with up to two devices each, bus-master DMA through PRD tables in
//! guest memory, ATA hard disks with QEMU 7.2's identity and the ATAPI PACKET protocol for
//! CD-ROM drives. All data goes through the block layer's [`crate::block::drive::Drive`].
//!
//! - [`piix`]: the PCI function and the port windows it answers.
//! - [`channel`]: one channel's task file registers, command execution and data phases.
//! - [`bmdma`]: the bus-master registers and the PRD walk.
//! - [`identify`] and [`geometry`]: what IDENTIFY DEVICE reports, as QEMU computes it.
//! - [`packet`]: what the channel needs from an ATAPI device model.
//! - [`cmos`]: what the board tells the BIOS about the disks.

pub mod bmdma;
pub mod channel;
pub mod cmos;
pub mod geometry;
pub mod identify;
pub mod packet;
pub mod piix;

#[cfg(test)]
mod tests;

pub use channel::Channel;
pub use piix::{PiixIde, PIIX3_IDE_DEVICE_ID};

/// Channel 0's ISA interrupt and ports.
pub const PRIMARY_IRQ: u32 = 14;
pub const PRIMARY_COMMAND_BASE: u16 = 0x1f0;
pub const PRIMARY_CONTROL_PORT: u16 = 0x3f6;
/// Channel 1's.
pub const SECONDARY_IRQ: u32 = 15;
pub const SECONDARY_COMMAND_BASE: u16 = 0x170;
pub const SECONDARY_CONTROL_PORT: u16 = 0x376;
/// The command block is eight ports; the control block one (the next port belongs to the
/// floppy controller on a PC).
pub const COMMAND_BLOCK_LEN: u16 = 8;
