//! The channel driven through its registers the way a driver does, with a recorded interrupt
//! line, a raw image through the block layer and guest memory for DMA.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::channel::*;
use super::identify;
use super::packet::{PacketDevice, PacketMode, PacketResult, PacketSense};
use crate::block::drive::{Drive, DriveKind, DriveSlot, DriveSpec};
use crate::block::options::OpenOptions;
use crate::hw::irq::InterruptLine;

#[derive(Default)]
struct MockIrq {
    high: AtomicBool,
    raised: AtomicUsize,
}

impl InterruptLine for MockIrq {
    fn set_level(&self, high: bool) {
        if high && !self.high.load(Ordering::SeqCst) {
            self.raised.fetch_add(1, Ordering::SeqCst);
        }
        self.high.store(high, Ordering::SeqCst);
    }
}

/// Sector `s`, byte `i` of the test images.
fn pattern(sector: u64, i: usize) -> u8 {
    (sector as u8).wrapping_mul(7).wrapping_add(i as u8)
}

struct TempImage(PathBuf);

impl TempImage {
    fn new(sectors: u64) -> TempImage {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "vmscope-ide-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut bytes = vec![0u8; (sectors * 512) as usize];
        for (s, chunk) in bytes.chunks_exact_mut(512).enumerate() {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = pattern(s as u64, i);
            }
        }
        std::fs::write(&path, bytes).unwrap();
        TempImage(path)
    }

    fn sector(&self, s: u64) -> Vec<u8> {
        let bytes = std::fs::read(&self.0).unwrap();
        bytes[(s * 512) as usize..(s * 512 + 512) as usize].to_vec()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn drive(image: &TempImage, kind: DriveKind) -> Arc<Drive> {
    Arc::new(
        Drive::open(DriveSpec {
            id: "ide0-hd0".into(),
            file: Some(image.0.clone()),
            kind,
            slot: DriveSlot::Ide { bus: 0, unit: 0 },
            open: OpenOptions {
                format: Some("raw".into()),
                ..Default::default()
            },
            snapshot: false,
            device: None,
        })
        .unwrap(),
    )
}

const RAM: u64 = 16 << 20;

struct Rig {
    channel: Channel,
    irq: Arc<MockIrq>,
    memory: GuestMemoryMmap,
    drive: Arc<Drive>,
    image: TempImage,
}

impl Rig {
    /// A disk of `sectors` as master, nothing as slave.
    fn disk(sectors: u64) -> Rig {
        let image = TempImage::new(sectors);
        let drive = drive(&image, DriveKind::Disk);
        let disk = Disk::new(drive.clone()).unwrap();
        Rig::with(Attachment::Disk(disk), Attachment::Empty, image, drive)
    }

    fn with(master: Attachment, slave: Attachment, image: TempImage, drive: Arc<Drive>) -> Rig {
        let irq = Arc::new(MockIrq::default());
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let channel = Channel::new(
            [
                (master, identify::default_serial(0, 0)),
                (slave, identify::default_serial(0, 1)),
            ],
            irq.clone(),
            memory.clone(),
        );
        Rig {
            channel,
            irq,
            memory,
            drive,
            image,
        }
    }

    fn outb(&self, reg: u16, value: u8) {
        self.channel.write_command_block(reg, &[value]);
    }

    fn inb(&self, reg: u16) -> u8 {
        let mut b = [0u8];
        self.channel.read_command_block(reg, &mut b);
        b[0]
    }

    fn alt_status(&self) -> u8 {
        let mut b = [0u8];
        self.channel.read_control(&mut b);
        b[0]
    }

    fn inw(&self) -> u16 {
        let mut w = [0u8; 2];
        self.channel.read_command_block(0, &mut w);
        u16::from_le_bytes(w)
    }

    fn outw(&self, value: u16) {
        self.channel.write_command_block(0, &value.to_le_bytes());
    }

    fn read_block(&self, bytes: usize) -> Vec<u8> {
        (0..bytes / 2)
            .flat_map(|_| self.inw().to_le_bytes())
            .collect()
    }

    fn irq_high(&self) -> bool {
        self.irq.high.load(Ordering::SeqCst)
    }

    fn raised(&self) -> usize {
        self.irq.raised.load(Ordering::SeqCst)
    }

    /// LBA28 addressing of `count` sectors from `lba` on device 0, then `command`.
    fn lba28(&self, command: u8, lba: u32, count: u8) {
        self.outb(6, 0xe0 | ((lba >> 24) as u8 & 0x0f));
        self.outb(2, count);
        self.outb(3, lba as u8);
        self.outb(4, (lba >> 8) as u8);
        self.outb(5, (lba >> 16) as u8);
        self.outb(7, command);
    }

    fn lba48(&self, command: u8, lba: u64, count: u16) {
        self.outb(6, 0x40);
        self.outb(2, (count >> 8) as u8);
        self.outb(3, (lba >> 24) as u8);
        self.outb(4, (lba >> 32) as u8);
        self.outb(5, (lba >> 40) as u8);
        self.outb(2, count as u8);
        self.outb(3, lba as u8);
        self.outb(4, (lba >> 8) as u8);
        self.outb(5, (lba >> 16) as u8);
        self.outb(7, command);
    }

    fn bm_read(&self, offset: u16) -> u8 {
        let mut b = [0u8];
        self.channel.read_bus_master(offset, &mut b);
        b[0]
    }

    fn bm_write(&self, offset: u16, value: u8) {
        self.channel.write_bus_master(offset, &[value]);
    }

    fn set_prd_table(&self, table: u32, entries: &[(u32, u32)]) {
        for (i, &(addr, control)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&addr.to_le_bytes());
            e[4..].copy_from_slice(&control.to_le_bytes());
            self.memory
                .write_slice(&e, GuestAddress(u64::from(table) + 8 * i as u64))
                .unwrap();
        }
        self.channel.write_bus_master(4, &table.to_le_bytes());
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.memory.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn stat(&self, f: impl Fn(&crate::block::drive::BlockStats) -> &AtomicU64) -> u64 {
        f(self.drive.stats()).load(Ordering::Relaxed)
    }
}

fn expected_sector(s: u64) -> Vec<u8> {
    (0..512).map(|i| pattern(s, i)).collect()
}

/// IDENTIFY DEVICE of a 1 MiB raw disk at ide0-hd0, read from QEMU 7.2 (`-drive
/// file=disk.img,format=raw`, a boot sector printing the words after SeaBIOS booted it).
const QEMU_IDENTIFY_1M: &str = "\
0040 0002 0000 0010 7E00 0200 003F 0000 0000 0000 514D 3030 3030 3120 2020 2020
2020 2020 2020 2020 0003 0200 0004 322E 352B 2020 2020 5145 4D55 2048 4152 4444
4953 4B20 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 8010
0001 0B00 0000 0200 0200 0007 0002 0010 003F 07E0 0000 0110 0800 0000 0007 0007
0003 0078 0078 0078 0078 4000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000
00F0 0016 4021 7400 4000 4021 3400 4000 203F 0000 0000 0000 0000 6001 0000 0000
0000 0000 0000 0000 0800 0000 0000 0000 0000 0000 6000 0000 0000 0000 0000 0000";

#[test]
fn identify_matches_qemu_7_2_word_for_word() {
    let rig = Rig::disk(2048);
    rig.outb(6, 0xa0);
    rig.outb(7, 0xec);
    assert_eq!(rig.inb(7), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    let words: Vec<u16> = (0..256).map(|_| rig.inw()).collect();
    let expected: Vec<u16> = QEMU_IDENTIFY_1M
        .split_whitespace()
        .map(|w| u16::from_str_radix(w, 16).unwrap())
        .collect();
    assert_eq!(&words[..expected.len()], &expected[..]);
    // Past word 111 only word 169 (TRIM) is set.
    for (i, &w) in words.iter().enumerate().skip(expected.len()) {
        assert_eq!(w, u16::from(i == 169), "word {i}");
    }
    assert_eq!(
        rig.inb(7),
        STATUS_DRDY | STATUS_DSC,
        "DRQ ends with the data"
    );
    assert_eq!(rig.inw(), 0, "no data phase: the data port reads 0");
}

#[test]
fn pio_read_lba28_raises_an_interrupt_per_drq_block() {
    let rig = Rig::disk(2048);
    rig.lba28(0x20, 100, 2);
    assert!(rig.irq_high());
    assert_eq!(rig.alt_status(), 0x58);
    assert!(rig.irq_high(), "alternate status leaves the line alone");
    assert_eq!(rig.inb(7), 0x58);
    assert!(!rig.irq_high(), "status read acknowledges");
    assert_eq!(rig.read_block(512), expected_sector(100));
    assert!(rig.irq_high(), "second block");
    assert_eq!(rig.inb(7), 0x58);
    assert_eq!(rig.read_block(512), expected_sector(101));
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.raised(), 2);
    assert_eq!((rig.inb(3), rig.inb(4), rig.inb(2)), (102, 0, 0));
    assert_eq!(rig.stat(|s| &s.rd_operations), 2);
    assert_eq!(rig.stat(|s| &s.rd_bytes), 1024);
}

#[test]
fn pio_write_reaches_the_image_and_count_zero_means_256() {
    let rig = Rig::disk(2048);
    rig.lba28(0x30, 300, 1);
    assert_eq!(
        rig.inb(7),
        0x58,
        "DRQ for the first block, no interrupt yet"
    );
    assert_eq!(rig.raised(), 0);
    for i in 0..256u16 {
        rig.outw(i.wrapping_mul(3));
    }
    assert_eq!(rig.raised(), 1);
    assert_eq!(rig.inb(7), 0x50);
    let written: Vec<u8> = (0..256u16)
        .flat_map(|i| i.wrapping_mul(3).to_le_bytes())
        .collect();
    assert_eq!(rig.image.sector(300), written);
    assert_eq!(rig.stat(|s| &s.wr_highest_offset), 301 * 512);
    rig.outb(7, 0xe7);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.stat(|s| &s.flush_operations), 1);
    // A count of 0 reads 256 sectors.
    rig.lba28(0x20, 0, 0);
    for s in 0..256 {
        assert_eq!(rig.inb(7), 0x58, "block {s}");
        rig.read_block(512);
    }
    assert_eq!(rig.inb(7), 0x50);
}

