//! A polled ATA/ATAPI driver for the PIIX IDE function: task-file commands with PIO data
//! (28- and 48-bit), bus-master DMA through a PRD table, and ATAPI PACKET commands.
//!
//! Interrupts stay masked in the CPU: the driver polls the status registers. The devices
//! still raise INTRQ (nIEN is clear), which the bus-master status register latches as its
//! interrupt bit, so DMA completion is observed as a PC driver observes it.

use crate::port::{inb, insw, outb, outl, outsw};

pub const SECTOR: usize = 512;

pub const STATUS_BSY: u8 = 0x80;
pub const STATUS_DRQ: u8 = 0x08;
pub const STATUS_ERR: u8 = 0x01;

const REG_DATA: u16 = 0;
const REG_ERROR_FEATURES: u16 = 1;
const REG_COUNT: u16 = 2;
const REG_LBA0: u16 = 3;
const REG_LBA1: u16 = 4;
const REG_LBA2: u16 = 5;
const REG_DEVICE: u16 = 6;
const REG_STATUS_COMMAND: u16 = 7;

const CTRL_SRST: u8 = 0x04;

const BM_COMMAND: u16 = 0;
const BM_STATUS: u16 = 2;
const BM_PRDT: u16 = 4;
const BM_START: u8 = 0x01;
/// Direction: the device writes to memory (a disk read).
const BM_TO_MEMORY: u8 = 0x08;
pub const BM_ACTIVE: u8 = 0x01;
pub const BM_ERROR: u8 = 0x02;
pub const BM_INTERRUPT: u8 = 0x04;
/// "Drive 0/1 DMA capable": plain storage bits the driver sets itself.
const BM_CAPABLE: u8 = 0x60;

/// How many status polls before a wait gives up (seconds on the slowest machine here).
const POLL_LIMIT: u32 = 3_000_000;

/// Physical address of the PRD table (64 KiB aligned: a table never crosses a 64 KiB
/// boundary), clear of the kernel image (1 MiB up, well under 3 MiB).
pub const PRDT_PHYS: u64 = 0x30_0000;
/// Physical address and size of the transfer buffer.
pub const BUFFER_PHYS: u64 = 0x40_0000;
pub const BUFFER_SIZE: usize = 4 << 20;

/// The transfer buffer: reserved physical memory nothing else in the kernel touches.
pub fn buffer(len: usize) -> &'static mut [u8] {
    assert!(len <= BUFFER_SIZE);
    // SAFETY: [BUFFER_PHYS, +BUFFER_SIZE) is identity-mapped RAM (every -m the tests use is
    // at least 128 MiB) reserved for this driver; scenarios use one buffer at a time.
    unsafe { core::slice::from_raw_parts_mut(BUFFER_PHYS as *mut u8, len) }
}

/// One PRD: a physical region and its byte count (65536 is encoded as 0).
#[derive(Clone, Copy)]
pub struct Prd {
    pub addr: u32,
    pub bytes: u32,
    pub last: bool,
}

/// Writes `prds` as the PRD table at [`PRDT_PHYS`].
pub fn write_prd_table(prds: &[Prd]) {
    for (i, prd) in prds.iter().enumerate() {
        let flags: u32 = if prd.last { 0x8000_0000 } else { 0 };
        let at = PRDT_PHYS + 8 * i as u64;
        let words = [prd.addr, (prd.bytes & 0xffff) | flags];
        for (j, w) in words.iter().enumerate() {
            // SAFETY: the PRD table area is reserved for this driver (see PRDT_PHYS).
            unsafe { ((at + 4 * j as u64) as *mut u32).write_volatile(*w) };
        }
    }
}

/// A task-file command.
#[derive(Clone, Copy)]
pub struct Task {
    pub command: u8,
    pub features: u16,
    pub count: u16,
    pub lba: u64,
    /// 0 = master, 1 = slave.
    pub device: u8,
    pub lba48: bool,
}

