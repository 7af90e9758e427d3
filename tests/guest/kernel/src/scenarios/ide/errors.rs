//! `ide-errors`: what a hostile or confused driver does to the disk and the bus master.
//! Each case prints the status, error and bus-master registers it ends with, and a sane read
//! afterwards shows the device still works.

use super::{
    dma, line_end, line_start, non_data, pio_read, pio_write, prepare_disk, print_outcome_tail,
    reset_and_signatures, setup,
};
use crate::ata::{self, Channel, Prd, Task};
use crate::console::{Emit, Hex};
use crate::kprintln;
use crate::port::{inw, outw};
use crate::start_info::StartInfo;

fn sane_read(ch: &Channel) {
    pio_read(
        ch,
        "ide: sane read-sectors",
        Task::new(0x20, 0).lba28(0, 1),
        1,
    );
}

/// A DMA read through a PRD table the caller wrote.
fn raw_dma(ch: &Channel, label: &str, t: Task) {
    let o = ch.dma(&t, true);
    line_start(&[label]);
    print_outcome_tail(&o, true);
    line_end();
    ch.bm_reset();
}

pub fn run(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    let ch = &ide.primary;
    reset_and_signatures(ch, "primary");
    let sectors = prepare_disk(ch, "primary", 0);
    if sectors < 8192 {
        kprintln!("ide-errors: the disk is too small for this scenario");
        return;
    }

    // Sector numbers past the end.
    pio_read(
        ch,
        "ide: past-end read-sectors",
        Task::new(0x20, 0).lba28(sectors, 1),
        1,
    );
    pio_read(
        ch,
        "ide: straddling read-sectors",
        Task::new(0x20, 0).lba28(sectors - 1, 2),
        1,
    );
    pio_write(
        ch,
        "ide: past-end write-sectors",
        Task::new(0x30, 0).lba28(sectors, 1),
        1,
    );
    dma(
        ch,
        "ide: past-end read-dma",
        Task::new(0xc8, 0).lba28(sectors, 1),
        true,
        &[512],
    );
    dma(
        ch,
        "ide: past-end write-dma",
        Task::new(0xca, 0).lba28(sectors - 1, 2),
        false,
        &[1024],
    );
    pio_read(
        ch,
        "ide: straddling read-sectors-ext",
        Task::new(0x24, 0).lba48(sectors - 1, 2),
        1,
    );
    // 48-bit count 0 = 65536 sectors from LBA 0: beyond a small disk's end (the PRDs
    // cover 1 MiB of it).
    dma(
        ch,
        "ide: huge read-dma-ext",
        Task::new(0x25, 0).lba48(0, 0),
        true,
        &[0; 16],
    );
    sane_read(ch);

    // Commands the disk does not take.
    non_data(ch, "ide: unknown command f0", Task::new(0xf0, 0));
    non_data(ch, "ide: device-reset on a disk", Task::new(0x08, 0));
    non_data(ch, "ide: packet on a disk", Task::new(0xa0, 0));
    non_data(ch, "ide: identify-packet on a disk", Task::new(0xa1, 0));
    non_data(
        ch,
        "ide: set-features unknown 77",
        Task::new(0xef, 0).features(0x77),
    );
    non_data(
        ch,
        "ide: set-multiple 3 (not a power of two)",
        Task::new(0xc6, 0).lba28(0, 3),
    );
    sane_read(ch);

    // PRD tables: shorter than the transfer, longer than it, beyond RAM, without an end.
    dma(
        ch,
        "ide: prd short",
        Task::new(0xc8, 0).lba28(100, 16),
        true,
        &[4096],
    );
    dma(
        ch,
        "ide: prd long",
        Task::new(0xc8, 0).lba28(100, 8),
        true,
        &[0],
    );
    ata::write_prd_table(&[Prd {
        addr: 0x7000_0000,
        bytes: 4096,
        last: true,
    }]);
    raw_dma(ch, "ide: prd beyond ram", Task::new(0xc8, 0).lba28(100, 8));
    // A full 4 KiB table of 8-byte entries and no end-of-table flag.
    let endless = [Prd {
        addr: ata::BUFFER_PHYS as u32,
        bytes: 8,
        last: false,
    }; 512];
    ata::write_prd_table(&endless);
    raw_dma(ch, "ide: prd endless", Task::new(0xc8, 0).lba28(100, 16));
    sane_read(ch);

    // The bus master started with no command; DMA command with the engine never started.
    ata::write_prd_table(&[Prd {
        addr: ata::BUFFER_PHYS as u32,
        bytes: 512,
        last: true,
    }]);
    crate::port::outb(ch.bm, 0x09);
    crate::pit::delay_ms(5);
    let bm = ch.bm_status();
    crate::port::outb(ch.bm, 0x08);
    kprintln!("ide: bus master started idle: bm ", Hex(u64::from(bm), 2));
    ch.bm_reset();
    ch.issue(&Task::new(0xc8, 0).lba28(0, 1));
    crate::pit::delay_ms(5);
    line_start(&["ide: read-dma never started:"]);
    " st=".emit();
    Hex(u64::from(ch.alt_status()), 2).emit();
    " bm=".emit();
    Hex(u64::from(ch.bm_status()), 2).emit();
    line_end();
    // A software reset ends it.
    reset_and_signatures(ch, "primary");
    sane_read(ch);

    // Data port access without a data phase.
    let words = [inw(ch.cmd), inw(ch.cmd), inw(ch.cmd), inw(ch.cmd)];
    line_start(&["ide: data reads without DRQ:"]);
    for w in words {
        " ".emit();
        Hex(u64::from(w), 4).emit();
    }
    " st=".emit();
    Hex(u64::from(ch.status()), 2).emit();
    line_end();
    for i in 0..256u16 {
        outw(ch.cmd, i);
    }
    kprintln!(
        "ide: 256 data writes without DRQ: st ",
        Hex(u64::from(ch.status()), 2)
    );
    // A new command while a PIO read still has data to deliver.
    let mut first = [0u8; 512];
    let o = ch.pio_in(&Task::new(0x20, 0).lba28(10, 4), &mut first, 1);
    line_start(&["ide: read abandoned after one of 4 sectors:"]);
    print_outcome_tail(&o, false);
    line_end();
    // The device ignores a command while it has data pending: this read gets the rest of
    // the abandoned one.
    pio_read(
        ch,
        "ide: command during DRQ",
        Task::new(0x20, 0).lba28(0, 1),
        1,
    );
    reset_and_signatures(ch, "primary");
    sane_read(ch);

    // The absent slave.
    non_data(ch, "ide: identify absent slave", Task::new(0xec, 1));
    ch.select(1);
    kprintln!(
        "ide: absent slave selected: st ",
        Hex(u64::from(ch.status()), 2)
    );
    ch.select(0);
    sane_read(ch);
}
