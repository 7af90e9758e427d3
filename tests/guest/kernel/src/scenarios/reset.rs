//! `reset`: a CPU reset through the i8042 with state kept in RAM across it. The first boot
//! leaves a magic value at `MAGIC_ADDR` and resets; the boot after the reset finds it,
//! clears it and finishes. So the scenario checks that a reset restarts the kernel and that
//! RAM survives it (as on a PC, where firmware does not clear memory above 1 MiB).

use crate::console::Hex;
use crate::{kprintln, phys, power};

/// 16 MiB: outside the kernel image (1 MiB up) and the memory SeaBIOS touches on QEMU.
const MAGIC_ADDR: u64 = 0x100_0000;
const MAGIC: u64 = u64::from_le_bytes(*b"tkreset!");

pub fn run(_info: &crate::start_info::StartInfo) {
    if phys::read_u64(MAGIC_ADDR) == MAGIC {
        // SAFETY: MAGIC_ADDR is usable RAM outside everything the kernel uses.
        unsafe { phys::write_u64(MAGIC_ADDR, 0) };
        kprintln!("reset: rebooted, magic found at ", Hex(MAGIC_ADDR, 1));
    } else {
        kprintln!("reset: first boot");
        // SAFETY: as above.
        unsafe { phys::write_u64(MAGIC_ADDR, MAGIC) };
        kprintln!("reset: resetting through the i8042");
        power::reset();
    }
}