impl Task {
    pub fn new(command: u8, device: u8) -> Task {
        Task {
            command,
            features: 0,
            count: 0,
            lba: 0,
            device,
            lba48: false,
        }
    }

    pub fn lba28(mut self, lba: u64, count: u16) -> Task {
        self.lba = lba;
        self.count = count;
        self
    }

    pub fn lba48(mut self, lba: u64, count: u16) -> Task {
        self.lba = lba;
        self.count = count;
        self.lba48 = true;
        self
    }

    pub fn features(mut self, features: u16) -> Task {
        self.features = features;
        self
    }
}

/// How a command ended: the status and error registers (and, for DMA, the bus-master
/// status when the transfer ended), or `timed_out` when BSY never cleared.
#[derive(Clone, Copy)]
pub struct Outcome {
    pub status: u8,
    pub error: u8,
    pub bm_status: u8,
    /// Data blocks (DRQ phases) the device offered.
    pub blocks: u32,
    /// Bytes moved by PIO.
    pub bytes: u32,
    pub timed_out: bool,
}

/// One IDE channel: its command block, control block and bus-master registers.
pub struct Channel {
    pub cmd: u16,
    pub ctrl: u16,
    pub bm: u16,
}

impl Channel {
    pub fn primary(bm_base: u16) -> Channel {
        Channel {
            cmd: 0x1f0,
            ctrl: 0x3f6,
            bm: bm_base,
        }
    }

    pub fn secondary(bm_base: u16) -> Channel {
        Channel {
            cmd: 0x170,
            ctrl: 0x376,
            bm: bm_base + 8,
        }
    }

    pub fn reg(&self, reg: u16) -> u8 {
        inb(self.cmd + reg)
    }

    pub fn status(&self) -> u8 {
        inb(self.cmd + REG_STATUS_COMMAND)
    }

    pub fn alt_status(&self) -> u8 {
        inb(self.ctrl)
    }

    pub fn error(&self) -> u8 {
        inb(self.cmd + REG_ERROR_FEATURES)
    }

    pub fn bm_status(&self) -> u8 {
        inb(self.bm + BM_STATUS)
    }

    /// Clears the bus-master interrupt and error bits and marks both drives DMA capable.
    pub fn bm_reset(&self) {
        outb(self.bm + BM_COMMAND, 0);
        outb(self.bm + BM_STATUS, BM_CAPABLE | BM_INTERRUPT | BM_ERROR);
    }

    /// The 400 ns a device may take to show a new status after a register write.
    fn settle(&self) {
        for _ in 0..4 {
            self.alt_status();
        }
    }

    /// Polls until BSY clears; the status then, or None after [`POLL_LIMIT`] polls.
    pub fn wait_not_busy(&self) -> Option<u8> {
        for _ in 0..POLL_LIMIT {
            let status = self.alt_status();
            if status & STATUS_BSY == 0 {
                return Some(status);
            }
        }
        None
    }

    pub fn select(&self, device: u8) {
        outb(self.cmd + REG_DEVICE, 0xa0 | (device & 1) << 4);
        self.settle();
    }

    /// Software reset of both devices (SRST), then waits for the channel to settle.
    pub fn soft_reset(&self) -> Option<u8> {
        outb(self.ctrl, CTRL_SRST);
        crate::pit::delay_us(10);
        outb(self.ctrl, 0);
        crate::pit::delay_ms(2);
        self.wait_not_busy()
    }

