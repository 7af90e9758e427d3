//! The packet commands: QEMU 7.2's command table, its checks before a command runs, and
//! each command's reply built in the I/O buffer the way QEMU builds it.

use std::time::Instant;

use super::io_buffer::{be16, be32, pad_ascii, put_be16, put_be32, IO_BUFFER_LEN};
use super::{
    asc, identify, sense_key, toc, DeviceState, Media, MediumChange, PacketTransfer, SenseState,
    BLOCK_SIZE, RAW_SECTOR_SIZE,
};
use crate::block::drive::{BlockStats, IoKind};
use crate::block::node::BlockNode;

/// Everything a command may read or change.
pub struct Exec<'a> {
    /// The I/O buffer, holding the packet in its first 12 bytes.
    pub buf: &'a mut [u8; IO_BUFFER_LEN],
    pub sense: &'a mut SenseState,
    pub device: &'a mut DeviceState,
    pub media: Media,
    pub transfer: PacketTransfer,
    pub node: Option<&'a BlockNode>,
    pub stats: &'a BlockStats,
}

/// How a command ends.
#[derive(Debug)]
pub enum Step {
    Ok,
    /// Send `size` bytes of the buffer, cut to the allocation length `max_len`.
    Reply {
        size: usize,
        max_len: usize,
    },
    /// Send data built outside the buffer (raw sectors).
    Data(Vec<u8>),
    Read {
        lba: u32,
        count: u32,
    },
    Fail {
        key: u8,
        asc: u8,
    },
    UnitAttentionPending,
    AtaAbort,
}

fn fail(key: u8, asc: u8) -> Step {
    Step::Fail { key, asc }
}

fn invalid_field() -> Step {
    fail(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB)
}

fn out_of_range() -> Step {
    fail(sense_key::ILLEGAL_REQUEST, asc::LOGICAL_BLOCK_OUT_OF_RANGE)
}

fn not_ready() -> Step {
    fail(sense_key::NOT_READY, asc::MEDIUM_NOT_PRESENT)
}

/// May run while a unit attention is pending (MMC-5 4.1.6.1).
const ALLOW_UA: u8 = 0x01;
/// Needs a medium; otherwise NOT READY.
const CHECK_READY: u8 = 0x02;
/// Never transfers data, so a zero byte count limit is fine.
const NONDATA: u8 = 0x04;
/// Transfers data only for some fields; checks the byte count limit itself.
const CONDDATA: u8 = 0x08;

type Handler = fn(&mut Exec) -> Step;

/// QEMU's `atapi_cmd_table`.
fn lookup(opcode: u8) -> Option<(Handler, u8)> {
    let entry: (Handler, u8) = match opcode {
        0x00 => (test_unit_ready, CHECK_READY | NONDATA),
        0x03 => (request_sense, ALLOW_UA),
        0x12 => (inquiry, ALLOW_UA),
        // START STOP UNIT reports a missing medium itself.
        0x1b => (start_stop_unit, NONDATA),
        0x1e => (prevent_allow_medium_removal, NONDATA),
        0x25 => (read_capacity, CHECK_READY),
        0x28 => (read, CHECK_READY),
        0x2b => (seek, CHECK_READY | NONDATA),
        0x43 => (read_toc, CHECK_READY),
        0x46 => (get_configuration, ALLOW_UA),
        0x4a => (get_event_status_notification, ALLOW_UA),
        0x51 => (read_disc_information, CHECK_READY),
        0x5a => (mode_sense, 0),
        0xa8 => (read, CHECK_READY),
        0xad => (read_dvd_structure, CHECK_READY),
        0xbb => (set_cd_speed, NONDATA),
        0xbd => (mechanism_status, 0),
        0xbe => (read_cd, CHECK_READY | CONDDATA),
        _ => return None,
    };
    Some(entry)
}

