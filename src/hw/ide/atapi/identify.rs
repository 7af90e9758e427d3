//! IDENTIFY PACKET DEVICE data as QEMU 7.2 builds it for ide-cd (`ide_atapi_identify`,
//! with ATAPI DMA compiled in as QEMU always does).

/// Model string QEMU gives ide-cd.
pub const MODEL: &str = "QEMU DVD-ROM";
/// Firmware revision (`qemu_hw_version()` of the 7.2 machine types).
pub const FIRMWARE: &str = "2.5+";

/// ATA strings put two characters per word, the first in the high byte, padded with spaces.
fn put_string(words: &mut [u16], text: &[u8]) {
    let mut chars = text.iter().copied().chain(std::iter::repeat(b' '));
    for word in words.iter_mut() {
        let hi = chars.next().unwrap_or(b' ');
        let lo = chars.next().unwrap_or(b' ');
        *word = u16::from_be_bytes([hi, lo]);
    }
}

pub fn identify_packet_device(serial: &str) -> [u16; 256] {
    let mut w = [0u16; 256];
    // ATAPI, removable CD-ROM, accelerated DRQ (50 us), 12-byte packets.
    w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
    // QEMU keeps at most 20 characters of the serial.
    let serial = &serial.as_bytes()[..serial.len().min(20)];
    put_string(&mut w[10..20], serial);
    w[20] = 3; // buffer type
    w[21] = 512; // buffer size in sectors
    w[22] = 4; // ECC bytes
    put_string(&mut w[23..27], FIRMWARE.as_bytes());
    put_string(&mut w[27..47], MODEL.as_bytes());
    w[48] = 1; // dword I/O
    w[49] = (1 << 9) | (1 << 8); // LBA and DMA
    w[53] = 7; // words 54-58, 64-70 and 88 valid
    w[62] = 7; // single-word DMA 0-2
    w[63] = 7; // multiword DMA 0-2
    w[64] = 3; // PIO 3-4
    w[65] = 0xb4; // minimum multiword DMA cycle
    w[66] = 0xb4; // recommended multiword DMA cycle
    w[67] = 0x12c; // minimum PIO cycle without flow control
    w[68] = 0xb4; // minimum PIO cycle with IORDY
    w[71] = 30; // ns
    w[72] = 30; // ns
    w[80] = 0x1e; // ATA/ATAPI-1 to -4
    w[88] = 0x3f | (1 << 13); // UDMA 0-5 supported, UDMA 5 selected
    w
}
