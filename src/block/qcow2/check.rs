//! Consistency check and repair (`qemu-img check [-r leaks|all]`, and the repair QEMU runs
//! when it opens a dirty image): recompute every cluster's reference count from the metadata
//! and compare with the refcount blocks.

use super::header;
use super::image::{
    ClusterMapping, ImageState, Qcow2Image, L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED,
    OFLAG_COPIED, OFLAG_ZERO, REFT_OFFSET_MASK,
};
use super::refcount;
use super::snapshot;
use crate::block::error::{BlockError, BlockResult};

/// Upper bound on the clusters a check will count (bounded memory on hostile images).
const MAX_CHECK_CLUSTERS: u64 = 1 << 28;

/// The outcome, with QEMU's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Lines QEMU prints to stderr while checking (`Leaked cluster ...`, `ERROR ...`).
    pub messages: Vec<String>,
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    pub corruptions_fixed: u64,
    pub leaks_fixed: u64,
    /// Remaining after a repair.
    pub corruptions_after: u64,
    pub leaks_after: u64,
    pub image_end_offset: u64,
    pub total_clusters: u64,
    pub allocated_clusters: u64,
    pub fragmented_clusters: u64,
    pub compressed_clusters: u64,
}

struct Counter {
    refs: Vec<u64>,
}

impl Counter {
    fn add(&mut self, r: &mut CheckReport, off: u64, len: u64, cluster_bits: u32) {
        if len == 0 {
            return;
        }
        let first = off >> cluster_bits;
        let last = (off + len - 1) >> cluster_bits;
        for c in first..=last {
            match self.refs.get_mut(c as usize) {
                Some(v) => *v = v.saturating_add(1),
                None => {
                    r.messages.push(format!(
                        "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {:#x} size {:#x}",
                        c << cluster_bits,
                        1u64 << cluster_bits
                    ));
                    r.corruptions += 1;
                }
            }
        }
    }
}

/// Checks `img`; `fix_leaks` is `-r leaks`, both flags are `-r all`.
pub fn check(img: &Qcow2Image, fix_leaks: bool, fix_errors: bool) -> BlockResult<CheckReport> {
    img.with_state(|img, st| check_locked(img, st, fix_leaks, fix_errors))
}