#[test]
fn lba48_commands_use_the_high_order_bytes() {
    let rig = Rig::disk(2048);
    rig.lba48(0x24, 0x7ff, 1);
    assert_eq!(rig.inb(7), 0x58);
    assert_eq!(rig.read_block(512), expected_sector(0x7ff));
    // Registers after the command: LBA 0x800 in the low bytes.
    assert_eq!((rig.inb(3), rig.inb(4), rig.inb(5)), (0x00, 0x08, 0));
    rig.channel.write_control(&[CONTROL_HOB]);
    assert_eq!((rig.inb(3), rig.inb(4), rig.inb(5)), (0, 0, 0));
    // An LBA above 2^32 is past the end.
    rig.lba48(0x24, 1 << 32, 1);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
    assert_eq!(rig.stat(|s| &s.invalid_rd_operations), 1);
}

#[test]
fn read_multiple_moves_blocks_of_the_set_size() {
    let rig = Rig::disk(2048);
    rig.outb(2, 3);
    rig.outb(7, 0xc6);
    assert_eq!(
        (rig.inb(7), rig.inb(1)),
        (0x41, ERROR_ABRT),
        "3 is no power of two"
    );
    rig.outb(2, 4);
    rig.outb(7, 0xc6);
    assert_eq!(rig.inb(7), 0x50);
    rig.lba28(0xc4, 10, 6);
    assert_eq!(rig.inb(7), 0x58);
    let first = rig.read_block(4 * 512);
    assert_eq!(&first[1536..], &expected_sector(13)[..]);
    assert_eq!(rig.inb(7), 0x58);
    let second = rig.read_block(2 * 512);
    assert_eq!(&second[512..], &expected_sector(15)[..]);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.raised(), 4, "two SET MULTIPLE, two blocks");
    // WRITE MULTIPLE asks for blocks of 4 too.
    rig.lba28(0xc5, 20, 5);
    for _ in 0..4 * 256 {
        rig.outw(0xabcd);
    }
    assert_eq!(rig.inb(7), 0x58, "second block");
    for _ in 0..256 {
        rig.outw(0x1234);
    }
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.image.sector(24)[..2], [0x34, 0x12]);
    assert_eq!(rig.image.sector(23)[..2], [0xcd, 0xab]);
}