/// QEMU's `ide_atapi_cmd`: the checks every command goes through, then the command.
pub fn run(x: &mut Exec) -> Step {
    let entry = lookup(x.buf[0]);
    let flags = entry.map_or(0, |(_, flags)| flags);
    if x.sense.key == sense_key::UNIT_ATTENTION && flags & ALLOW_UA == 0 {
        return Step::UnitAttentionPending;
    }
    // After a medium change, report the old medium gone, then the new one.
    if flags & ALLOW_UA == 0 && !x.media.tray_open && x.media.inserted {
        match x.device.medium_change {
            MediumChange::None => {}
            MediumChange::ReportRemoved => {
                x.device.medium_change = MediumChange::ReportChanged;
                return not_ready();
            }
            MediumChange::ReportChanged => {
                x.device.medium_change = MediumChange::None;
                return fail(sense_key::UNIT_ATTENTION, asc::MEDIUM_MAY_HAVE_CHANGED);
            }
        }
    }
    if flags & CHECK_READY != 0 && (!x.media.present() || !x.media.inserted) {
        return not_ready();
    }
    let Some((handler, _)) = entry else {
        return fail(sense_key::ILLEGAL_REQUEST, asc::ILLEGAL_OPCODE);
    };
    if flags & (NONDATA | CONDDATA) == 0 && !x.transfer.byte_count_limit_valid() {
        return Step::AtaAbort;
    }
    handler(x)
}

fn test_unit_ready(_: &mut Exec) -> Step {
    Step::Ok
}

fn set_cd_speed(_: &mut Exec) -> Step {
    Step::Ok
}

fn request_sense(x: &mut Exec) -> Step {
    let max_len = usize::from(x.buf[4]);
    let buf = &mut x.buf[..];
    buf[..18].fill(0);
    buf[0] = 0x80 | 0x70; // valid, current error
    buf[2] = x.sense.key;
    buf[7] = 10; // additional length
    buf[12] = x.sense.asc;
    // Reporting a unit attention clears it (the ASC stays, as in QEMU).
    if x.sense.key == sense_key::UNIT_ATTENTION {
        x.sense.key = sense_key::NO_SENSE;
    }
    Step::Reply { size: 18, max_len }
}

fn inquiry(x: &mut Exec) -> Step {
    let page = x.buf[2];
    // QEMU reads only the low byte of the allocation length.
    let max_len = usize::from(x.buf[4]);
    let evpd = x.buf[1] & 1 != 0;
    let buf = &mut x.buf[..];
    if !evpd {
        buf[0] = 0x05; // CD-ROM
        buf[1] = 0x80; // removable
        buf[2] = 0x00;
        buf[3] = 0x21; // ATAPI, response format 1
        buf[4] = 36 - 5; // additional length
        buf[5..8].fill(0);
        pad_ascii(&mut buf[8..16], "QEMU");
        pad_ascii(&mut buf[16..32], identify::MODEL);
        pad_ascii(&mut buf[32..36], identify::FIRMWARE);
        return Step::Reply { size: 36, max_len };
    }
    buf[0] = 0x05;
    buf[1] = page;
    buf[2] = 0;
    let mut len = 4;
    match page {
        0x00 => {
            // Supported pages: this one and device identification.
            buf[4] = 0x00;
            buf[5] = 0x83;
            len = 6;
        }
        0x83 => {
            let serial = &x.device.serial;
            // Entry 1, the serial number, must fit or the command fails.
            if len + 24 > max_len {
                return fail(sense_key::ILLEGAL_REQUEST, asc::DATA_PHASE_ERROR);
            }
            buf[len..len + 4].copy_from_slice(&[0x02, 0x00, 0x00, 20]);
            pad_ascii(&mut buf[len + 4..len + 24], truncated(serial, 20));
            len += 24;
            // Entry 2, T10 vendor "ATA" + model + serial, only when it fits.
            if len + 72 <= max_len {
                buf[len..len + 4].copy_from_slice(&[0x02, 0x01, 0x00, 68]);
                pad_ascii(&mut buf[len + 4..len + 12], "ATA");
                pad_ascii(&mut buf[len + 12..len + 52], identify::MODEL);
                pad_ascii(&mut buf[len + 52..len + 72], truncated(serial, 20));
                len += 72;
            }
            // No WWN entry: ide-cd has none unless `wwn=` is given.
        }
        _ => return invalid_field(),
    }
    buf[3] = (len - 4) as u8;
    Step::Reply { size: len, max_len }
}

