//! `atapi`: the CD-ROM on the secondary channel's master (`-cdrom FILE`, or QEMU's default
//! empty drive): signature, IDENTIFY PACKET DEVICE, and PACKET commands by PIO and DMA —
//! TEST UNIT READY, REQUEST SENSE, INQUIRY, READ CAPACITY, READ(10)/(12), MODE SENSE,
//! READ TOC, GET CONFIGURATION, and commands that must fail with sense data.

use super::{
    checksum, identify, line_end, line_start, non_data, print_outcome_tail, reset_and_signatures,
    setup,
};
use crate::ata::{self, Channel, Outcome, Prd, Task};
use crate::console::{Dec, Emit, Hex};
use crate::kprintln;
use crate::start_info::StartInfo;

/// The most bytes one DRQ phase may carry (the byte count limit the driver sets).
const BYTE_LIMIT: u16 = 0x2000;

fn cdb(bytes: &[u8]) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

fn read10(lba: u32, count: u16) -> [u8; 12] {
    let l = lba.to_be_bytes();
    let n = count.to_be_bytes();
    cdb(&[0x28, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1]])
}

fn read12(lba: u32, count: u32) -> [u8; 12] {
    let l = lba.to_be_bytes();
    let n = count.to_be_bytes();
    cdb(&[0xa8, 0, l[0], l[1], l[2], l[3], n[0], n[1], n[2], n[3]])
}

/// A PIO packet command reading at most `len` bytes; prints its outcome and checksum.
/// Returns the outcome and the first 64 bytes of the data.
fn packet(ch: &Channel, label: &str, c: &[u8; 12], len: usize) -> (Outcome, [u8; 64]) {
    let buf = ata::buffer(len);
    buf.fill(0xcc);
    let o = ch.packet(0, c, buf, BYTE_LIMIT, false);
    print_packet(ch, label, &o, buf);
    let mut head = [0u8; 64];
    let n = len.min(64);
    head[..n].copy_from_slice(&buf[..n]);
    (o, head)
}

fn print_packet(ch: &Channel, label: &str, o: &Outcome, buf: &[u8]) {
    line_start(&["atapi: ", label]);
    print_outcome_tail(o, false);
    " ireason=".emit();
    Hex(u64::from(ch.interrupt_reason()), 2).emit();
    " bytes=".emit();
    Dec(u64::from(o.bytes)).emit();
    " drq=".emit();
    Dec(u64::from(o.blocks)).emit();
    " sum=".emit();
    Hex(u64::from(checksum(buf)), 8).emit();
    line_end();
}

/// REQUEST SENSE, printed as key/ASC/ASCQ.
fn sense(ch: &Channel) {
    let mut buf = [0u8; 18];
    let o = ch.packet(0, &cdb(&[0x03, 0, 0, 0, 18]), &mut buf, BYTE_LIMIT, false);
    line_start(&["atapi: request-sense"]);
    print_outcome_tail(&o, false);
    " bytes=".emit();
    Dec(u64::from(o.bytes)).emit();
    " key=".emit();
    Hex(u64::from(buf[2] & 0xf), 2).emit();
    " asc=".emit();
    Hex(u64::from(buf[12]), 2).emit();
    " ascq=".emit();
    Hex(u64::from(buf[13]), 2).emit();
    line_end();
}

/// TEST UNIT READY until it passes (a fresh medium first reports UNIT ATTENTION; firmware
/// may or may not have consumed that already, so the attempts are not printed).
fn wait_ready(ch: &Channel) -> bool {
    for _ in 0..10 {
        let o = ch.packet(0, &cdb(&[0x00]), &mut [], BYTE_LIMIT, false);
        if o.status & ata::STATUS_ERR == 0 && !o.timed_out {
            return true;
        }
        let mut buf = [0u8; 18];
        ch.packet(0, &cdb(&[0x03, 0, 0, 0, 18]), &mut buf, BYTE_LIMIT, false);
    }
    false
}

