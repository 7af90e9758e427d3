//! Bus-master IDE DMA (SFF-8038i as on the PIIX3): per channel a command register (start
//! bit), a status register (active, error, interrupt, drive-capable bits) and the address of
//! a table of physical region descriptors (PRDs) in guest memory. Each PRD is a 32-bit buffer
//! address and a 16-bit byte count (0 meaning 64 KiB) whose bit 31 marks the last entry.
//!
//! Everything the guest wrote is checked: the table and every buffer are accessed through
//! vm-memory's checked accessors, a table is never followed past one 4 KiB page of entries
//! (QEMU's fail-safe for tables without an end mark), and a table outside RAM is an error
//! the channel reports to the guest. Buffers outside RAM behave as on QEMU 7.2: writes to
//! them are dropped and reads give zeros, and the transfer completes.

use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

/// Command register: start/stop bus master; direction (set: the device writes memory).
pub const BM_CMD_START: u8 = 0x01;
const BM_CMD_WRITABLE: u8 = 0x09;
/// Status register bits.
pub const BM_STATUS_ACTIVE: u8 = 0x01;
pub const BM_STATUS_ERROR: u8 = 0x02;
pub const BM_STATUS_INT: u8 = 0x04;
/// "Drive 0/1 DMA capable": firmware-owned scratch bits.
const BM_STATUS_CAPABLE: u8 = 0x60;
/// Register offsets within a channel's 8-byte block.
pub const BM_COMMAND: u16 = 0;
pub const BM_STATUS: u16 = 2;
pub const BM_PRD_ADDRESS: u16 = 4;

const PRD_SIZE: u64 = 8;
const PRD_LAST: u32 = 0x8000_0000;
/// A table is followed for at most this many bytes of descriptors.
const PRD_TABLE_LIMIT: u64 = 4096;

/// One channel's bus-master registers.
#[derive(Clone, Debug, Default)]
pub struct BusMaster {
    pub command: u8,
    pub status: u8,
    pub prd_table: u32,
}

/// What a guest write to the command register asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartStop {
    Unchanged,
    Started,
    Stopped,
}

impl BusMaster {
    /// Power-on and system reset state.
    pub fn reset(&mut self) {
        *self = BusMaster::default();
    }

    /// A byte write to the command register. Setting the start bit makes the channel active
    /// (unless it still is); clearing it stops it.
    pub fn write_command(&mut self, value: u8) -> StartStop {
        let change = if (value ^ self.command) & BM_CMD_START == 0 {
            StartStop::Unchanged
        } else if value & BM_CMD_START != 0 {
            StartStop::Started
        } else {
            self.status &= !BM_STATUS_ACTIVE;
            StartStop::Stopped
        };
        self.command = value & BM_CMD_WRITABLE;
        change
    }

    /// A byte write to the status register: the capable bits are stored, error and
    /// interrupt are cleared by writing 1, active is read-only.
    pub fn write_status(&mut self, value: u8) {
        self.status = (value & BM_STATUS_CAPABLE)
            | (self.status & BM_STATUS_ACTIVE)
            | (self.status & !value & (BM_STATUS_ERROR | BM_STATUS_INT));
    }

    /// Reads `width` bytes of the PRD address register from byte `offset`.
    pub fn read_address(&self, offset: u16, width: usize) -> u32 {
        let mask = if width >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * width)) - 1
        };
        self.prd_table
            .checked_shr(8 * u32::from(offset))
            .unwrap_or(0)
            & mask
    }

    /// Writes `width` bytes at byte `offset` of the PRD address register (dword aligned).
    pub fn write_address(&mut self, offset: u16, width: usize, value: u32) {
        let mask = if width >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * width)) - 1
        };
        let shift = 8 * u32::from(offset);
        let (Some(field), Some(data)) =
            (mask.checked_shl(shift), (value & mask).checked_shl(shift))
        else {
            return;
        };
        self.prd_table = ((self.prd_table & !field) | data) & !3;
    }
}

/// A guest-controlled DMA setup the device cannot carry out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DmaFault {
    #[error("PRD table entry at {0:#x} is outside guest memory")]
    TableOutsideMemory(u64),
}

/// The buffers a PRD table describes for one transfer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScatterList {
    /// Guest buffers covering at most the requested length, in order.
    pub segments: Vec<(u64, u64)>,
    /// Bytes in `segments`.
    pub prepared: u64,
    /// Bytes all the descriptors read describe (may exceed the request).
    pub described: u64,
}

