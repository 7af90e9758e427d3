//! `ide-pio`, `ide-dma`, `ide-48bit`: data transfers on ATA disks of the primary channel.
//!
//! The tests give the disks known content (each sector its own pattern) and compare the
//! disks after the run between QEMU and vmscope, so the writes here are checked twice: read
//! back by the kernel, and on the host.

use super::{dma, non_data, pio_read, pio_write, prepare_disk, reset_and_signatures, setup};
use crate::ata::Task;
use crate::kprintln;
use crate::start_info::StartInfo;

/// `ide-pio`: a disk as master and one as slave (`-drive if=ide,index=0` and `index=1`).
/// READ/WRITE SECTORS and MULTIPLE (28-bit), READ VERIFY, FLUSH CACHE.
pub fn run_pio(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    let ch = &ide.primary;
    reset_and_signatures(ch, "primary");
    let sectors0 = prepare_disk(ch, "primary", 0);
    let sectors1 = prepare_disk(ch, "primary", 1);
    if sectors0 < 8192 || sectors1 < 1024 {
        kprintln!("ide-pio: the disks are too small for this scenario");
        return;
    }

    pio_read(ch, "ide: 0 read-sectors", Task::new(0x20, 0).lba28(0, 1), 1);
    pio_read(
        ch,
        "ide: 0 read-sectors",
        Task::new(0x20, 0).lba28(1234, 8),
        1,
    );
    pio_read(
        ch,
        "ide: 0 read-sectors",
        Task::new(0x20, 0).lba28(sectors0 - 1, 1),
        1,
    );
    // Count 0 is 256 sectors.
    pio_read(
        ch,
        "ide: 0 read-sectors",
        Task::new(0x20, 0).lba28(2000, 0),
        1,
    );
    // 40 sectors in DRQ blocks of 16, 16 and 8.
    pio_read(
        ch,
        "ide: 0 read-multiple",
        Task::new(0xc4, 0).lba28(1000, 40),
        16,
    );
    pio_write(
        ch,
        "ide: 0 write-sectors",
        Task::new(0x30, 0).lba28(3000, 4),
        1,
    );
    pio_read(
        ch,
        "ide: 0 read-sectors",
        Task::new(0x20, 0).lba28(2999, 6),
        1,
    );
    pio_write(
        ch,
        "ide: 0 write-multiple",
        Task::new(0xc5, 0).lba28(4000, 20),
        16,
    );
    pio_read(
        ch,
        "ide: 0 read-multiple",
        Task::new(0xc4, 0).lba28(4000, 20),
        16,
    );
    pio_write(
        ch,
        "ide: 0 write-sectors",
        Task::new(0x30, 0).lba28(sectors0 - 2, 2),
        1,
    );
    pio_read(
        ch,
        "ide: 0 read-sectors",
        Task::new(0x20, 0).lba28(sectors0 - 3, 3),
        1,
    );
    non_data(ch, "ide: 0 read-verify", Task::new(0x40, 0).lba28(100, 10));
    non_data(ch, "ide: 0 flush-cache", Task::new(0xe7, 0));

    pio_read(ch, "ide: 1 read-sectors", Task::new(0x20, 1).lba28(0, 1), 1);
    pio_read(
        ch,
        "ide: 1 read-sectors",
        Task::new(0x20, 1).lba28(sectors1 - 1, 1),
        1,
    );
    pio_write(
        ch,
        "ide: 1 write-sectors",
        Task::new(0x30, 1).lba28(77, 2),
        1,
    );
    pio_read(
        ch,
        "ide: 1 read-sectors",
        Task::new(0x20, 1).lba28(76, 4),
        1,
    );
    non_data(ch, "ide: 1 flush-cache", Task::new(0xe7, 1));
    // The master still answers after the slave's commands.
    pio_read(
        ch,
        "ide: 0 read-sectors",
        Task::new(0x20, 0).lba28(3000, 1),
        1,
    );
}