#[test]
fn chs_addressing_uses_the_guessed_geometry() {
    let rig = Rig::disk(4096); // 4 cylinders of 16 heads x 63 sectors
                               // Cylinder 1, head 2, sector 5 = (1*16 + 2)*63 + 4.
    rig.outb(6, 0xa2);
    rig.outb(2, 1);
    rig.outb(3, 5);
    rig.outb(4, 1);
    rig.outb(5, 0);
    rig.outb(7, 0x20);
    assert_eq!(rig.read_block(512), expected_sector(18 * 63 + 4));
    assert_eq!((rig.inb(3), rig.inb(6)), (6, 0xa2));
    // Sector number 0 does not exist in CHS.
    rig.outb(6, 0xa0);
    rig.outb(4, 0);
    rig.outb(2, 1);
    rig.outb(3, 0);
    rig.outb(7, 0x20);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
}

#[test]
fn errors_abort_and_interrupt() {
    let rig = Rig::disk(2048);
    rig.lba28(0x20, 2047, 2);
    assert_eq!(rig.inb(7), 0x58, "the last sector exists");
    rig.read_block(512);
    assert_eq!(
        (rig.inb(7), rig.inb(1)),
        (0x41, ERROR_ABRT),
        "the next one not"
    );
    rig.lba28(0x30, 2048, 1);
    for _ in 0..256 {
        rig.outw(0);
    }
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
    assert_eq!(rig.stat(|s| &s.invalid_wr_operations), 1);
    rig.outb(7, 0x55);
    assert_eq!(
        (rig.inb(7), rig.inb(1)),
        (0x41, ERROR_ABRT),
        "unknown command"
    );
    rig.outb(7, 0xa0);
    assert_eq!(
        (rig.inb(7), rig.inb(1)),
        (0x41, ERROR_ABRT),
        "PACKET to a disk"
    );
    assert_eq!(rig.raised(), 5);
    // The next good command clears the error.
    rig.outb(7, 0x70);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x50, 0));
}

