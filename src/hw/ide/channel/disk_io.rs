//! PIO sector transfers and cache flushes of an ATA disk through the block layer.

use super::*;

impl State {
    /// Runs one block-layer request and accounts it.
    pub(super) fn disk_io(
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
    pub(super) fn sector_read(&mut self, u: usize) {
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
    pub(super) fn sector_write(&mut self, u: usize) {
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

    pub(super) fn flush(&mut self, u: usize) {
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
}

/// A write that is durable on return when the guest turned the write cache off.
pub(super) fn write_through(
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