/// Walks the table at `table` until its last entry (or the 4 KiB fail-safe), keeping
/// segments for the first `limit` bytes, as the PIIX does for one transfer.
pub fn scatter_list(
    memory: &GuestMemoryMmap,
    table: u32,
    limit: u64,
) -> Result<ScatterList, DmaFault> {
    let mut list = ScatterList::default();
    let mut offset = 0;
    while offset < PRD_TABLE_LIMIT {
        let entry_addr = u64::from(table) + offset;
        let mut entry = [0u8; 8];
        memory
            .read_slice(&mut entry, GuestAddress(entry_addr))
            .map_err(|_| DmaFault::TableOutsideMemory(entry_addr))?;
        offset += PRD_SIZE;
        let addr = u64::from(u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes")));
        let control = u32::from_le_bytes(entry[4..8].try_into().expect("4 bytes"));
        let len = match u64::from(control & 0xfffe) {
            0 => 0x1_0000,
            len => len,
        };
        let take = len.min(limit - list.prepared);
        if take > 0 {
            list.segments.push((addr, take));
            list.prepared += take;
        }
        list.described += len;
        if control & PRD_LAST != 0 {
            break;
        }
    }
    Ok(list)
}

/// Copies data between a byte stream and the guest buffers of a [`ScatterList`], in order.
pub struct ScatterCursor<'a> {
    memory: &'a GuestMemoryMmap,
    segments: &'a [(u64, u64)],
    index: usize,
    within: u64,
}

impl<'a> ScatterCursor<'a> {
    pub fn new(memory: &'a GuestMemoryMmap, list: &'a ScatterList) -> ScatterCursor<'a> {
        ScatterCursor {
            memory,
            segments: &list.segments,
            index: 0,
            within: 0,
        }
    }

    /// The next piece of guest buffer, at most `max` bytes; `None` when the list is used up.
    fn next_piece(&mut self, max: u64) -> Option<(u64, u64)> {
        while let Some(&(addr, len)) = self.segments.get(self.index) {
            if self.within < len {
                let take = (len - self.within).min(max);
                let piece = (addr + self.within, take);
                self.within += take;
                return Some(piece);
            }
            self.index += 1;
            self.within = 0;
        }
        None
    }

    /// Writes `data` to guest memory (a device-to-memory transfer). Bytes aimed at
    /// addresses without RAM are dropped, as QEMU 7.2 drops them: the transfer completes.
    pub fn write_to_guest(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let Some((addr, len)) = self.next_piece(data.len() as u64) else {
                return;
            };
            let (now, rest) = data.split_at(len as usize);
            for_each_ram_run(self.memory, addr, now.len(), |guest, at, range| {
                // Cannot fail: the run lies inside one RAM region.
                let _ = guest.write_slice(&now[range], at);
            });
            data = rest;
        }
    }

    /// Fills `out` from guest memory (a memory-to-device transfer). Addresses without RAM
    /// read as zeros, as QEMU 7.2's unassigned memory does.
    pub fn read_from_guest(&mut self, mut out: &mut [u8]) {
        while !out.is_empty() {
            let Some((addr, len)) = self.next_piece(out.len() as u64) else {
                return;
            };
            let (now, rest) = std::mem::take(&mut out).split_at_mut(len as usize);
            now.fill(0);
            for_each_ram_run(self.memory, addr, now.len(), |guest, at, range| {
                // Cannot fail: the run lies inside one RAM region.
                let _ = guest.read_slice(&mut now[range], at);
            });
            out = rest;
        }
    }
}

