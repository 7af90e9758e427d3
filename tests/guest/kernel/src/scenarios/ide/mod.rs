//! The IDE scenarios: the PIIX IDE function found on PCI and set up as a driver must under
//! direct boot (bus-master BAR assigned when firmware left it 0, I/O and bus mastering
//! enabled), then ATA disks and the ATAPI CD-ROM driven through [`crate::ata`]. Every line
//! is deterministic for given disks: checksums of the data read, the status, error and
//! bus-master status registers, identity words.

mod atapi;
mod bench;
mod disk;
mod errors;
mod probe;

pub use atapi::run as run_atapi;
pub use bench::run as run_dma_bench;
pub use disk::{run_48bit, run_dma, run_pio};
pub use errors::run as run_errors;
pub use probe::run as run_probe;

use crate::ata::{self, Channel, Outcome, Prd, Task, SECTOR};
use crate::console::{Dec, Emit, Hex};
use crate::{kprintln, pci};

/// Where the kernel puts the bus-master registers when firmware has not (direct boot).
const DEFAULT_BM_BASE: u32 = 0xc000;

pub struct Ide {
    pub primary: Channel,
    pub secondary: Channel,
}

/// Finds the IDE function and makes it usable: legacy decode on, BAR4 assigned, I/O and
/// bus mastering enabled. Prints only what does not depend on the firmware's choices.
pub fn setup() -> Option<Ide> {
    let Some(bdf) = pci::find_class(0x01, 0x01) else {
        kprintln!("ide: no IDE controller on PCI bus 0");
        return None;
    };
    let id = bdf.read32(0);
    let class = bdf.read32(8) >> 8;
    kprintln!(
        "ide: controller at ",
        Hex(u64::from(bdf.device), 2),
        ".",
        Dec(u64::from(bdf.function)),
        " id ",
        Hex(u64::from(id & 0xffff), 4),
        ":",
        Hex(u64::from(id >> 16), 4),
        " class ",
        Hex(u64::from(class), 6)
    );
    // IDETIM of both channels: bit 15 enables the legacy ports on a PIIX.
    for reg in [0x40, 0x42] {
        bdf.write16(reg, bdf.read16(reg) | 0x8000);
    }
    if bdf.read32(0x20) & 0xfffc == 0 {
        bdf.write32(0x20, DEFAULT_BM_BASE);
    }
    let bar4 = bdf.read32(0x20);
    let base = (bar4 & 0xfffc) as u16;
    if base == 0 || bar4 & 1 == 0 {
        kprintln!(
            "ide: BAR4 is not an assignable I/O BAR: ",
            Hex(u64::from(bar4), 8)
        );
        return None;
    }
    bdf.write16(0x04, bdf.read16(0x04) | 0x0005);
    kprintln!(
        "ide: bar4 is I/O, command io+master ",
        Hex(u64::from(bdf.read16(0x04) & 0x0005), 4)
    );
    let ide = Ide {
        primary: Channel::primary(base),
        secondary: Channel::secondary(base),
    };
    ide.primary.bm_reset();
    ide.secondary.bm_reset();
    Some(ide)
}

/// Software reset of a channel and the signature each device leaves.
pub fn reset_and_signatures(ch: &Channel, name: &str) {
    // The status read after the reset comes from the selected device: select the master
    // (firmware may have left the slave selected).
    ch.select(0);
    let status = ch.soft_reset();
    match status {
        Some(s) => kprintln!("ide: ", name, " reset status ", Hex(u64::from(s), 2)),
        None => kprintln!("ide: ", name, " reset: BSY stuck"),
    }
    for dev in 0..2u8 {
        ch.select(dev);
        let sig = ch.signature();
        kprintln!(
            "ide: ",
            name,
            ".",
            Dec(u64::from(dev)),
            " signature ",
            Hex(u64::from(sig[0]), 2),
            " ",
            Hex(u64::from(sig[1]), 2),
            " ",
            Hex(u64::from(sig[2]), 2),
            " ",
            Hex(u64::from(sig[3]), 2),
            " status ",
            Hex(u64::from(ch.status()), 2)
        );
    }
    ch.select(0);
}

/// The checksum the boot program uses too: h = rol(h, 5) + dword, over little-endian
/// dwords.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes.chunks(4).fold(0u32, |h, d| {
        let mut w = [0u8; 4];
        w[..d.len()].copy_from_slice(d);
        h.rotate_left(5).wrapping_add(u32::from_le_bytes(w))
    })
}