pub fn run(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    let ch = &ide.secondary;
    reset_and_signatures(ch, "secondary");
    // A packet device aborts IDENTIFY DEVICE and leaves its signature.
    identify(ch, "secondary", 0, 0xec);
    let sig = ch.signature();
    kprintln!(
        "atapi: signature after identify ",
        Hex(u64::from(sig[2]), 2),
        " ",
        Hex(u64::from(sig[3]), 2)
    );
    // The transfer mode shows in the identity words; firmware may have chosen one.
    non_data(
        ch,
        "atapi: set-features xfer udma2",
        Task::new(0xef, 0).features(0x03).lba28(0, 0x42),
    );
    if identify(ch, "secondary", 0, 0xa1).is_none() {
        return;
    }
    if !wait_ready(ch) {
        kprintln!("atapi: not ready");
        sense(ch);
        packet(ch, "read-capacity", &cdb(&[0x25]), 8);
        sense(ch);
        packet(ch, "read10 lba 0", &read10(0, 1), 2048);
        sense(ch);
        return;
    }
    kprintln!("atapi: ready");
    sense(ch);

    let (_, inq) = packet(ch, "inquiry", &cdb(&[0x12, 0, 0, 0, 36]), 36);
    line_start(&["atapi: inquiry type="]);
    Hex(u64::from(inq[0]), 2).emit();
    " removable=".emit();
    Hex(u64::from(inq[1]), 2).emit();
    " version=".emit();
    Hex(u64::from(inq[2]), 2).emit();
    " \"".emit();
    crate::serial::write_bytes(&inq[8..36]);
    "\"".emit();
    line_end();

    let (o, cap) = packet(ch, "read-capacity", &cdb(&[0x25]), 8);
    let last = u32::from_be_bytes([cap[0], cap[1], cap[2], cap[3]]);
    let block = u32::from_be_bytes([cap[4], cap[5], cap[6], cap[7]]);
    kprintln!(
        "atapi: last lba ",
        Hex(u64::from(last), 1),
        " block ",
        Dec(u64::from(block))
    );
    if o.status & ata::STATUS_ERR != 0 || block != 2048 || last < 64 {
        kprintln!("atapi: unexpected capacity");
        return;
    }

    packet(ch, "read10 lba 0", &read10(0, 1), 2048);
    packet(ch, "read10 lba 16", &read10(16, 1), 2048);
    packet(ch, "read10 mid x4", &read10(last / 2, 4), 4 * 2048);
    packet(ch, "read10 last", &read10(last, 1), 2048);
    packet(ch, "read10 x0", &read10(100, 0), 2048);
    packet(ch, "read12 x3", &read12(last / 3, 3), 3 * 2048);

    // Two blocks by DMA.
    ata::write_prd_table(&[Prd {
        addr: ata::BUFFER_PHYS as u32,
        bytes: 4096,
        last: true,
    }]);
    let buf = ata::buffer(4096);
    buf.fill(0xcc);
    let o = ch.packet(0, &read10(last / 4, 2), &mut [], BYTE_LIMIT, true);
    line_start(&["atapi: read10 x2 dma"]);
    print_outcome_tail(&o, true);
    " sum=".emit();
    Hex(u64::from(checksum(ata::buffer(4096))), 8).emit();
    line_end();
    ch.bm_reset();

    packet(
        ch,
        "mode-sense capabilities",
        &cdb(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 64]),
        64,
    );
    packet(
        ch,
        "read-toc",
        &cdb(&[0x43, 0, 0, 0, 0, 0, 0, 0x03, 0x24]),
        0x324,
    );
    packet(
        ch,
        "get-configuration",
        &cdb(&[0x46, 0x02, 0, 0, 0, 0, 0, 0, 64]),
        64,
    );

    // Failures with sense data.
    packet(ch, "read10 past end", &read10(last + 1, 1), 2048);
    sense(ch);
    packet(ch, "read10 straddling end", &read10(last, 2), 4096);
    sense(ch);
    packet(ch, "unknown opcode ee", &cdb(&[0xee]), 64);
    sense(ch);
    packet(
        ch,
        "write10 on a cd",
        &cdb(&[0x2a, 0, 0, 0, 0, 16, 0, 0, 1]),
        2048,
    );
    sense(ch);

    // ATA commands a packet device refuses, and DEVICE RESET, which it takes.
    for (label, command) in [
        ("atapi: read-sectors on a cd", 0x20),
        ("atapi: read-dma on a cd", 0xc8),
        ("atapi: device-reset", 0x08),
    ] {
        non_data(ch, label, Task::new(command, 0).lba28(16, 1));
        let sig = ch.signature();
        kprintln!(
            "atapi: signature ",
            Hex(u64::from(sig[0]), 2),
            " ",
            Hex(u64::from(sig[1]), 2),
            " ",
            Hex(u64::from(sig[2]), 2),
            " ",
            Hex(u64::from(sig[3]), 2)
        );
    }
    let ready = wait_ready(ch);
    kprintln!(
        "atapi: ready after device reset: ",
        if ready { "yes" } else { "no" }
    );
    packet(ch, "read10 lba 16", &read10(16, 1), 2048);

    let o = ch.packet(0, &cdb(&[0x00]), &mut [], BYTE_LIMIT, false);
    line_start(&["atapi: test-unit-ready"]);
    print_outcome_tail(&o, false);
    line_end();
}