/// QEMU keeps at most `n` bytes of a string property.
fn truncated(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn start_stop_unit(x: &mut Exec) -> Step {
    let control = x.buf[4];
    let start = control & 1 != 0;
    let load_eject = control & 2 != 0;
    // Eject and load only happen for power condition 0.
    if control & 0xf0 != 0 {
        return Step::Ok;
    }
    if load_eject {
        let device = &mut *x.device;
        if !start && !device.tray_open && device.tray_locked {
            let key = if x.media.inserted {
                sense_key::NOT_READY
            } else {
                sense_key::ILLEGAL_REQUEST
            };
            return fail(key, asc::MEDIA_REMOVAL_PREVENTED);
        }
        // The tray moves when it is not already where the command wants it.
        if device.tray_open == start {
            device.tray_open = !start;
            device.tray_moves.push(!start);
        }
    }
    Step::Ok
}

fn prevent_allow_medium_removal(x: &mut Exec) -> Step {
    x.device.tray_locked = x.buf[4] & 1 != 0;
    Step::Ok
}

fn read_capacity(x: &mut Exec) -> Step {
    // The last block's address, truncated to 32 bits as QEMU stores it.
    put_be32(x.buf, 0, x.media.blocks().wrapping_sub(1) as u32);
    put_be32(x.buf, 4, BLOCK_SIZE as u32);
    Step::Reply {
        size: 8,
        max_len: 8,
    }
}

/// Checks a block range against the medium. QEMU adds in 32 bits, so a count that wraps
/// the sum slips past its check and ends the command without data; here it is out of range.
fn range_ok(x: &Exec, lba: u32, count: u32) -> bool {
    let blocks = x.media.blocks();
    u64::from(lba) < blocks && u64::from(lba) + u64::from(count) - 1 < blocks
}

/// READ(10) and READ(12).
fn read(x: &mut Exec) -> Step {
    let count = if x.buf[0] == 0x28 {
        u32::from(be16(x.buf, 7))
    } else {
        be32(x.buf, 6)
    };
    if count == 0 {
        return Step::Ok;
    }
    let lba = be32(x.buf, 2);
    if !range_ok(x, lba, count) {
        return out_of_range();
    }
    Step::Read { lba, count }
}

/// Raw READ CD replies are built in memory; this bounds them (448 sectors, about 1 MiB,
/// above any guest's request size). QEMU streams any length; larger requests fail with
/// INVALID FIELD IN CDB instead of allocating without bound.
const RAW_READ_MAX_SECTORS: u32 = 448;

fn read_cd(x: &mut Exec) -> Step {
    let count = u32::from_be_bytes([0, x.buf[6], x.buf[7], x.buf[8]]);
    if count == 0 {
        return Step::Ok;
    }
    let lba = be32(x.buf, 2);
    if !range_ok(x, lba, count) {
        return out_of_range();
    }
    let transfer_request = x.buf[9] & 0xf8;
    if transfer_request == 0 {
        return Step::Ok;
    }
    if !x.transfer.byte_count_limit_valid() {
        return Step::AtaAbort;
    }
    match transfer_request {
        0x10 => Step::Read { lba, count },
        0xf8 if count <= RAW_READ_MAX_SECTORS => read_raw_sectors(x, lba, count),
        _ => invalid_field(),
    }
}

/// Mode 1 sectors with sync pattern and header; QEMU leaves EDC/ECC zero.
fn read_raw_sectors(x: &mut Exec, lba: u32, count: u32) -> Step {
    let Some(node) = x.node else {
        return not_ready();
    };
    let mut data = vec![0u8; count as usize * RAW_SECTOR_SIZE];
    for (i, sector) in data.chunks_exact_mut(RAW_SECTOR_SIZE).enumerate() {
        let block = lba + i as u32;
        let offset = u64::from(block) * BLOCK_SIZE as u64;
        let start = Instant::now();
        // QEMU accounts each sector as one 2048-byte read.
        let result = node.read_at(offset, &mut sector[16..16 + BLOCK_SIZE]);
        x.stats.record(
            IoKind::Read,
            offset,
            BLOCK_SIZE as u64,
            start.elapsed(),
            result.is_ok(),
        );
        if result.is_err() {
            return out_of_range();
        }
        sector[1..11].fill(0xff);
        sector[12..15].copy_from_slice(&toc::lba_to_msf(block));
        sector[15] = 0x01; // mode 1
    }
    // The last sector stays in QEMU's buffer.
    if let Some(last) = data.chunks_exact(RAW_SECTOR_SIZE).last() {
        x.buf[..RAW_SECTOR_SIZE].copy_from_slice(last);
    }
    Step::Data(data)
}

fn seek(x: &mut Exec) -> Step {
    let lba = be32(x.buf, 2);
    if u64::from(lba) >= x.media.blocks() {
        return out_of_range();
    }
    Step::Ok
}

fn mechanism_status(x: &mut Exec) -> Step {
    let max_len = usize::from(be16(x.buf, 8));
    // No changer, no current LBA, one slot.
    x.buf[..8].copy_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0]);
    Step::Reply { size: 8, max_len }
}