/// The write pattern of seed `seed`: dword i = seed * 0x01000193 ^ i * 0x9e3779b9.
pub fn fill_pattern(buf: &mut [u8], seed: u32) {
    let base = seed.wrapping_mul(0x0100_0193);
    for (i, d) in buf.chunks_mut(4).enumerate() {
        let v = base ^ (i as u32).wrapping_mul(0x9e37_79b9);
        d.copy_from_slice(&v.to_le_bytes()[..d.len()]);
    }
}

/// " st=XX err=XX", " bm=XX" when `dma`, " TIMEOUT" when the device never finished.
pub fn print_outcome_tail(o: &Outcome, dma: bool) {
    " st=".emit();
    Hex(u64::from(o.status), 2).emit();
    " err=".emit();
    Hex(u64::from(o.error), 2).emit();
    if dma {
        " bm=".emit();
        Hex(u64::from(o.bm_status), 2).emit();
    }
    if o.timed_out {
        " TIMEOUT".emit();
    }
}

/// Starts a line: prefix, then `words`.
pub fn line_start(words: &[&str]) {
    crate::serial::write_bytes(crate::console::LINE_PREFIX.as_bytes());
    for w in words {
        crate::serial::write_bytes(w.as_bytes());
    }
}

pub fn line_end() {
    crate::serial::write_bytes(b"\r\n");
}

fn emit_lba(lba: u64, count: u32) {
    " lba=".emit();
    Hex(lba, 1).emit();
    " n=".emit();
    Dec(u64::from(count)).emit();
}

/// Sectors a task moves (count 0 means 256, or 65536 with 48-bit commands).
fn task_sectors(t: &Task) -> u32 {
    match (t.count, t.lba48) {
        (0, false) => 256,
        (0, true) => 65536,
        (n, false) => u32::from(n & 0xff).max(1),
        (n, true) => u32::from(n),
    }
}

/// A PIO read, its outcome and the checksum of the buffer (poisoned with 0xcc first).
pub fn pio_read(ch: &Channel, label: &str, t: Task, block: usize) -> u32 {
    let n = task_sectors(&t);
    let buf = ata::buffer(n as usize * SECTOR);
    buf.fill(0xcc);
    let o = ch.pio_in(&t, buf, block);
    let sum = checksum(buf);
    line_start(&[label]);
    emit_lba(t.lba, n);
    print_outcome_tail(&o, false);
    " blocks=".emit();
    Dec(u64::from(o.blocks)).emit();
    " sum=".emit();
    Hex(u64::from(sum), 8).emit();
    line_end();
    sum
}

/// A PIO write of the pattern with seed = LBA.
pub fn pio_write(ch: &Channel, label: &str, t: Task, block: usize) {
    let n = task_sectors(&t);
    let buf = ata::buffer(n as usize * SECTOR);
    fill_pattern(buf, t.lba as u32);
    let o = ch.pio_out(&t, buf, block);
    line_start(&[label]);
    emit_lba(t.lba, n);
    print_outcome_tail(&o, false);
    " blocks=".emit();
    Dec(u64::from(o.blocks)).emit();
    " sum=".emit();
    Hex(u64::from(checksum(buf)), 8).emit();
    line_end();
}

/// A command without data.
pub fn non_data(ch: &Channel, label: &str, t: Task) -> Outcome {
    let o = ch.non_data(&t);
    line_start(&[label]);
    print_outcome_tail(&o, false);
    line_end();
    o
}

/// PRDs splitting `lengths` bytes over the transfer buffer, back to back.
pub fn prds_over_buffer(lengths: &[u32], out: &mut [Prd]) -> usize {
    let mut addr = ata::BUFFER_PHYS as u32;
    for (i, &len) in lengths.iter().enumerate() {
        out[i] = Prd {
            addr,
            bytes: len,
            last: i + 1 == lengths.len(),
        };
        addr += if len == 0 { 0x1_0000 } else { len };
    }
    lengths.len()
}

/// A DMA transfer through PRDs laid over the buffer with `lengths`; for reads the buffer
/// is poisoned first and the checksum covers every byte the PRDs describe; for writes it
/// holds the pattern of seed = LBA.
pub fn dma(ch: &Channel, label: &str, t: Task, to_memory: bool, lengths: &[u32]) -> u32 {
    let mut prds = [Prd {
        addr: 0,
        bytes: 0,
        last: false,
    }; 16];
    let count = prds_over_buffer(lengths, &mut prds);
    ata::write_prd_table(&prds[..count]);
    let total: usize = lengths
        .iter()
        .map(|&l| if l == 0 { 0x1_0000 } else { l as usize })
        .sum();
    let buf = ata::buffer(total);
    if to_memory {
        buf.fill(0xcc);
    } else {
        fill_pattern(buf, t.lba as u32);
    }
    let o = ch.dma(&t, to_memory);
    let sum = checksum(buf);
    line_start(&[label]);
    emit_lba(t.lba, task_sectors(&t));
    " prds=".emit();
    Dec(count as u64).emit();
    print_outcome_tail(&o, true);
    " sum=".emit();
    Hex(u64::from(sum), 8).emit();
    line_end();
    ch.bm_reset();
    sum
}

