//! The ATAPI PACKET protocol: the command packet, the device's answer, and the data phase
//! in byte-count-limited PIO blocks or by DMA, with QEMU's interrupt reasons.

use super::*;

impl State {
    /// The 12-byte command packet arrived.
    pub(super) fn packet_command(&mut self, u: usize) {
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
            // QEMU aborts without raising the interrupt here.
            PacketResult::AtaAbort => self.units[u].abort(),
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

    pub(super) fn packet_ok(&mut self, u: usize) {
        let unit = &mut self.units[u];
        unit.packet = None;
        unit.tf.error = 0;
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO | REASON_COD;
        unit.transfer_stop();
        self.raise_irq();
    }

    /// CHECK CONDITION: the sense key in the error register (QEMU's `ide_atapi_cmd_error`).
    pub(super) fn packet_error(&mut self, u: usize, sense: PacketSense) {
        let unit = &mut self.units[u];
        unit.packet = None;
        unit.tf.error = sense.key << 4;
        unit.tf.status = STATUS_DRDY | STATUS_ERR;
        unit.tf.nsector = (unit.tf.nsector & !7) | REASON_IO | REASON_COD;
        unit.transfer_stop();
        self.raise_irq();
    }

    pub(super) fn packet_reply_start(&mut self, u: usize, source: PacketSource, total: u64) {
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
    pub(super) fn packet_reply(&mut self, u: usize) {
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
    pub(super) fn packet_data(
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

    pub(super) fn run_packet_dma(&mut self, u: usize) {
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
                Ok(chunk) => cursor.write_to_guest(&chunk),
                Err(sense) => {
                    failure = Some(sense);
                    break;
                }
            }
            done += len;
        }
        if let Attachment::Cdrom(cd) = &self.units[u].attachment {
            cd.account_read(offset, total, started, failure.is_none());
        }
        match failure {
            Some(sense) => {
                self.packet_error(u, sense);
                self.dma_inactive(false);
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