fn read_toc(x: &mut Exec) -> Step {
    let max_len = usize::from(be16(x.buf, 7));
    // QEMU takes the format from the old position, the top bits of the control byte.
    let format = x.buf[9] >> 6;
    let msf = x.buf[1] & 2 != 0;
    let start_track = x.buf[6];
    // QEMU passes the block count as an int.
    let blocks = x.media.blocks() as u32;
    let reply = match format {
        0 => match toc::formatted_toc(blocks, msf, start_track) {
            Some(toc) => toc,
            None => return invalid_field(),
        },
        1 => toc::session_info().to_vec(),
        2 => toc::raw_toc(blocks, msf),
        _ => return invalid_field(),
    };
    x.buf[..reply.len()].copy_from_slice(&reply);
    Step::Reply {
        size: reply.len(),
        max_len,
    }
}

const PROFILE_CD_ROM: u16 = 0x0008;
const PROFILE_DVD_ROM: u16 = 0x0010;

fn get_configuration(x: &mut Exec) -> Step {
    // Only the full list from feature 0 is supported.
    if x.buf[2] != 0 || x.buf[3] != 0 {
        return invalid_field();
    }
    // QEMU bounds the reply to one 512-byte sector and clears that much.
    let max_len = usize::from(be16(x.buf, 7)).min(512);
    let buf = &mut x.buf[..];
    buf[..max_len].fill(0);
    if x.media.is_dvd() {
        put_be16(buf, 6, PROFILE_DVD_ROM);
    } else if x.media.is_cd() {
        put_be16(buf, 6, PROFILE_CD_ROM);
    }
    buf[10] = 0x02 | 0x01; // persistent, current
    let mut len = 12;
    // Profile list: each entry marks itself current when it equals the current profile,
    // compared against whatever bytes 6-7 hold (the packet's if they were not cleared).
    for (index, profile) in [PROFILE_DVD_ROM, PROFILE_CD_ROM].into_iter().enumerate() {
        let at = 12 + index * 4;
        put_be16(buf, at, profile);
        buf[at + 2] = u8::from(buf[at] == buf[6] && buf[at + 1] == buf[7]);
        buf[11] = buf[11].wrapping_add(4);
        len += 4;
    }
    put_be32(buf, 0, (len - 4) as u32);
    Step::Reply { size: len, max_len }
}

/// Notification class "media" (GESN).
const GESN_MEDIA: u8 = 4;