#[test]
fn the_wrong_state_is_ignored_and_resets_recover() {
    let rig = Rig::disk(2048);
    rig.lba28(0x20, 5, 1);
    // During DRQ the registers and new commands are locked out.
    rig.outb(3, 99);
    rig.outb(7, 0xec);
    assert_eq!(rig.inb(3), 6);
    assert_eq!(rig.inb(7), 0x58);
    // Writes in a data-in phase are dropped; the data still comes.
    rig.outw(0xffff);
    assert_eq!(rig.read_block(512), expected_sector(5));
    // Software reset in the middle of a write.
    rig.lba28(0x30, 5, 1);
    rig.outw(1);
    rig.channel.write_control(&[CONTROL_SRST | CONTROL_NIEN]);
    rig.channel.write_control(&[CONTROL_NIEN]);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.inb(1), 0x01, "diagnostic code: passed");
    assert_eq!(
        (rig.inb(2), rig.inb(3), rig.inb(4), rig.inb(5)),
        (1, 1, 0, 0)
    );
    assert_eq!(
        rig.image.sector(5),
        expected_sector(5),
        "the half sector was dropped"
    );
    assert_eq!(rig.inw(), 0);
    // nIEN keeps the line low.
    let before = rig.raised();
    rig.outb(7, 0x70);
    assert_eq!(rig.raised(), before);
    rig.channel.write_control(&[0]);
    rig.outb(7, 0x70);
    assert_eq!(rig.raised(), before + 1);
}

#[test]
fn an_absent_slave_reads_zero_and_ignores_commands() {
    let rig = Rig::disk(2048);
    rig.outb(6, 0xb0);
    assert_eq!(rig.inb(7), 0);
    assert_eq!(rig.alt_status(), 0);
    rig.outb(7, 0xec);
    assert_eq!(rig.raised(), 0);
    assert_eq!(rig.inb(1), 0);
    rig.outb(6, 0xa0);
    assert_eq!(rig.inb(7), 0x50);
}

#[test]
fn set_features_and_power_commands() {
    let rig = Rig::disk(2048);
    rig.outb(7, 0xec);
    rig.read_block(512);
    rig.outb(1, 0x82);
    rig.outb(7, 0xef);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(
        rig.stat(|s| &s.flush_operations),
        1,
        "disabling the cache flushes"
    );
    rig.outb(1, 0x03);
    rig.outb(2, 0x45); // multiword DMA 2... as UDMA? 0x45 = UDMA mode 5 is 0x45
    rig.outb(7, 0xef);
    rig.outb(7, 0xec);
    let id = rig.read_block(512);
    let word = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
    assert_eq!(word(85), 0x4001);
    assert_eq!(word(88), 0x3f | (1 << 13));
    rig.outb(1, 0x77);
    rig.outb(7, 0xef);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
    rig.outb(7, 0xe5);
    assert_eq!((rig.inb(7), rig.inb(2)), (0x50, 0xff));
    rig.outb(7, 0xe0);
    assert_eq!(rig.inb(7), 0x40, "STANDBY IMMEDIATE completes without DSC");
    rig.outb(6, 0xe0);
    rig.outb(7, 0xf8);
    assert_eq!(
        (rig.inb(3), rig.inb(4), rig.inb(5)),
        (0xff, 0x07, 0),
        "native max 2047"
    );
}