/// A byte-swapped ATA identify string, trailing spaces dropped.
fn identify_string(words: &[u16], out: &mut [u8]) -> usize {
    let mut n = 0;
    for w in words {
        out[n] = (w >> 8) as u8;
        out[n + 1] = *w as u8;
        n += 2;
    }
    while n > 0 && (out[n - 1] == b' ' || out[n - 1] == 0) {
        n -= 1;
    }
    n
}

/// IDENTIFY (DEVICE or PACKET DEVICE) and the identity it reports, all 256 words.
/// Returns the words, or None when the device aborted.
pub fn identify(ch: &Channel, name: &str, dev: u8, command: u8) -> Option<[u16; 256]> {
    let mut raw = [0u8; 512];
    let o = ch.pio_in(&Task::new(command, dev), &mut raw, 1);
    line_start(&["ide: ", name, ".", if dev == 0 { "0" } else { "1" }]);
    " identify ".emit();
    Hex(u64::from(command), 2).emit();
    print_outcome_tail(&o, false);
    " bytes=".emit();
    Dec(u64::from(o.bytes)).emit();
    line_end();
    if o.bytes != 512 {
        return None;
    }
    let mut words = [0u16; 256];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]);
    }
    let mut s = [0u8; 40];
    let n = identify_string(&words[27..47], &mut s);
    line_start(&["ide: model \""]);
    crate::serial::write_bytes(&s[..n]);
    let n = identify_string(&words[10..20], &mut s);
    crate::serial::write_bytes(b"\" serial \"");
    crate::serial::write_bytes(&s[..n]);
    let n = identify_string(&words[23..27], &mut s);
    crate::serial::write_bytes(b"\" firmware \"");
    crate::serial::write_bytes(&s[..n]);
    crate::serial::write_bytes(b"\"");
    line_end();
    let lba28 = u64::from(words[60]) | u64::from(words[61]) << 16;
    let lba48 = (0..4).fold(0u64, |acc, i| acc | u64::from(words[100 + i]) << (16 * i));
    kprintln!(
        "ide: capacity lba28 ",
        Hex(lba28, 1),
        " lba48 ",
        Hex(lba48, 1),
        " chs ",
        Dec(u64::from(words[1])),
        "/",
        Dec(u64::from(words[3])),
        "/",
        Dec(u64::from(words[6]))
    );
    for row in 0..16 {
        line_start(&["ide: words "]);
        Hex(row as u64 * 16, 2).emit();
        crate::serial::write_bytes(b":");
        for &w in &words[row * 16..row * 16 + 16] {
            // Four bare digits per word (no 0x) keep the rows short.
            let mut digits = *b" 0000";
            for (j, d) in digits[1..].iter_mut().enumerate() {
                *d = b"0123456789abcdef"[usize::from((w >> (12 - 4 * j)) & 0xf)];
            }
            crate::serial::write_bytes(&digits);
        }
        line_end();
    }
    Some(words)
}

/// Puts a disk into a state that does not depend on what firmware did before (SeaBIOS on
/// QEMU, nothing on vmscope's direct boot): UDMA mode 2 selected, multiple count 16. Then
/// identifies it. Returns the LBA capacity (48-bit when supported).
pub fn prepare_disk(ch: &Channel, name: &str, dev: u8) -> u64 {
    non_data(
        ch,
        "ide: set-features xfer udma2",
        Task::new(0xef, dev).features(0x03).lba28(0, 0x42),
    );
    non_data(
        ch,
        "ide: set-multiple 16",
        Task::new(0xc6, dev).lba28(0, 16),
    );
    match identify(ch, name, dev, 0xec) {
        Some(words) => {
            let lba28 = u64::from(words[60]) | u64::from(words[61]) << 16;
            let lba48 = (0..4).fold(0u64, |acc, i| acc | u64::from(words[100 + i]) << (16 * i));
            if words[83] & (1 << 10) != 0 {
                lba48
            } else {
                lba28
            }
        }
        None => 0,
    }
}