fn get_event_status_notification(x: &mut Exec) -> Step {
    let max_len = usize::from(be16(x.buf, 7));
    // Only polling is supported.
    if x.buf[1] & 1 == 0 {
        return invalid_field();
    }
    let requested = x.buf[4];
    let buf = &mut x.buf[..];
    buf[3] = 1 << GESN_MEDIA; // supported classes
    buf[2] = 0;
    let used = if requested & (1 << GESN_MEDIA) != 0 {
        buf[2] = GESN_MEDIA;
        let status = if x.device.tray_open {
            1 // tray open
        } else if x.media.inserted {
            2 // medium present
        } else {
            0
        };
        let mut event = 0; // no change
        if status != 1 {
            if x.device.new_media_event {
                event = 2;
                x.device.new_media_event = false;
            } else if x.device.eject_request_event {
                event = 1;
                x.device.eject_request_event = false;
            }
        }
        buf[4] = event;
        buf[5] = status;
        buf[6] = 0;
        buf[7] = 0;
        8
    } else {
        buf[2] = 0x80; // no event available
        4
    };
    put_be16(buf, 0, (used - 4) as u16);
    Step::Reply {
        size: used,
        max_len,
    }
}

fn read_disc_information(x: &mut Exec) -> Step {
    // Types 1 and 2 are for Blu-ray only.
    if x.buf[1] & 7 != 0 {
        return invalid_field();
    }
    let max_len = usize::from(be16(x.buf, 7));
    let buf = &mut x.buf[..];
    buf[..34].fill(0);
    buf[1] = 32; // data length
    buf[2] = 0x0e; // last session complete, disc finalized
    buf[3] = 1; // first track on disc
    buf[4] = 1; // sessions
    buf[5] = 1; // first track of last session
    buf[6] = 1; // last track of last session
    buf[7] = 0x20; // unrestricted use
    buf[8] = 0x00; // CD-ROM or DVD-ROM
    Step::Reply { size: 34, max_len }
}

const MODE_PAGE_R_W_ERROR: u8 = 0x01;
const MODE_PAGE_AUDIO_CONTROL: u8 = 0x0e;
const MODE_PAGE_CAPABILITIES: u8 = 0x2a;

/// MODE SENSE(10): the current values of three pages.
fn mode_sense(x: &mut Exec) -> Step {
    let max_len = usize::from(be16(x.buf, 7));
    let control = x.buf[2] >> 6;
    let page = x.buf[2] & 0x3f;
    match control {
        0 => {}
        // Changeable and default values are not supported.
        1 | 2 => return invalid_field(),
        _ => {
            return fail(
                sense_key::ILLEGAL_REQUEST,
                asc::SAVING_PARAMETERS_NOT_SUPPORTED,
            )
        }
    }
    let buf = &mut x.buf[..];
    let size = match page {
        MODE_PAGE_R_W_ERROR => 16,
        MODE_PAGE_AUDIO_CONTROL => 24,
        MODE_PAGE_CAPABILITIES => 30,
        _ => return invalid_field(),
    };
    // Mode parameter header: length, medium type 0x70 ("door closed, no disc" in old
    // MMC terms, QEMU's constant), no block descriptors.
    put_be16(buf, 0, size as u16 - 2);
    buf[2] = 0x70;
    buf[3..8].fill(0);
    buf[8] = page;
    buf[9] = size as u8 - 10;
    match page {
        MODE_PAGE_R_W_ERROR => {
            buf[10..16].copy_from_slice(&[0x00, 0x05, 0, 0, 0, 0]);
        }
        MODE_PAGE_AUDIO_CONTROL => {
            // QEMU sets only the port volumes; the other page bytes keep what the buffer
            // held (the packet's last bytes, then older replies or data).
            buf[17] = 0;
            buf[19] = 0;
            buf[21] = 0;
            buf[23] = 0;
        }
        _ => {
            buf[10] = 0x3b; // reads CD-R/RW, DVD-ROM/R/RAM
            buf[11] = 0x00;
            buf[12] = 0x71; // plays audio (Linux automount looks for it)
            buf[13] = 3 << 5;
            buf[14] = (1 << 0) | (1 << 3) | (1 << 5) | (u8::from(x.device.tray_locked) << 1);
            buf[15] = 0x00;
            put_be16(buf, 16, 704); // 4x read speed
            buf[18] = 0;
            buf[19] = 2; // two volume levels
            put_be16(buf, 20, 512); // 512 KiB buffer
            put_be16(buf, 22, 704); // current read speed
            buf[24..30].fill(0);
        }
    }
    Step::Reply { size, max_len }
}

