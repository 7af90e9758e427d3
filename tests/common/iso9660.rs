//! A minimal ISO 9660 image with an El Torito no-emulation boot entry, written by the tests
//! themselves (no xorriso needed): primary volume descriptor, boot record, terminator, boot
//! catalog, path tables and a root directory holding `.` and `..`; then the boot image and
//! free blocks the caller fills. Enough for SeaBIOS to boot it from an ATAPI CD-ROM and for
//! an ATAPI reader to read it.

/// ISO 9660 logical block size.
pub const BLOCK: usize = 2048;

const PVD_BLOCK: u32 = 16;
const BOOT_RECORD_BLOCK: u32 = 17;
const TERMINATOR_BLOCK: u32 = 18;
const CATALOG_BLOCK: u32 = 19;
const L_PATH_TABLE_BLOCK: u32 = 20;
const M_PATH_TABLE_BLOCK: u32 = 21;
const ROOT_DIR_BLOCK: u32 = 22;
/// Where the boot image starts.
pub const BOOT_IMAGE_BLOCK: u32 = 23;

/// An ISO of `total_blocks` blocks that boots `boot_image` (loaded at 0000:7c00 by the
/// firmware, in 512-byte virtual sectors). Returns the image and the first block after the
/// boot image, from which on the caller may put data.
pub fn bootable_iso(boot_image: &[u8], total_blocks: u32) -> (Vec<u8>, u32) {
    assert!(
        boot_image.len().is_multiple_of(512)
            && !boot_image.is_empty()
            && boot_image.len() <= 0xffff * 512,
        "El Torito boot image must be whole 512-byte sectors"
    );
    let boot_blocks = boot_image.len().div_ceil(BLOCK) as u32;
    let first_free = BOOT_IMAGE_BLOCK + boot_blocks;
    assert!(
        total_blocks >= first_free,
        "ISO too small for its boot image"
    );
    let mut iso = vec![0u8; total_blocks as usize * BLOCK];

    let at = |block: u32| block as usize * BLOCK;
    primary_volume_descriptor(&mut iso[at(PVD_BLOCK)..at(PVD_BLOCK + 1)], total_blocks);

    let br = &mut iso[at(BOOT_RECORD_BLOCK)..at(BOOT_RECORD_BLOCK + 1)];
    br[0] = 0; // boot record
    br[1..6].copy_from_slice(b"CD001");
    br[6] = 1;
    br[7..7 + 23].copy_from_slice(b"EL TORITO SPECIFICATION");
    br[0x47..0x4b].copy_from_slice(&CATALOG_BLOCK.to_le_bytes());

    let term = &mut iso[at(TERMINATOR_BLOCK)..at(TERMINATOR_BLOCK + 1)];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;

    let cat = &mut iso[at(CATALOG_BLOCK)..at(CATALOG_BLOCK + 1)];
    // Validation entry: header 1, platform 0 (x86), id, checksum making the 16 words sum
    // to zero, key 55 aa.
    cat[0] = 1;
    cat[4..4 + 7].copy_from_slice(b"VMSCOPE");
    cat[30] = 0x55;
    cat[31] = 0xaa;
    let sum = cat[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    cat[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    // Initial/default entry: bootable, no emulation, load segment 0 (= 07c0), system type 0.
    cat[32] = 0x88;
    cat[33] = 0;
    cat[38..40].copy_from_slice(&((boot_image.len() / 512) as u16).to_le_bytes());
    cat[40..44].copy_from_slice(&BOOT_IMAGE_BLOCK.to_le_bytes());

    // Path tables: the root only.
    let mut entry = [0u8; 10];
    entry[0] = 1;
    entry[2..6].copy_from_slice(&ROOT_DIR_BLOCK.to_le_bytes());
    entry[6..8].copy_from_slice(&1u16.to_le_bytes());
    iso[at(L_PATH_TABLE_BLOCK)..at(L_PATH_TABLE_BLOCK) + 10].copy_from_slice(&entry);
    entry[2..6].copy_from_slice(&ROOT_DIR_BLOCK.to_be_bytes());
    entry[6..8].copy_from_slice(&1u16.to_be_bytes());
    iso[at(M_PATH_TABLE_BLOCK)..at(M_PATH_TABLE_BLOCK) + 10].copy_from_slice(&entry);

    let root = &mut iso[at(ROOT_DIR_BLOCK)..at(ROOT_DIR_BLOCK + 1)];
    root[..34].copy_from_slice(&directory_record(ROOT_DIR_BLOCK, BLOCK as u32, 0));
    root[34..68].copy_from_slice(&directory_record(ROOT_DIR_BLOCK, BLOCK as u32, 1));

    let boot_at = at(BOOT_IMAGE_BLOCK);
    iso[boot_at..boot_at + boot_image.len()].copy_from_slice(boot_image);
    (iso, first_free)
}

fn both_endian_u32(field: &mut [u8], value: u32) {
    field[..4].copy_from_slice(&value.to_le_bytes());
    field[4..8].copy_from_slice(&value.to_be_bytes());
}

fn both_endian_u16(field: &mut [u8], value: u16) {
    field[..2].copy_from_slice(&value.to_le_bytes());
    field[2..4].copy_from_slice(&value.to_be_bytes());
}

/// A directory record for a directory at `block` whose name is the single byte `name`
/// (0 = `.`, 1 = `..`).
fn directory_record(block: u32, size: u32, name: u8) -> [u8; 34] {
    let mut r = [0u8; 34];
    r[0] = 34;
    both_endian_u32(&mut r[2..10], block);
    both_endian_u32(&mut r[10..18], size);
    // Recording date: 2024-01-01 00:00:00 GMT.
    r[18..25].copy_from_slice(&[124, 1, 1, 0, 0, 0, 0]);
    r[25] = 0x02; // directory
    both_endian_u16(&mut r[28..32], 1);
    r[32] = 1;
    r[33] = name;
    r
}

fn primary_volume_descriptor(pvd: &mut [u8], total_blocks: u32) {
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[8..40].fill(b' '); // system identifier
    pvd[40..72].fill(b' ');
    pvd[40..40 + 12].copy_from_slice(b"VMSCOPE_TEST");
    both_endian_u32(&mut pvd[80..88], total_blocks);
    both_endian_u16(&mut pvd[120..124], 1); // volume set size
    both_endian_u16(&mut pvd[124..128], 1); // volume sequence number
    both_endian_u16(&mut pvd[128..132], BLOCK as u16);
    both_endian_u32(&mut pvd[132..140], 10); // path table size
    pvd[140..144].copy_from_slice(&L_PATH_TABLE_BLOCK.to_le_bytes());
    pvd[148..152].copy_from_slice(&M_PATH_TABLE_BLOCK.to_be_bytes());
    pvd[156..190].copy_from_slice(&directory_record(ROOT_DIR_BLOCK, BLOCK as u32, 0));
    pvd[190..813].fill(b' '); // volume set, publisher, preparer, application, file ids
    for date in [813, 830, 847, 864] {
        pvd[date..date + 16].fill(b'0');
        pvd[date + 16] = 0;
    }
    pvd[881] = 1; // file structure version
}