#[test]
fn transfer_mode_set_before_the_first_identify_is_reported() {
    // Under QEMU the firmware's IDENTIFY always comes first, so the guest sees the edit.
    let rig = Rig::disk(2048);
    rig.outb(1, 0x03);
    rig.outb(2, 0x42); // UDMA mode 2
    rig.outb(7, 0xef);
    assert_eq!(rig.inb(7), 0x50);
    rig.outb(7, 0xec);
    let id = rig.read_block(512);
    let word = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
    assert_eq!((word(62), word(63), word(88)), (0x07, 0x07, 0x043f));
}

#[test]
fn dma_read_through_a_prd_chain() {
    let rig = Rig::disk(2048);
    rig.bm_write(2, 0x60);
    rig.set_prd_table(0x1000, &[(0x20000, 512), (0x30000, 0x8000_0400)]);
    rig.lba28(0xc8, 50, 3);
    assert_eq!(
        rig.inb(7) & STATUS_DRQ,
        STATUS_DRQ,
        "waits for the bus master"
    );
    assert_eq!(rig.raised(), 0);
    rig.bm_write(0, 0x09);
    assert!(rig.irq_high());
    assert_eq!(rig.bm_read(2), 0x60 | 0x04, "interrupt, no longer active");
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.guest(0x20000, 512), expected_sector(50));
    assert_eq!(rig.guest(0x30000, 512), expected_sector(51));
    assert_eq!(rig.guest(0x30200, 512), expected_sector(52));
    assert_eq!((rig.inb(3), rig.inb(2)), (53, 0));
    rig.bm_write(2, 0x64);
    assert_eq!(rig.bm_read(2), 0x60, "interrupt cleared by writing 1");
    assert_eq!(rig.stat(|s| &s.rd_bytes), 1536);
}

#[test]
fn dma_write_and_a_started_bus_master_runs_at_once() {
    let rig = Rig::disk(2048);
    rig.memory
        .write_slice(&[0x5a; 1024], GuestAddress(0x40000))
        .unwrap();
    rig.set_prd_table(0x1000, &[(0x40000, 0x8000_0400)]);
    rig.bm_write(0, 0x01);
    rig.lba28(0xca, 7, 2);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.bm_read(2) & 0x07, 0x04);
    assert_eq!(rig.image.sector(8), vec![0x5a; 512]);
}

#[test]
fn dma_zero_length_prd_means_64k() {
    let rig = Rig::disk(2048);
    rig.set_prd_table(0x1000, &[(0x100000, 0x8000_0000)]);
    rig.lba28(0xc8, 0, 128);
    rig.bm_write(0, 0x09);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.guest(0x100000 + 127 * 512, 512), expected_sector(127));
}

#[test]
fn short_and_endless_prd_tables_stop_without_interrupt() {
    let rig = Rig::disk(2048);
    rig.set_prd_table(0x1000, &[(0x20000, 0x8000_0200)]);
    rig.lba28(0xc8, 0, 2);
    rig.bm_write(0, 0x09);
    assert_eq!(rig.raised(), 0);
    assert_eq!(rig.bm_read(2) & 0x07, 0, "neither active nor interrupt");
    assert_eq!(rig.inb(7), 0x50);
    // 512 entries of 2 bytes and no end mark: the walk stops after one page.
    let entries: Vec<(u32, u32)> = (0..600).map(|_| (0x20000, 2)).collect();
    rig.set_prd_table(0x2000, &entries);
    rig.bm_write(0, 0);
    rig.lba28(0xc8, 0, 4);
    rig.bm_write(0, 0x09);
    assert_eq!(rig.raised(), 0);
    assert_eq!(rig.bm_read(2) & 0x07, 0);
    // PRDs longer than the transfer keep the bus master active (as the PIIX does).
    rig.set_prd_table(0x1000, &[(0x20000, 0x8000_1000)]);
    rig.bm_write(0, 0);
    rig.lba28(0xc8, 0, 1);
    rig.bm_write(0, 0x09);
    assert_eq!(rig.bm_read(2) & 0x07, 0x05);
    assert_eq!(rig.inb(7), 0x50);
}