/// `ide-dma`: READ/WRITE DMA (and EXT) through PRD tables of one and several entries,
/// entries of 64 KiB (byte count 0) and entries that split sectors.
pub fn run_dma(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    let ch = &ide.primary;
    reset_and_signatures(ch, "primary");
    let sectors = prepare_disk(ch, "primary", 0);
    if sectors < 8192 {
        kprintln!("ide-dma: the disk is too small for this scenario");
        return;
    }
    dma(
        ch,
        "ide: read-dma",
        Task::new(0xc8, 0).lba28(0, 1),
        true,
        &[512],
    );
    // One PRD with byte count 0: 64 KiB.
    dma(
        ch,
        "ide: read-dma",
        Task::new(0xc8, 0).lba28(500, 128),
        true,
        &[0],
    );
    dma(
        ch,
        "ide: read-dma",
        Task::new(0xc8, 0).lba28(1000, 24),
        true,
        &[512, 4096, 7680],
    );
    // PRDs that end inside a sector.
    dma(
        ch,
        "ide: read-dma",
        Task::new(0xc8, 0).lba28(1100, 8),
        true,
        &[1000, 3096],
    );
    dma(
        ch,
        "ide: read-dma",
        Task::new(0xc8, 0).lba28(sectors - 4, 4),
        true,
        &[2048],
    );
    dma(
        ch,
        "ide: read-dma-ext",
        Task::new(0x25, 0).lba48(2000, 16),
        true,
        &[8192],
    );
    dma(
        ch,
        "ide: write-dma",
        Task::new(0xca, 0).lba28(6000, 16),
        false,
        &[4096, 4096],
    );
    pio_read(
        ch,
        "ide: read-sectors",
        Task::new(0x20, 0).lba28(6000, 16),
        1,
    );
    dma(
        ch,
        "ide: read-dma",
        Task::new(0xc8, 0).lba28(5998, 20),
        true,
        &[10240],
    );
    dma(
        ch,
        "ide: write-dma-ext",
        Task::new(0x35, 0).lba48(7000, 8),
        false,
        &[1000, 3096],
    );
    dma(
        ch,
        "ide: read-dma-ext",
        Task::new(0x25, 0).lba48(7000, 8),
        true,
        &[4096],
    );
    // A multi-megabyte transfer: 2048 sectors through 16 PRDs of 64 KiB.
    let sixteen = [0u32; 16];
    dma(
        ch,
        "ide: read-dma-ext",
        Task::new(0x25, 0).lba48(8192, 2048),
        true,
        &sixteen,
    );
    non_data(ch, "ide: flush-cache-ext", Task::new(0xea, 0));
}

/// `ide-48bit`: a disk beyond 2^28 sectors (160 GiB, sparse): 48-bit PIO and DMA commands
/// above the 28-bit limit, the 28-bit command at its last sector, FLUSH CACHE EXT.
pub fn run_48bit(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    let ch = &ide.primary;
    reset_and_signatures(ch, "primary");
    let sectors = prepare_disk(ch, "primary", 0);
    if sectors <= 0x1000_0000 {
        kprintln!("ide-48bit: the disk does not reach beyond 2^28 sectors");
        return;
    }
    pio_read(
        ch,
        "ide: read-sectors",
        Task::new(0x20, 0).lba28(0x0fff_ffff, 1),
        1,
    );
    pio_read(
        ch,
        "ide: read-sectors-ext",
        Task::new(0x24, 0).lba48(0x0fff_fffe, 4),
        1,
    );
    pio_read(
        ch,
        "ide: read-sectors-ext",
        Task::new(0x24, 0).lba48(0x1234_5678, 3),
        1,
    );
    pio_read(
        ch,
        "ide: read-sectors-ext",
        Task::new(0x24, 0).lba48(sectors - 1, 1),
        1,
    );
    pio_read(
        ch,
        "ide: read-multiple-ext",
        Task::new(0x29, 0).lba48(0x1111_1111, 20),
        16,
    );
    pio_write(
        ch,
        "ide: write-sectors-ext",
        Task::new(0x34, 0).lba48(0x1000_0010, 3),
        1,
    );
    pio_read(
        ch,
        "ide: read-sectors-ext",
        Task::new(0x24, 0).lba48(0x1000_000f, 5),
        1,
    );
    pio_write(
        ch,
        "ide: write-multiple-ext",
        Task::new(0x39, 0).lba48(sectors - 16, 16),
        16,
    );
    dma(
        ch,
        "ide: read-dma-ext",
        Task::new(0x25, 0).lba48(sectors - 20, 20),
        true,
        &[10240],
    );
    dma(
        ch,
        "ide: read-dma-ext",
        Task::new(0x25, 0).lba48(0x1200_0000, 64),
        true,
        &[0],
    );
    dma(
        ch,
        "ide: write-dma-ext",
        Task::new(0x35, 0).lba48(0x1300_0000, 8),
        false,
        &[4096],
    );
    pio_read(
        ch,
        "ide: read-sectors-ext",
        Task::new(0x24, 0).lba48(0x1300_0000, 8),
        1,
    );
    // The 48-bit count field above 255: 300 sectors.
    dma(
        ch,
        "ide: read-dma-ext",
        Task::new(0x25, 0).lba48(0x1234_0000, 300),
        true,
        &[0, 0, 22528],
    );
    non_data(ch, "ide: flush-cache-ext", Task::new(0xea, 0));
}
