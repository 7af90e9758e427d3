//! The internal snapshot table: parsed for listing and for reference counting; vmscope never
//! rewrites it, so it stays byte-for-byte intact.

use crate::block::error::{BlockError, BlockResult};

/// One internal snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalSnapshot {
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub vm_state_size: u64,
    pub disk_size: Option<u64>,
    pub icount: Option<u64>,
}

/// Parses `count` entries from `buf` (the table read from `snapshots_offset`).
pub fn parse_table(buf: &[u8], count: u32) -> BlockResult<Vec<InternalSnapshot>> {
    let bad = || BlockError::Corrupt("Snapshot table is truncated or invalid".into());
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    let mut off = 0usize;
    for _ in 0..count {
        let h = buf.get(off..off + 40).ok_or_else(bad)?;
        let l1_table_offset = u64::from_be_bytes(h[0..8].try_into().expect("8"));
        let l1_size = u32::from_be_bytes(h[8..12].try_into().expect("4"));
        let id_len = u16::from_be_bytes(h[12..14].try_into().expect("2")) as usize;
        let name_len = u16::from_be_bytes(h[14..16].try_into().expect("2")) as usize;
        let date_sec = u32::from_be_bytes(h[16..20].try_into().expect("4"));
        let date_nsec = u32::from_be_bytes(h[20..24].try_into().expect("4"));
        let vm_clock_nsec = u64::from_be_bytes(h[24..32].try_into().expect("8"));
        let vm_state_size32 = u32::from_be_bytes(h[32..36].try_into().expect("4"));
        let extra_len = u32::from_be_bytes(h[36..40].try_into().expect("4")) as usize;
        off += 40;
        let extra = buf.get(off..off + extra_len).ok_or_else(bad)?;
        let field = |i: usize| -> Option<u64> {
            extra
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8")))
        };
        let vm_state_size = field(0).unwrap_or(vm_state_size32 as u64);
        let disk_size = field(1);
        let icount = field(2);
        off += extra_len;
        let id = buf.get(off..off + id_len).ok_or_else(bad)?;
        off += id_len;
        let name = buf.get(off..off + name_len).ok_or_else(bad)?;
        off += name_len;
        off = off.div_ceil(8) * 8;
        out.push(InternalSnapshot {
            l1_table_offset,
            l1_size,
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
            date_sec,
            date_nsec,
            vm_clock_nsec,
            vm_state_size,
            disk_size,
            icount,
        });
    }
    Ok(out)
}

/// Bytes the table occupies on disk (for reference counting).
pub fn table_size(buf: &[u8], count: u32) -> BlockResult<u64> {
    let bad = || BlockError::Corrupt("Snapshot table is truncated or invalid".into());
    let mut off = 0usize;
    for _ in 0..count {
        let h = buf.get(off..off + 40).ok_or_else(bad)?;
        let id_len = u16::from_be_bytes(h[12..14].try_into().expect("2")) as usize;
        let name_len = u16::from_be_bytes(h[14..16].try_into().expect("2")) as usize;
        let extra_len = u32::from_be_bytes(h[36..40].try_into().expect("4")) as usize;
        off = (off + 40 + extra_len + id_len + name_len).div_ceil(8) * 8;
    }
    Ok(off as u64)
}
