//! Bus-master DMA of ATA commands (READ/WRITE DMA, TRIM) and its start, stop and error
//! handling; ATAPI data phases use the same start and completion.

use super::disk_io::write_through;
use super::*;

impl State {
    pub(super) fn start_dma(&mut self, u: usize, job: DmaJob) {
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

    pub(super) fn write_bm_command(&mut self, value: u8) {
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
    pub(super) fn dma_inactive(&mut self, stay_active: bool) {
        self.dma = None;
        if stay_active {
            self.bus_master.status |= BM_STATUS_ACTIVE;
        } else {
            self.bus_master.status &= !BM_STATUS_ACTIVE;
        }
    }

    pub(super) fn dma_error(&mut self, u: usize) {
        self.units[u].abort();
        self.dma_inactive(false);
        self.raise_irq();
    }

    pub(super) fn dma_fault(&mut self, u: usize, _fault: DmaFault) {
        // A PCI master abort: the bus master's error bit, and the command fails.
        self.bus_master.status |= BM_STATUS_ERROR;
        self.dma_error(u);
    }

    pub(super) fn run_dma(&mut self) {
        let Some((u, job)) = self.dma else {
            return;
        };
        match job {
            DmaJob::Read | DmaJob::Write | DmaJob::Trim => self.run_ata_dma(u, job),
            DmaJob::Packet => self.run_packet_dma(u),
        }
    }

    pub(super) fn run_ata_dma(&mut self, u: usize, job: DmaJob) {
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
        let started = Instant::now();
        let result = match job {
            DmaJob::Read => {
                dma_read(&drive, offset, bytes, &mut cursor).map_err(|_| DmaIoError::Block)
            }
            DmaJob::Write => dma_write(&drive, offset, bytes, write_cache, &mut cursor)
                .map_err(|_| DmaIoError::Block),
            _ => {
                let total = unit.disk().map_or(0, |d| d.total_sectors);
                dma_trim(&drive, bytes, total, &mut cursor).map_err(|e| match e {
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
) -> Result<(), BlockError> {
    let node = drive
        .node()
        .ok_or(BlockError::Unsupported("no medium".into()))?;
    let mut buffer = vec![0u8; bytes.min(DMA_CHUNK) as usize];
    let mut done = 0;
    while done < bytes {
        let len = (bytes - done).min(DMA_CHUNK) as usize;
        node.read_at(offset + done, &mut buffer[..len])?;
        cursor.write_to_guest(&buffer[..len]);
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
) -> Result<(), BlockError> {
    let mut buffer = vec![0u8; bytes.min(DMA_CHUNK) as usize];
    let mut done = 0;
    while done < bytes {
        let len = (bytes - done).min(DMA_CHUNK) as usize;
        cursor.read_from_guest(&mut buffer[..len]);
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
) -> Result<(), TrimError> {
    let mut ranges = vec![0u8; bytes as usize];
    cursor.read_from_guest(&mut ranges);
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