    /// Writes the task file and the command.
    pub fn issue(&self, t: &Task) {
        let dev = (t.device & 1) << 4;
        if t.lba48 {
            outb(self.cmd + REG_DEVICE, 0x40 | dev);
        } else {
            outb(
                self.cmd + REG_DEVICE,
                0xe0 | dev | ((t.lba >> 24) & 0xf) as u8,
            );
        }
        self.settle();
        if t.lba48 {
            outb(self.cmd + REG_ERROR_FEATURES, (t.features >> 8) as u8);
            outb(self.cmd + REG_COUNT, (t.count >> 8) as u8);
            outb(self.cmd + REG_LBA0, (t.lba >> 24) as u8);
            outb(self.cmd + REG_LBA1, (t.lba >> 32) as u8);
            outb(self.cmd + REG_LBA2, (t.lba >> 40) as u8);
        }
        outb(self.cmd + REG_ERROR_FEATURES, t.features as u8);
        outb(self.cmd + REG_COUNT, t.count as u8);
        outb(self.cmd + REG_LBA0, t.lba as u8);
        outb(self.cmd + REG_LBA1, (t.lba >> 8) as u8);
        outb(self.cmd + REG_LBA2, (t.lba >> 16) as u8);
        outb(self.cmd + REG_STATUS_COMMAND, t.command);
        self.settle();
    }

    fn finish(&self, blocks: u32, bytes: u32, timed_out: bool) -> Outcome {
        Outcome {
            status: self.status(),
            error: self.error(),
            bm_status: self.bm_status(),
            blocks,
            bytes,
            timed_out,
        }
    }

    /// A command without data.
    pub fn non_data(&self, t: &Task) -> Outcome {
        self.issue(t);
        let timed_out = self.wait_not_busy().is_none();
        self.finish(0, 0, timed_out)
    }

    /// A PIO data-in command: `block` sectors per DRQ phase (1, or the multiple count).
    pub fn pio_in(&self, t: &Task, buf: &mut [u8], block: usize) -> Outcome {
        self.issue(t);
        self.pio_in_data(buf, block * SECTOR)
    }

    fn pio_in_data(&self, buf: &mut [u8], block_bytes: usize) -> Outcome {
        let mut done = 0;
        let mut blocks = 0;
        loop {
            let Some(status) = self.wait_not_busy() else {
                return self.finish(blocks, done as u32, true);
            };
            if status & STATUS_DRQ == 0 || status & STATUS_ERR != 0 || done >= buf.len() {
                break;
            }
            let n = block_bytes.min(buf.len() - done);
            read_words(self.cmd + REG_DATA, &mut buf[done..done + n]);
            done += n;
            blocks += 1;
        }
        self.finish(blocks, done as u32, false)
    }

    /// A PIO data-out command: `block` sectors per DRQ phase.
    pub fn pio_out(&self, t: &Task, data: &[u8], block: usize) -> Outcome {
        self.issue(t);
        let mut done = 0;
        let mut blocks = 0;
        loop {
            let Some(status) = self.wait_not_busy() else {
                return self.finish(blocks, done as u32, true);
            };
            if status & STATUS_DRQ == 0 || status & STATUS_ERR != 0 || done >= data.len() {
                break;
            }
            let n = (block * SECTOR).min(data.len() - done);
            write_words(self.cmd + REG_DATA, &data[done..done + n]);
            done += n;
            blocks += 1;
        }
        self.finish(blocks, done as u32, false)
    }

    /// Arms the bus master with the PRD table at [`PRDT_PHYS`] and the direction.
    fn bm_prepare(&self, to_memory: bool) -> u8 {
        let dir = if to_memory { BM_TO_MEMORY } else { 0 };
        outb(self.bm + BM_COMMAND, dir);
        outl(self.bm + BM_PRDT, PRDT_PHYS as u32);
        outb(self.bm + BM_STATUS, BM_CAPABLE | BM_INTERRUPT | BM_ERROR);
        dir
    }