#[test]
fn dma_buffers_outside_guest_memory_complete_as_on_qemu() {
    let rig = Rig::disk(2048);
    // Half of the sector lands in RAM, half past its end: QEMU 7.2 completes the read.
    rig.set_prd_table(0x1000, &[(RAM as u32 - 256, 0x8000_0200)]);
    rig.lba28(0xc8, 0, 1);
    rig.bm_write(0, 0x09);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.bm_read(2) & 0x07, 0x04, "interrupt, no error");
    let mut tail = [0u8; 256];
    rig.memory
        .read_slice(&mut tail, GuestAddress(RAM - 256))
        .unwrap();
    assert_eq!(tail[..], expected_sector(0)[..256]);
    rig.bm_write(2, 0x04);
    rig.bm_write(0, 0);
}

#[test]
fn dma_tables_outside_guest_memory_and_past_the_disk_are_errors() {
    let rig = Rig::disk(2048);
    // A table outside memory.
    rig.channel
        .write_bus_master(4, &0xfff0_0000u32.to_le_bytes());
    rig.lba28(0xca, 0, 1);
    rig.bm_write(0, 0x01);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
    assert_eq!(rig.image.sector(0), expected_sector(0));
    // Past the end of the disk.
    rig.set_prd_table(0x1000, &[(0x20000, 0x8000_0400)]);
    rig.bm_write(0, 0);
    rig.lba28(0xc8, 2047, 2);
    rig.bm_write(0, 0x09);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
}

#[test]
fn trim_checks_ranges() {
    let rig = Rig::disk(2048);
    let mut ranges = [0u8; 512];
    ranges[..8].copy_from_slice(&(10u64 | (4 << 48)).to_le_bytes());
    rig.memory
        .write_slice(&ranges, GuestAddress(0x20000))
        .unwrap();
    rig.set_prd_table(0x1000, &[(0x20000, 0x8000_0200)]);
    rig.outb(1, 0x01);
    rig.lba28(0x06, 0, 1);
    rig.bm_write(0, 0x01);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.stat(|s| &s.unmap_operations), 1);
    ranges[..8].copy_from_slice(&(2046u64 | (4 << 48)).to_le_bytes());
    rig.memory
        .write_slice(&ranges, GuestAddress(0x20000))
        .unwrap();
    rig.bm_write(0, 0);
    rig.outb(1, 0x01);
    rig.lba28(0x06, 0, 1);
    rig.bm_write(0, 0x01);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
}

#[test]
fn system_reset_restores_power_on_state() {
    let rig = Rig::disk(2048);
    rig.lba28(0x20, 9, 1);
    rig.bm_write(0, 0x09);
    rig.channel.reset();
    assert!(!rig.irq_high());
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.bm_read(0), 0);
    assert_eq!((rig.inb(2), rig.inb(3)), (1, 1));
}

// ---- ATAPI ----

/// A packet device that answers INQUIRY-like commands with a fixed buffer, reads blocks
/// whose bytes are their block number, and fails opcode 0xff.
struct FakeCd {
    resets: Arc<AtomicUsize>,
}

impl PacketDevice for FakeCd {
    fn identify(&self, serial: &str) -> [u16; 256] {
        let mut w = [0u16; 256];
        w[0] = 0x85c0;
        identify::put_string(&mut w[10..20], serial);
        w
    }

    fn execute(&mut self, cdb: &[u8; 12], mode: PacketMode) -> PacketResult {
        if !mode.dma && mode.byte_count_limit == 0 && cdb[0] != 0x00 {
            return PacketResult::AtaAbort;
        }
        match cdb[0] {
            0x00 => PacketResult::Done,
            0x12 => PacketResult::DataIn((0..cdb[4]).collect()),
            0xfe => PacketResult::UnitAttention,
            0x28 => PacketResult::ReadBlocks {
                lba: u32::from_be_bytes(cdb[2..6].try_into().unwrap()),
                count: u32::from(u16::from_be_bytes([cdb[7], cdb[8]])),
            },
            _ => PacketResult::Error(PacketSense {
                key: 5,
                asc: 0x20,
                ascq: 0,
            }),
        }
    }

