//! IDENTIFY DEVICE data of an ATA hard disk, word for word as QEMU 7.2's `ide-hd` reports it
//! (captured from QEMU 7.2 with a boot-sector probe; see `tests/ide_probe.rs`).

use super::geometry::Geometry;

/// READ/WRITE MULTIPLE block size limit, and the power-on setting (QEMU's MAX_MULT_SECTORS).
pub const MAX_MULT_SECTORS: u32 = 16;
/// QEMU's `qemu_hw_version()` for the `pc` machine types.
pub const FIRMWARE_REVISION: &str = "2.5+";
pub const HARDDISK_MODEL: &str = "QEMU HARDDISK";

/// The serial number QEMU gives the device at `unit` of IDE `bus`: a counter over the
/// controller's four positions, `QM00001` for the primary master to `QM00004`.
pub fn default_serial(bus: u32, unit: u32) -> String {
    format!("QM{:05}", bus * 2 + unit + 1)
}

/// Writes `text` into `words` as ATA strings are stored: two characters per word, the first
/// in the high byte, padded with spaces.
pub fn put_string(words: &mut [u16], text: &str) {
    let mut bytes = text.bytes().chain(std::iter::repeat(b' '));
    for word in words {
        let high = bytes.next().unwrap_or(b' ');
        let low = bytes.next().unwrap_or(b' ');
        *word = u16::from_be_bytes([high, low]);
    }
}

/// What the disk's identity depends on.
#[derive(Clone, Debug)]
pub struct DiskIdentity {
    pub serial: String,
    pub geometry: Geometry,
    pub total_sectors: u64,
    /// Whether the write cache is on (QEMU: `cache.writeback`).
    pub write_cache: bool,
    /// READ/WRITE MULTIPLE setting when the data is first built.
    pub mult_sectors: u32,
}

/// Word 85 with and without the write cache enabled (SET FEATURES 02h/82h change it).
pub fn enabled_features_word(write_cache: bool) -> u16 {
    if write_cache {
        (1 << 14) | (1 << 5) | 1
    } else {
        (1 << 14) | 1
    }
}

/// The 256 words of IDENTIFY DEVICE.
pub fn identify_disk(id: &DiskIdentity) -> [u16; 256] {
    let mut w = [0u16; 256];
    let g = id.geometry;
    w[0] = 0x0040; // fixed device
    w[1] = g.cylinders as u16;
    w[3] = g.heads as u16;
    w[4] = (512 * g.sectors) as u16; // retired: bytes per track
    w[5] = 512; // retired: bytes per sector
    w[6] = g.sectors as u16;
    put_string(&mut w[10..20], &id.serial);
    w[20] = 3; // retired: buffer type
    w[21] = 512; // retired: buffer size in sectors
    w[22] = 4; // ECC bytes
    put_string(&mut w[23..27], FIRMWARE_REVISION);
    put_string(&mut w[27..47], HARDDISK_MODEL);
    w[47] = 0x8000 | MAX_MULT_SECTORS as u16;
    w[48] = 1; // dword I/O
    w[49] = (1 << 11) | (1 << 9) | (1 << 8); // IORDY, LBA, DMA
    w[51] = 0x200; // PIO timing
    w[52] = 0x200; // DMA timing
    w[53] = 1 | (1 << 1) | (1 << 2); // words 54-58, 64-70 and 88 valid
    w[54] = g.cylinders as u16;
    w[55] = g.heads as u16;
    w[56] = g.sectors as u16;
    let chs_capacity = g.total() as u32;
    w[57] = chs_capacity as u16;
    w[58] = (chs_capacity >> 16) as u16;
    if id.mult_sectors != 0 {
        w[59] = 0x100 | id.mult_sectors as u16;
    }
    let lba28 = id.total_sectors.min((1 << 28) - 1);
    w[60] = lba28 as u16;
    w[61] = (lba28 >> 16) as u16;
    w[62] = 0x07; // single-word DMA 0-2
    w[63] = 0x07; // multiword DMA 0-2
    w[64] = 0x03; // PIO 3-4
    w[65] = 120;
    w[66] = 120;
    w[67] = 120;
    w[68] = 120;
    w[69] = 1 << 14; // deterministic TRIM
    w[80] = 0xf0; // ATA-4 to ATA-7
    w[81] = 0x16;
    w[82] = (1 << 14) | (1 << 5) | 1; // NOP, write cache, SMART
    w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); // FLUSH EXT, FLUSH, LBA48
    w[84] = 1 << 14;
    w[85] = enabled_features_word(id.write_cache);
    w[86] = (1 << 13) | (1 << 12) | (1 << 10);
    w[87] = 1 << 14;
    w[88] = 0x3f | (1 << 13); // UDMA 0-5 supported, UDMA 5 selected
    w[93] = 1 | (1 << 14) | 0x2000;
    for (i, word) in w[100..104].iter_mut().enumerate() {
        *word = (id.total_sectors >> (16 * i)) as u16;
    }
    w[106] = 0x6000; // one logical sector per physical sector
    w[169] = 1; // TRIM
    w
}

/// The words as the guest reads them through the data port: little-endian bytes.
pub fn to_bytes(words: &[u16; 256]) -> [u8; 512] {
    let mut bytes = [0u8; 512];
    for (chunk, word) in bytes.chunks_exact_mut(2).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}