/// QEMU clears at most its whole buffer (128 KiB + 4) before READ DVD STRUCTURE.
const DVD_STRUCTURE_CLEAR_MAX: usize = 256 * 512 + 4;

fn read_dvd_structure(x: &mut Exec) -> Step {
    let media_type = x.buf[1];
    let format = x.buf[7];
    let max_len = usize::from(be16(x.buf, 8));
    if format < 0xff {
        if x.media.is_cd() {
            return fail(sense_key::ILLEGAL_REQUEST, asc::INCOMPATIBLE_FORMAT);
        } else if !x.media.present() {
            return invalid_field();
        }
    }
    let clear = max_len.min(DVD_STRUCTURE_CLEAR_MAX).min(IO_BUFFER_LEN);
    x.buf[..clear].fill(0);
    // Only DVD structures (media type 0) of the DVD-ROM formats; the rest are not supported.
    if !(format <= 0x7f || format == 0xff) || media_type != 0 {
        return invalid_field();
    }
    match dvd_structure(x, format) {
        Ok(size) => Step::Reply { size, max_len },
        Err(asc) => fail(sense_key::ILLEGAL_REQUEST, asc),
    }
}

/// One DVD structure; its length, or the ASC to fail with.
fn dvd_structure(x: &mut Exec, format: u8) -> Result<usize, u8> {
    let blocks = x.media.blocks();
    let buf = &mut x.buf[..];
    match format {
        0x00 => {
            // Physical format information; only layer 0 (read from the possibly cleared
            // packet, as QEMU does).
            if buf[6] != 0 {
                return Err(asc::INVALID_FIELD_IN_CDB);
            }
            if blocks == 0 {
                return Err(asc::MEDIUM_NOT_PRESENT);
            }
            buf[4] = 1; // DVD-ROM, part version 1
            buf[5] = 0xf; // 120 mm disc, rate unspecified
            buf[6] = 1; // one layer, read-only
            buf[7] = 0; // default densities
            put_be32(buf, 8, 0); // first sector
            put_be32(buf, 12, (blocks - 1) as u32); // last sector
            put_be32(buf, 16, (blocks - 1) as u32); // last sector of layer 0
            put_be16(buf, 0, 2048 + 2);
            Ok(2048 + 4)
        }
        0x01 => {
            // Copyright information: none, no region restriction.
            buf[4] = 0;
            buf[5] = 0;
            put_be16(buf, 0, 4 + 2);
            Ok(4 + 4)
        }
        0x04 => {
            // Disc manufacturing information: 2048 zero bytes.
            put_be16(buf, 0, 2048 + 2);
            Ok(2048 + 4)
        }
        0xff => {
            // The list of structures above: format, readable, length.
            for (i, (fmt, len)) in [(0x00u8, 2048u16 + 4), (0x01, 8), (0x03, 192), (0x04, 2052)]
                .into_iter()
                .enumerate()
            {
                let at = 4 + i * 4;
                buf[at] = fmt;
                buf[at + 1] = 0x40;
                put_be16(buf, at + 2, len);
            }
            put_be16(buf, 0, 16 + 2);
            Ok(16 + 4)
        }
        // BCA (0x03) is listed but there is none; other formats are not supported.
        _ => Err(asc::INVALID_FIELD_IN_CDB),
    }
}