fn check_locked(
    img: &Qcow2Image,
    st: &mut ImageState,
    fix_leaks: bool,
    fix_errors: bool,
) -> BlockResult<CheckReport> {
    let writable = !img.is_read_only();
    if writable {
        img.flush_state(st)?;
    }
    let mut r = CheckReport::default();
    let cb = img.cluster_bits();
    let cs = img.cluster_size();
    let file_len = img.file().len()?;
    let nclusters = file_len.max(Qcow2Image::state_alloc_end(st)).div_ceil(cs);
    if nclusters > MAX_CHECK_CLUSTERS {
        return Err(BlockError::Unsupported(
            "Image file too large for vmscope's consistency check".into(),
        ));
    }
    img.ensure_reftable(st)?;
    let h = Qcow2Image::state_header(st).clone();
    let l1 = Qcow2Image::state_l1(st).to_vec();
    let mut cnt = Counter {
        refs: vec![0; nclusters as usize],
    };
    cnt.add(&mut r, 0, cs, cb);
    // Active L1 and everything below it.
    count_l1(img, &mut r, &mut cnt, &l1, h.l1_table_offset, true, &h)?;
    // Internal snapshots.
    for sn in img.snapshots() {
        let mut b = vec![0u8; sn.l1_size as usize * 8];
        if sn.l1_table_offset % cs != 0 {
            r.messages
                .push("ERROR snapshot L1 table is not cluster aligned".to_string());
            r.corruptions += 1;
            continue;
        }
        img.file().read_at(&mut b, sn.l1_table_offset)?;
        let sl1: Vec<u64> = b
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
            .collect();
        count_l1(img, &mut r, &mut cnt, &sl1, sn.l1_table_offset, false, &h)?;
    }
    if h.nb_snapshots > 0 {
        let max = (file_len.saturating_sub(h.snapshots_offset)).min(64 << 20) as usize;
        let mut b = vec![0u8; max];
        img.file().read_at(&mut b, h.snapshots_offset)?;
        let size = snapshot::table_size(&b, h.nb_snapshots)?;
        cnt.add(&mut r, h.snapshots_offset, size, cb);
    }
    // Refcount structures.
    let reftable = Qcow2Image::state_reftable(st).to_vec();
    cnt.add(
        &mut r,
        h.refcount_table_offset,
        h.refcount_table_clusters as u64 * cs,
        cb,
    );
    for (i, e) in reftable.iter().enumerate() {
        let off = e & REFT_OFFSET_MASK;
        if off == 0 {
            continue;
        }
        if !off.is_multiple_of(cs) {
            r.messages.push(format!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            r.corruptions += 1;
            continue;
        }
        if off >> cb >= nclusters {
            r.messages
                .push(format!("ERROR refcount block {i} is outside image"));
            r.corruptions += 1;
            continue;
        }
        cnt.add(&mut r, off, cs, cb);
    }
    for (i, e) in reftable.iter().enumerate() {
        let off = e & REFT_OFFSET_MASK;
        if off != 0
            && off.is_multiple_of(cs)
            && (off >> cb) < nclusters
            && cnt.refs[(off >> cb) as usize] > 1
        {
            r.messages.push(format!(
                "ERROR refcount block {i} refcount={}",
                cnt.refs[(off >> cb) as usize]
            ));
        }
    }
    // Compare (QEMU compares the clusters inside the file only).
    let per_block = refcount::entries_per_block(cb, img.refcount_order());
    let covered = reftable.len() as u64 * per_block;
    let mut highest = 0u64;
    let mut rebuild = false;
    let max = refcount::max_value(img.refcount_order());
    for c in 0..nclusters {
        let on_disk = if c < covered {
            img.get_refcount(st, c)?
        } else {
            0
        };
        let computed = cnt.refs[c as usize];
        if on_disk > 0 || computed > 0 {
            highest = c;
        }
        if on_disk == computed {
            continue;
        }
        let fix = if on_disk > computed {
            fix_leaks
        } else {
            fix_errors
        };
        let in_place = fix && writable && on_disk != 0 && computed <= max;
        if fix && writable && !in_place {
            rebuild = true;
        }
        r.messages.push(format!(
            "{} cluster {c} refcount={on_disk} reference={computed}",
            if in_place {
                "Repairing"
            } else if on_disk < computed {
                "ERROR"
            } else {
                "Leaked"
            }
        ));
        if in_place {
            img.set_refcount(st, c, computed)?;
            if on_disk > computed {
                r.leaks_fixed += 1;
            } else {
                r.corruptions_fixed += 1;
            }
        }
        if on_disk < computed {
            r.corruptions += 1;
        } else {
            r.leaks += 1;
        }
    }
    r.image_end_offset = (highest + 1) * cs;
    if rebuild {
        if cnt.refs.iter().any(|&v| v > max) {
            return Err(BlockError::Corrupt(
                "Cannot repair: a reference count exceeds the refcount width".into(),
            ));
        }
        rebuild_refcounts(img, st, &cnt.refs)?;
        r.messages.push("Rebuilding refcount structure".to_string());
        r.leaks_fixed = r.leaks;
        r.corruptions_fixed = r.corruptions;
    } else if r.leaks_fixed + r.corruptions_fixed > 0 {
        img.flush_state(st)?;
    }
    // OFLAG_COPIED consistency of the active tables, against the refcounts now on disk.
    for (i, &e) in l1.iter().enumerate() {
        let off = e & L1E_OFFSET_MASK;
        if off == 0 || !off.is_multiple_of(cs) || off >> cb >= nclusters {
            continue;
        }
        let rc = img.get_refcount(st, off >> cb)?;
        if (rc == 1) != (e & OFLAG_COPIED != 0) {
            r.messages.push(format!(
                "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:x} refcount={rc}"
            ));
            r.corruptions += 1;
        }
        for l2e in img.read_l2_table(off)? {
            if l2e & OFLAG_COMPRESSED != 0 {
                continue;
            }
            let d = l2e & L2E_OFFSET_MASK;
            if d == 0 || !d.is_multiple_of(cs) || d >> cb >= nclusters {
                continue;
            }
            let rc = img.get_refcount(st, d >> cb)?;
            if (rc == 1) != (l2e & OFLAG_COPIED != 0) {
                r.messages.push(format!(
                    "ERROR OFLAG_COPIED data cluster: l2_entry={l2e:x} refcount={rc}"
                ));
                r.corruptions += 1;
            }
        }
    }
    r.corruptions_after = r.corruptions - r.corruptions_fixed;
    r.leaks_after = r.leaks - r.leaks_fixed;
    Ok(r)
}

fn count_l1(
    img: &Qcow2Image,
    r: &mut CheckReport,
    cnt: &mut Counter,
    l1: &[u64],
    l1_off: u64,
    active: bool,
    h: &header::Header,
) -> BlockResult<()> {
    let cb = img.cluster_bits();
    let cs = img.cluster_size();
    cnt.add(r, l1_off, l1.len() as u64 * 8, cb);
    let nclusters = cnt.refs.len() as u64;
    let mut next_contiguous = 0u64;
    for (i, &e) in l1.iter().enumerate() {
        let off = e & L1E_OFFSET_MASK;
        if off == 0 {
            continue;
        }
        if !off.is_multiple_of(cs) {
            r.messages.push(format!(
                "ERROR l2_offset={off:x}: Table is not cluster aligned; L1 entry corrupted"
            ));
            r.corruptions += 1;
            continue;
        }
        if off >> cb >= nclusters {
            r.messages.push(format!(
                "ERROR l2_offset={off:x}: L2 table is outside the image (l1_index {i})"
            ));
            r.corruptions += 1;
            continue;
        }
        cnt.add(r, off, cs, cb);
        let table = img.read_l2_table(off)?;
        for (j, &l2e) in table.iter().enumerate() {
            let guest = (((i as u64) << (cb - 3)) + j as u64) << cb;
            if guest >= h.size && active {
                continue;
            }
            if l2e & OFLAG_COMPRESSED != 0 {
                let (coff, csize) = img.compressed_extent(l2e);
                if active {
                    r.allocated_clusters += 1;
                    r.compressed_clusters += 1;
                    r.fragmented_clusters += 1;
                }
                cnt.add(r, coff, csize, cb);
                continue;
            }
            let d = l2e & L2E_OFFSET_MASK;
            let zero = h.version >= 3 && l2e & OFLAG_ZERO != 0;
            if d == 0 {
                continue;
            }
            if !d.is_multiple_of(cs) {
                r.messages.push(format!(
                    "ERROR offset={d:x}: Cluster is not properly aligned; L2 entry corrupted."
                ));
                r.corruptions += 1;
                continue;
            }
            if active {
                r.allocated_clusters += 1;
                if next_contiguous != 0 && d != next_contiguous {
                    r.fragmented_clusters += 1;
                }
                next_contiguous = d + cs;
            }
            let _ = zero;
            cnt.add(r, d, cs, cb);
        }
    }
    let _ = ClusterMapping::Unallocated;
    Ok(())
}

/// Writes a complete new refcount structure (table + blocks) after the end of the file,
/// describing `refs` plus itself, then switches the header to it in one write. The old
/// structure becomes free space. Crash-safe: until the switch the old one is in force.
fn rebuild_refcounts(img: &Qcow2Image, st: &mut ImageState, refs: &[u64]) -> BlockResult<()> {
    let cs = img.cluster_size();
    let cb = img.cluster_bits();
    let order = img.refcount_order();
    let per_block = refcount::entries_per_block(cb, order);
    let per_table_cluster = cs / 8;
    let data_clusters = refs.len() as u64;
    // Find sizes: table clusters T and block count B so that blocks cover
    // data_clusters + T + B clusters.
    let mut t = 1u64;
    let mut b;
    loop {
        b = 0;
        loop {
            let need = (data_clusters + t + b).div_ceil(per_block);
            if need <= b {
                break;
            }
            b = need;
        }
        if b.div_ceil(per_table_cluster) <= t {
            break;
        }
        t = b.div_ceil(per_table_cluster);
    }
    if t * cs > header::MAX_REFTABLE_BYTES {
        return Err(BlockError::Unsupported(
            "Reference count table would grow too large".into(),
        ));
    }
    let table_start = data_clusters;
    let blocks_start = table_start + t;
    let total = blocks_start + b;
    let mut all = refs.to_vec();
    // The old refcount table and blocks stop being referenced at the switch.
    {
        let h = Qcow2Image::state_header(st);
        let first = h.refcount_table_offset >> cb;
        for c in first..first + h.refcount_table_clusters as u64 {
            if let Some(v) = all.get_mut(c as usize) {
                *v = v.saturating_sub(1);
            }
        }
        for e in Qcow2Image::state_reftable(st) {
            let off = e & REFT_OFFSET_MASK;
            if off != 0 && off.is_multiple_of(cs) {
                if let Some(v) = all.get_mut((off >> cb) as usize) {
                    *v = v.saturating_sub(1);
                }
            }
        }
    }
    all.resize(total as usize, 0);
    for c in table_start..total {
        all[c as usize] = 1;
    }
    let mut table = vec![0u64; (t * per_table_cluster) as usize];
    for bi in 0..b {
        let off = (blocks_start + bi) * cs;
        table[bi as usize] = off;
        let mut blk = vec![0u8; cs as usize];
        let first = bi * per_block;
        for k in 0..per_block {
            let c = first + k;
            if c >= total {
                break;
            }
            refcount::set(&mut blk, order, k as usize, all[c as usize]);
        }
        img.file().write_at(&blk, off)?;
    }
    let mut tb = vec![0u8; (t * cs) as usize];
    for (i, e) in table.iter().enumerate() {
        tb[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    img.file().write_at(&tb, table_start * cs)?;
    img.file().barrier()?;
    Qcow2Image::set_alloc_end(st, total * cs);
    img.switch_refcount_table(st, table_start * cs, table)
}
