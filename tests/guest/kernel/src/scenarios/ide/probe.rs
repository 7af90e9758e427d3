//! `ide-probe`: what sits at each of the four IDE positions (primary/secondary, master/
//! slave), as a driver enumerates it: the signature after a reset, then the identity
//! (model, serial, firmware, capacity) through IDENTIFY or IDENTIFY PACKET. The tests
//! attach disks of distinct sizes with `-hda..-hdd`, `-drive if=ide,bus=,unit=`, `-drive`
//! without `if=` and `-device ide-hd/ide-cd`, so the capacity tells which file landed where.

use super::{reset_and_signatures, setup};
use crate::ata::{Channel, Task, SECTOR};
use crate::console::{Dec, Hex};
use crate::kprintln;
use crate::start_info::StartInfo;

/// A byte-swapped identify string into `out`, trailing spaces dropped.
fn ata_string(raw: &[u8], first_word: usize, words: usize, out: &mut [u8; 40]) -> usize {
    let mut n = 0;
    for w in first_word..first_word + words {
        out[n] = raw[2 * w + 1];
        out[n + 1] = raw[2 * w];
        n += 2;
    }
    while n > 0 && (out[n - 1] == b' ' || out[n - 1] == 0) {
        n -= 1;
    }
    n
}

fn probe(ch: &Channel, name: &str, dev: u8) {
    ch.select(dev);
    let sig = ch.signature();
    let command = match (sig[2], sig[3]) {
        (0x00, 0x00) => 0xec,
        (0x14, 0xeb) => 0xa1,
        _ => {
            kprintln!("ide-probe: ", name, ".", Dec(u64::from(dev)), " nothing");
            return;
        }
    };
    let mut raw = [0u8; SECTOR];
    let o = ch.pio_in(&Task::new(command, dev), &mut raw, 1);
    if o.bytes != SECTOR as u32 {
        kprintln!(
            "ide-probe: ",
            name,
            ".",
            Dec(u64::from(dev)),
            " identify ",
            Hex(u64::from(command), 2),
            " failed: st ",
            Hex(u64::from(o.status), 2),
            " err ",
            Hex(u64::from(o.error), 2)
        );
        return;
    }
    let word = |i: usize| u64::from(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]));
    let mut model = [0u8; 40];
    let mut serial = [0u8; 40];
    let mut firmware = [0u8; 40];
    let m = ata_string(&raw, 27, 20, &mut model);
    let s = ata_string(&raw, 10, 10, &mut serial);
    let f = ata_string(&raw, 23, 4, &mut firmware);
    let sectors = (0..4).fold(0u64, |acc, i| acc | word(100 + i) << (16 * i));
    kprintln!(
        "ide-probe: ",
        name,
        ".",
        Dec(u64::from(dev)),
        if command == 0xec {
            " ata \""
        } else {
            " atapi \""
        },
        &model[..m],
        "\" serial \"",
        &serial[..s],
        "\" firmware \"",
        &firmware[..f],
        "\" general ",
        Hex(word(0), 4),
        " sectors ",
        Dec(sectors)
    );
}

pub fn run(_info: &StartInfo) {
    let Some(ide) = setup() else { return };
    for (ch, name) in [(&ide.primary, "primary"), (&ide.secondary, "secondary")] {
        reset_and_signatures(ch, name);
        probe(ch, name, 0);
        probe(ch, name, 1);
    }
}