    fn read_blocks(
        &self,
        lba: u32,
        count: u32,
        buf: &mut [u8],
        _account: bool,
    ) -> Result<(), PacketSense> {
        if lba + count > 100 {
            return Err(PacketSense {
                key: 5,
                asc: 0x21,
                ascq: 0,
            });
        }
        for (i, block) in buf.chunks_exact_mut(2048).enumerate() {
            block.fill((lba + i as u32) as u8);
        }
        Ok(())
    }

    fn account_read(&self, _offset: u64, _bytes: u64, _start: std::time::Instant, _ok: bool) {}

    fn reset(&mut self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

fn cd_rig() -> (Rig, Arc<AtomicUsize>) {
    let image = TempImage::new(8);
    let drive = drive(&image, DriveKind::Cdrom);
    let resets = Arc::new(AtomicUsize::new(0));
    let cd = FakeCd {
        resets: resets.clone(),
    };
    (
        Rig::with(
            Attachment::Cdrom(Box::new(cd)),
            Attachment::Empty,
            image,
            drive,
        ),
        resets,
    )
}

impl Rig {
    fn packet(&self, cdb: [u8; 12], byte_count_limit: u16, dma: bool) {
        self.outb(1, u8::from(dma));
        self.outb(4, byte_count_limit as u8);
        self.outb(5, (byte_count_limit >> 8) as u8);
        self.outb(7, 0xa0);
        assert_eq!(self.inb(7), 0x58, "ready for the packet");
        assert_eq!(self.inb(2) & 3, 1, "CoD, to the device");
        for pair in cdb.chunks_exact(2) {
            self.outw(u16::from_le_bytes([pair[0], pair[1]]));
        }
    }
}

#[test]
fn a_packet_device_shows_its_signature() {
    let (rig, resets) = cd_rig();
    assert_eq!((rig.inb(4), rig.inb(5)), (0x14, 0xeb));
    rig.outb(7, 0xec);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
    assert_eq!((rig.inb(4), rig.inb(5)), (0x14, 0xeb));
    rig.outb(7, 0xa1);
    let id: Vec<u16> = (0..256).map(|_| rig.inw()).collect();
    assert_eq!(id[0], 0x85c0);
    assert_eq!(&id[10..14], &[0x514d, 0x3030, 0x3030, 0x3120], "QM00001");
    rig.outb(7, 0x20);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, ERROR_ABRT));
    let before = resets.load(Ordering::SeqCst);
    rig.outb(7, 0x08);
    assert_eq!(rig.inb(7), 0, "DEVICE RESET leaves status clear");
    assert_eq!(resets.load(Ordering::SeqCst), before + 1);
    rig.channel.write_control(&[CONTROL_SRST]);
    rig.channel.write_control(&[0]);
    assert_eq!((rig.inb(7), rig.inb(1)), (0, 1));
}

#[test]
fn packet_data_in_is_cut_at_the_byte_count_limit() {
    let (rig, _) = cd_rig();
    rig.packet([0x12, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0], 41, false);
    assert!(rig.irq_high());
    assert_eq!(rig.inb(7), 0x58);
    assert_eq!(rig.inb(2) & 3, 2, "IO: data to the host");
    assert_eq!((rig.inb(4), rig.inb(5)), (40, 0), "odd limit made even");
    let first = rig.read_block(40);
    assert_eq!(first, (0..40).collect::<Vec<u8>>());
    assert_eq!(rig.inb(7), 0x58);
    rig.read_block(40);
    assert_eq!((rig.inb(4), rig.inb(5)), (20, 0));
    assert_eq!(rig.inb(7), 0x58);
    rig.read_block(20);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.inb(2) & 3, 3, "command complete");
    assert_eq!(rig.raised(), 4);
}

#[test]
fn packet_reads_blocks_by_pio_and_dma() {
    let (rig, _) = cd_rig();
    rig.packet([0x28, 0, 0, 0, 0, 7, 0, 0, 2, 0, 0, 0], 0xffff, false);
    assert_eq!((rig.inb(4), rig.inb(5)), (0x00, 0x10), "4096 bytes");
    let data = rig.read_block(4096);
    assert_eq!((data[0], data[2048]), (7, 8));
    assert_eq!(rig.inb(7), 0x50);
    rig.set_prd_table(0x1000, &[(0x20000, 0x8000_1000)]);
    rig.packet([0x28, 0, 0, 0, 0, 9, 0, 0, 2, 0, 0, 0], 0, true);
    assert_eq!(rig.inb(7) & STATUS_DRQ, STATUS_DRQ);
    rig.bm_write(0, 0x09);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.inb(2) & 3, 3);
    assert_eq!(rig.guest(0x20800, 1), vec![10]);
    assert_eq!(rig.bm_read(2) & 0x07, 0x04);
}

