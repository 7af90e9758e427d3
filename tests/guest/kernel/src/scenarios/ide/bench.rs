//! `ide-dma-bench`: reads the first 64 MiB of the primary master by DMA (READ DMA EXT, 8
//! commands of 16384 sectors, each through 128 PRDs of 64 KiB that all point at one buffer)
//! so that scripts/bench-boot can time the device model's DMA path: it measures the time
//! between the `start` and `done` lines.

use super::{checksum, prepare_disk, reset_and_signatures, setup};
use crate::ata::{self, Prd, Task};
use crate::console::{Dec, Hex};
use crate::kprintln;
use crate::start_info::StartInfo;

const COMMAND_SECTORS: u16 = 16384;
const COMMANDS: u64 = 8;

pub fn run(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    let ch = &ide.primary;
    reset_and_signatures(ch, "primary");
    let sectors = prepare_disk(ch, "primary", 0);
    let total = COMMANDS * u64::from(COMMAND_SECTORS);
    if sectors < total {
        kprintln!("ide-dma-bench: the disk must hold at least 64 MiB");
        return;
    }
    let mut prds = [Prd {
        addr: ata::BUFFER_PHYS as u32,
        bytes: 0,
        last: false,
    }; 128];
    prds[127].last = true;
    ata::write_prd_table(&prds);
    kprintln!("ide-dma-bench: start");
    let mut failures = 0;
    for i in 0..COMMANDS {
        let t = Task::new(0x25, 0).lba48(i * u64::from(COMMAND_SECTORS), COMMAND_SECTORS);
        let o = ch.dma(&t, true);
        if o.status & ata::STATUS_ERR != 0 || o.timed_out || o.bm_status & ata::BM_INTERRUPT == 0 {
            failures += 1;
        }
        ch.bm_reset();
    }
    kprintln!(
        "ide-dma-bench: done ",
        Dec((total * 512) >> 20),
        " MiB, failed commands ",
        Dec(failures),
        ", last buffer sum ",
        Hex(u64::from(checksum(ata::buffer(0x1_0000))), 8)
    );
}