    /// Starts the bus master and polls until the device interrupts, or the bus master
    /// stops being active with the device idle (a PRD table shorter than the transfer ends
    /// without an interrupt); then stops the engine.
    fn bm_run(&self, dir: u8) -> Outcome {
        outb(self.bm + BM_COMMAND, dir | BM_START);
        let mut timed_out = true;
        let mut bm_status = 0;
        for _ in 0..POLL_LIMIT {
            bm_status = self.bm_status();
            if bm_status & BM_INTERRUPT != 0
                || (bm_status & BM_ACTIVE == 0 && self.alt_status() & STATUS_BSY == 0)
            {
                timed_out = false;
                break;
            }
        }
        outb(self.bm + BM_COMMAND, dir);
        let mut outcome = self.finish(0, 0, timed_out);
        outcome.bm_status = bm_status;
        outcome
    }

    /// A DMA command through the PRD table already written at [`PRDT_PHYS`].
    pub fn dma(&self, t: &Task, to_memory: bool) -> Outcome {
        let dir = self.bm_prepare(to_memory);
        self.issue(t);
        self.bm_run(dir)
    }

    /// An ATAPI PACKET command reading into `buf` by PIO (DRQ phases of at most
    /// `byte_limit` bytes), or by DMA through the PRD table when `dma`.
    pub fn packet(
        &self,
        device: u8,
        cdb: &[u8; 12],
        buf: &mut [u8],
        byte_limit: u16,
        dma: bool,
    ) -> Outcome {
        let dir = if dma { self.bm_prepare(true) } else { 0 };
        let mut t = Task::new(0xa0, device).features(u16::from(dma));
        t.lba = u64::from(byte_limit) << 8;
        self.issue(&t);
        let Some(status) = self.wait_not_busy() else {
            return self.finish(0, 0, true);
        };
        if status & STATUS_DRQ == 0 || status & STATUS_ERR != 0 {
            return self.finish(0, 0, false);
        }
        write_words(self.cmd + REG_DATA, cdb);
        if dma {
            return self.bm_run(dir);
        }
        let mut done = 0usize;
        let mut blocks = 0;
        loop {
            let Some(status) = self.wait_not_busy() else {
                return self.finish(blocks, done as u32, true);
            };
            if status & STATUS_DRQ == 0 || status & STATUS_ERR != 0 {
                break;
            }
            let n = usize::from(self.reg(REG_LBA1)) | usize::from(self.reg(REG_LBA2)) << 8;
            let mut left = n;
            while left >= 2 {
                let take = left.min(buf.len().saturating_sub(done)) & !1;
                if take == 0 {
                    // More than the buffer holds: drain and drop.
                    let mut sink = [0u16; 1];
                    insw(self.cmd + REG_DATA, &mut sink);
                    left -= 2;
                    continue;
                }
                read_words(self.cmd + REG_DATA, &mut buf[done..done + take]);
                done += take;
                left -= take;
            }
            blocks += 1;
            if n == 0 {
                break;
            }
        }
        self.finish(blocks, done as u32, false)
    }

    /// The interrupt reason (sector count register) of an ATAPI device.
    pub fn interrupt_reason(&self) -> u8 {
        self.reg(REG_COUNT)
    }

    /// Count, LBA low/mid/high: the signature a device leaves after reset.
    pub fn signature(&self) -> [u8; 4] {
        [
            self.reg(REG_COUNT),
            self.reg(REG_LBA0),
            self.reg(REG_LBA1),
            self.reg(REG_LBA2),
        ]
    }
}

/// Reads `bytes.len()` bytes (even) from a 16-bit data port.
fn read_words(port: u16, bytes: &mut [u8]) {
    let mut chunk = [0u16; 256];
    for part in bytes.chunks_mut(512) {
        let words = &mut chunk[..part.len() / 2];
        insw(port, words);
        for (i, w) in words.iter().enumerate() {
            part[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Writes `bytes` (even length) to a 16-bit data port.
fn write_words(port: u16, bytes: &[u8]) {
    let mut chunk = [0u16; 256];
    for part in bytes.chunks(512) {
        let words = &mut chunk[..part.len() / 2];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u16::from_le_bytes([part[2 * i], part[2 * i + 1]]);
        }
        outsw(port, words);
    }
}
