//! The CD-ROM model ([`super::atapi::Atapi`]) as the channel's packet device.

use std::time::Instant;

use super::atapi::{Atapi, PacketOutcome, PacketReply, PacketTransfer, Sense};
use super::packet::{PacketDevice, PacketMode, PacketResult, PacketSense};

fn sense(s: Sense) -> PacketSense {
    PacketSense {
        key: s.key,
        asc: s.asc,
        ascq: s.ascq,
    }
}

impl PacketDevice for Atapi {
    fn identify(&self, serial: &str) -> [u16; 256] {
        Atapi::identify(self, serial)
    }

    fn execute(&mut self, cdb: &[u8; 12], mode: PacketMode) -> PacketResult {
        let transfer = PacketTransfer {
            dma: mode.dma,
            byte_count_limit: mode.byte_count_limit,
        };
        match self.execute_packet(cdb, transfer) {
            PacketReply::Outcome(PacketOutcome::Done) => PacketResult::Done,
            PacketReply::Outcome(PacketOutcome::DataIn(data)) => PacketResult::DataIn(data),
            PacketReply::Outcome(PacketOutcome::ReadBlocks { lba, count }) => {
                PacketResult::ReadBlocks { lba, count }
            }
            PacketReply::Outcome(PacketOutcome::Error(s)) => PacketResult::Error(sense(s)),
            PacketReply::UnitAttentionPending => PacketResult::UnitAttention,
            PacketReply::AtaAbort => PacketResult::AtaAbort,
        }
    }

    fn read_blocks(
        &self,
        lba: u32,
        count: u32,
        buf: &mut [u8],
        account: bool,
    ) -> Result<(), PacketSense> {
        let result = if account {
            Atapi::read_blocks(self, lba, count, buf)
        } else {
            self.read_blocks_unaccounted(lba, count, buf)
        };
        result.map_err(sense)
    }

    fn account_read(&self, offset: u64, bytes: u64, start: Instant, ok: bool) {
        Atapi::account_read(self, offset, bytes, start, ok);
    }

    fn reset(&mut self) {
        Atapi::reset(self);
    }
}