/// Calls `visit(memory, guest address, byte range within the buffer)` for each part of
/// `addr..addr+len` that guest RAM backs, skipping the holes.
fn for_each_ram_run(
    memory: &GuestMemoryMmap,
    addr: u64,
    len: usize,
    mut visit: impl FnMut(&GuestMemoryMmap, GuestAddress, std::ops::Range<usize>),
) {
    let end = addr + len as u64;
    for region in memory.iter() {
        let start = region.start_addr().raw_value().max(addr);
        let stop = (region.start_addr().raw_value() + region.len()).min(end);
        if start < stop {
            let range = (start - addr) as usize..(stop - addr) as usize;
            visit(memory, GuestAddress(start), range);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn put_prd(memory: &GuestMemoryMmap, at: u64, addr: u32, control: u32) {
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&addr.to_le_bytes());
        entry[4..].copy_from_slice(&control.to_le_bytes());
        memory.write_slice(&entry, GuestAddress(at)).unwrap();
    }

    #[test]
    fn registers_follow_the_piix_rules() {
        let mut bm = BusMaster::default();
        assert_eq!(bm.write_command(0xff), StartStop::Started);
        assert_eq!(bm.command, 0x09);
        assert_eq!(bm.write_command(0x09), StartStop::Unchanged);
        bm.status = BM_STATUS_ACTIVE | BM_STATUS_INT | BM_STATUS_ERROR;
        bm.write_status(0x60 | BM_STATUS_INT | BM_STATUS_ACTIVE);
        assert_eq!(
            bm.status,
            0x60 | BM_STATUS_ACTIVE | BM_STATUS_ERROR,
            "active is read-only, interrupt cleared by writing 1"
        );
        assert_eq!(bm.write_command(0), StartStop::Stopped);
        assert_eq!(bm.status & BM_STATUS_ACTIVE, 0);
        bm.write_address(0, 4, 0x1234_5677);
        assert_eq!(bm.prd_table, 0x1234_5674, "dword aligned");
        bm.write_address(2, 2, 0xabcd);
        assert_eq!(bm.prd_table, 0xabcd_5674);
        assert_eq!(bm.read_address(1, 1), 0x56);
        assert_eq!(bm.read_address(0, 4), 0xabcd_5674);
    }

    #[test]
    fn zero_length_means_64k_and_extra_descriptors_are_consumed() {
        let mem = memory();
        put_prd(&mem, 0x1000, 0x10000, 0);
        put_prd(&mem, 0x1008, 0x30000, 0x8000_0200);
        let list = scatter_list(&mem, 0x1000, 0x10000 + 0x100).unwrap();
        assert_eq!(list.segments, vec![(0x10000, 0x10000), (0x30000, 0x100)]);
        assert_eq!(list.prepared, 0x10100);
        assert_eq!(list.described, 0x10200);
    }

    #[test]
    fn a_table_without_end_mark_stops_after_one_page() {
        let mem = memory();
        for i in 0..1024u64 {
            put_prd(&mem, 0x2000 + 8 * i, 0x40000, 2);
        }
        let list = scatter_list(&mem, 0x2000, u64::MAX).unwrap();
        assert_eq!(list.described, 512 * 2);
    }

    #[test]
    fn a_table_outside_memory_is_a_fault() {
        let mem = memory();
        assert_eq!(
            scatter_list(&mem, 0xffff_fff8, 512),
            Err(DmaFault::TableOutsideMemory(0xffff_fff8))
        );
    }

    #[test]
    fn buffers_outside_ram_drop_writes_and_read_zeros() {
        let mem = memory();
        mem.write_slice(&[0xaa; 8], GuestAddress(0xf_fff8)).unwrap();
        // 16 bytes straddling the end of RAM (1 MiB), then a buffer wholly outside it.
        put_prd(&mem, 0x1000, 0xf_fff8, 16);
        put_prd(&mem, 0x1008, 0xfff0_0000, 0x8000_0010);
        let list = scatter_list(&mem, 0x1000, 32).unwrap();
        let mut cursor = ScatterCursor::new(&mem, &list);
        cursor.write_to_guest(&[7u8; 32]);
        let mut tail = [0u8; 8];
        mem.read_slice(&mut tail, GuestAddress(0xf_fff8)).unwrap();
        assert_eq!(tail, [7; 8], "the part inside RAM is written");
        let mut cursor = ScatterCursor::new(&mem, &list);
        let mut back = [0xffu8; 32];
        cursor.read_from_guest(&mut back);
        assert_eq!(back[..8], [7; 8]);
        assert_eq!(back[8..], [0; 24], "no RAM reads as zeros");
    }

    #[test]
    fn the_cursor_spans_segments() {
        let mem = memory();
        put_prd(&mem, 0x1000, 0x10000, 3); // odd counts lose bit 0: 2 bytes
        put_prd(&mem, 0x1008, 0x20000, 0x8000_0004);
        let list = scatter_list(&mem, 0x1000, 6).unwrap();
        let mut cursor = ScatterCursor::new(&mem, &list);
        cursor.write_to_guest(&[1, 2, 3, 4, 5, 6]);
        let mut a = [0u8; 2];
        let mut b = [0u8; 4];
        mem.read_slice(&mut a, GuestAddress(0x10000)).unwrap();
        mem.read_slice(&mut b, GuestAddress(0x20000)).unwrap();
        assert_eq!((a, b), ([1, 2], [3, 4, 5, 6]));
        let mut cursor = ScatterCursor::new(&mem, &list);
        let mut back = [0u8; 6];
        cursor.read_from_guest(&mut back);
        assert_eq!(back, [1, 2, 3, 4, 5, 6]);
    }
}