#[test]
fn packet_errors_report_the_sense_key() {
    let (rig, _) = cd_rig();
    rig.packet([0xff; 12], 0xffff, false);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, 0x50));
    assert_eq!(rig.inb(2) & 3, 3);
    rig.packet([0x28, 0, 0, 0, 0, 99, 0, 0, 2, 0, 0, 0], 0xffff, false);
    assert_eq!((rig.inb(7), rig.inb(1)), (0x41, 0x50), "read past the end");
    rig.packet([0x12, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0], 0, false);
    assert!(
        !rig.irq_high(),
        "the abort of a zero byte count limit is silent"
    );
    assert_eq!(
        (rig.inb(7), rig.inb(1)),
        (0x41, ERROR_ABRT),
        "zero byte count limit"
    );
    rig.packet([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, false);
    assert_eq!(
        (rig.inb(7), rig.inb(1)),
        (0x50, 0),
        "no data phase needs no limit"
    );
}

#[test]
fn string_io_arrives_as_one_buffer() {
    let rig = Rig::disk(2048);
    rig.lba28(0x20, 3, 1);
    let mut sector = [0u8; 512];
    rig.channel.read_command_block(0, &mut sector);
    assert_eq!(sector.to_vec(), expected_sector(3));
    assert_eq!(rig.inb(7), 0x50);
    rig.lba28(0x30, 4, 1);
    rig.channel.write_command_block(0, &[0x77; 512]);
    assert_eq!(rig.inb(7), 0x50);
    assert_eq!(rig.image.sector(4), vec![0x77; 512]);
    let mut dword = [0u8; 4];
    rig.lba28(0x20, 3, 1);
    rig.channel.read_command_block(0, &mut dword);
    assert_eq!(dword.to_vec(), expected_sector(3)[..4].to_vec());
}

/// Random register traffic, PRD tables and packets: the device never panics and keeps
/// answering.
#[test]
fn random_guest_traffic_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const COMMANDS: &[u8] = &[
        0x06, 0x08, 0x10, 0x20, 0x24, 0x25, 0x29, 0x30, 0x34, 0x35, 0x39, 0x40, 0x42, 0x70, 0x90,
        0x91, 0xa0, 0xa1, 0xc4, 0xc5, 0xc6, 0xc8, 0xca, 0xe5, 0xe7, 0xea, 0xec, 0xef, 0xf8, 0x27,
        0x55,
    ];
    let (cd, _) = cd_rig();
    for rig in [Rig::disk(64), cd] {
        for _ in 0..50_000 {
            let r = next();
            let value = (r >> 8) as u8;
            match r % 11 {
                0 => rig.outb(7, COMMANDS[(r >> 16) as usize % COMMANDS.len()]),
                1 => rig.outb(1 + (r >> 16) as u16 % 6, value),
                2 => {
                    rig.inb((r >> 16) as u16 % 8);
                }
                3 => {
                    rig.inw();
                }
                4 => rig.outw(value as u16),
                5 => rig.channel.write_control(&[value & 0x86]),
                6 => rig.bm_write(0, value & 0x09),
                7 => rig.bm_write(2, value),
                8 => {
                    let table = (next() as u32) & 0x00ff_fff8;
                    let entries: Vec<(u32, u32)> = (0..(r >> 20) % 4)
                        .map(|_| (next() as u32 & 0x01ff_ffff, next() as u32))
                        .collect();
                    if u64::from(table) + 32 < RAM {
                        rig.set_prd_table(table, &entries);
                    } else {
                        rig.channel.write_bus_master(4, &table.to_le_bytes());
                    }
                }
                9 => {
                    let mut words = [0u8; 12];
                    rig.channel.read_command_block(0, &mut words);
                }
                _ => rig.channel.write_command_block(0, &[value; 12]),
            }
        }
        // Still a working device after a reset.
        rig.channel.reset();
        assert_eq!(rig.alt_status() & STATUS_BSY, 0);
    }
}
