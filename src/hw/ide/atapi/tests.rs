//! Unit tests: each command against a small raw image and without a medium, with the bytes
//! QEMU 7.2's source produces (hw/ide/atapi.c, hw/block/cdrom.c), and differential tests that
//! run the same command sequences against QEMU 7.2 itself (see [`super::qemu_reference`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::qemu_reference::{Observed, QemuCdrom};
use super::*;
use crate::block::drive::{DriveKind, DriveSpec};
use crate::block::options::OpenOptions;

/// A temporary file removed on drop.
struct TempImage(PathBuf);

impl TempImage {
    /// `blocks` 2048-byte blocks, block `i` filled with a pattern that names it.
    fn iso(blocks: u32) -> TempImage {
        let mut bytes = Vec::with_capacity(blocks as usize * BLOCK_SIZE);
        for block in 0..blocks {
            for j in 0..BLOCK_SIZE as u32 {
                bytes.push((block.wrapping_mul(7).wrapping_add(j) & 0xff) as u8);
            }
        }
        Self::with_bytes(&bytes)
    }

    fn with_bytes(bytes: &[u8]) -> TempImage {
        let image = Self::empty();
        std::fs::write(&image.0, bytes).unwrap();
        image
    }

    /// A sparse image of `len` bytes.
    fn sparse(len: u64) -> TempImage {
        let image = Self::empty();
        std::fs::File::create(&image.0)
            .unwrap()
            .set_len(len)
            .unwrap();
        image
    }

    fn empty() -> TempImage {
        static N: AtomicU64 = AtomicU64::new(0);
        TempImage(std::env::temp_dir().join(format!(
            "vmscope-atapi-test-{}-{}.iso",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The drive `-cdrom FILE` creates (secondary master), or an empty one.
fn cdrom(image: Option<&Path>) -> Atapi {
    let drive = Drive::open(DriveSpec {
        id: "ide1-cd0".into(),
        file: image.map(Path::to_path_buf),
        kind: DriveKind::Cdrom,
        slot: DriveSlot::Ide { bus: 1, unit: 0 },
        open: OpenOptions {
            format: Some("raw".into()),
            read_only: true,
            ..Default::default()
        },
        snapshot: false,
        device: None,
    })
    .unwrap();
    Atapi::new(Arc::new(drive))
}

fn cdb(bytes: &[u8]) -> [u8; 12] {
    let mut cdb = [0u8; 12];
    cdb[..bytes.len()].copy_from_slice(bytes);
    cdb
}

fn data(atapi: &mut Atapi, bytes: &[u8]) -> Vec<u8> {
    match atapi.execute(&cdb(bytes)) {
        PacketOutcome::DataIn(data) => data,
        other => panic!("{bytes:02x?}: expected data, got {other:?}"),
    }
}

fn error(atapi: &mut Atapi, bytes: &[u8]) -> (u8, u8) {
    match atapi.execute(&cdb(bytes)) {
        PacketOutcome::Error(sense) => (sense.key, sense.asc),
        other => panic!("{bytes:02x?}: expected an error, got {other:?}"),
    }
}

const ILLEGAL: u8 = sense_key::ILLEGAL_REQUEST;

#[test]
fn test_unit_ready_needs_a_medium() {
    let iso = TempImage::iso(40);
    assert_eq!(
        cdrom(Some(iso.path())).execute(&cdb(&[0x00])),
        PacketOutcome::Done
    );
    let mut empty = cdrom(None);
    assert_eq!(error(&mut empty, &[0x00]), (2, 0x3a));
    // REQUEST SENSE then reports it: fixed format, valid, 10 more bytes.
    let sense = data(&mut empty, &[0x03, 0, 0, 0, 18]);
    let mut expected = [0u8; 18];
    expected[0] = 0xf0;
    expected[2] = 2;
    expected[7] = 10;
    expected[12] = 0x3a;
    assert_eq!(sense, expected);
}

#[test]
fn request_sense_keeps_the_last_error_but_clears_unit_attention() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(error(&mut atapi, &[0xff]), (ILLEGAL, 0x20));
    assert_eq!(atapi.execute(&cdb(&[0x00])), PacketOutcome::Done);
    // Success does not clear the sense in QEMU.
    assert_eq!(data(&mut atapi, &[0x03, 0, 0, 0, 18])[2], ILLEGAL);
    // The allocation length cuts the reply.
    assert_eq!(data(&mut atapi, &[0x03, 0, 0, 0, 4]).len(), 4);
    assert!(data(&mut atapi, &[0x03]).is_empty());
}

#[test]
fn inquiry_standard_and_vital_product_data() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    let std = data(&mut atapi, &[0x12, 0, 0, 0, 96]);
    assert_eq!(std.len(), 36);
    assert_eq!(&std[..8], &[0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0]);
    assert_eq!(&std[8..36], b"QEMU    QEMU DVD-ROM    2.5+");
    assert_eq!(
        data(&mut atapi, &[0x12, 1, 0, 0, 255]),
        [5, 0, 0, 2, 0, 0x83]
    );
    // Device identification: the serial, then vendor "ATA" + model + serial.
    let id = data(&mut atapi, &[0x12, 1, 0x83, 0, 255]);
    assert_eq!(id.len(), 4 + 24 + 72);
    assert_eq!(&id[..8], &[5, 0x83, 0, 96, 2, 0, 0, 20]);
    assert_eq!(&id[8..28], b"QM00003             ");
    assert_eq!(
        &id[28..40],
        &[2, 1, 0, 68, b'A', b'T', b'A', b' ', b' ', b' ', b' ', b' ']
    );
    // Without room for the second entry only the first is sent; without room for the
    // first the command fails.
    assert_eq!(data(&mut atapi, &[0x12, 1, 0x83, 0, 99]).len(), 28);
    assert_eq!(error(&mut atapi, &[0x12, 1, 0x83, 0, 27]), (ILLEGAL, 0x4b));
    assert_eq!(error(&mut atapi, &[0x12, 1, 0x80, 0, 255]), (ILLEGAL, 0x24));
    atapi.set_serial("MYSERIAL");
    assert_eq!(
        &data(&mut atapi, &[0x12, 1, 0x83, 0, 28])[8..16],
        b"MYSERIAL"
    );
}

#[test]
fn read_capacity_is_the_last_block_and_ignores_the_allocation_length() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(data(&mut atapi, &[0x25]), [0, 0, 0, 39, 0, 0, 8, 0]);
    assert_eq!(error(&mut cdrom(None), &[0x25]), (2, 0x3a));
    // A medium shorter than one block still counts as present (QEMU's 512-byte
    // geometry), and its last block wraps to 0xffffffff.
    let tiny = TempImage::with_bytes(&[1u8; 1024]);
    assert_eq!(
        data(&mut cdrom(Some(tiny.path())), &[0x25]),
        [0xff, 0xff, 0xff, 0xff, 0, 0, 8, 0]
    );
}

#[test]
fn reads_check_the_range_and_return_the_blocks() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(
        atapi.execute(&cdb(&[0x28, 0, 0, 0, 0, 3, 0, 0, 2])),
        PacketOutcome::ReadBlocks { lba: 3, count: 2 }
    );
    let mut buf = vec![0u8; 2 * BLOCK_SIZE];
    atapi.read_blocks(3, 2, &mut buf).unwrap();
    assert_eq!(buf[0], 21);
    assert_eq!(buf[BLOCK_SIZE], 28);
    assert_eq!(
        atapi.execute(&cdb(&[0xa8, 0, 0, 0, 0, 39, 0, 0, 0, 1])),
        PacketOutcome::ReadBlocks { lba: 39, count: 1 }
    );
    // Count 0 succeeds without data, even at a bad address.
    assert_eq!(
        atapi.execute(&cdb(&[0x28, 0, 0xff, 0xff, 0xff, 0xff])),
        PacketOutcome::Done
    );
    for bad in [
        cdb(&[0x28, 0, 0, 0, 0, 39, 0, 0, 2]),
        cdb(&[0x28, 0, 0, 0, 0, 40, 0, 0, 1]),
        cdb(&[0x28, 0, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff]),
        cdb(&[0xa8, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        // QEMU's 32-bit sum wraps here and it ends the command without data; refused.
        cdb(&[0xa8, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]),
    ] {
        assert_eq!(
            atapi.execute(&bad),
            PacketOutcome::Error(Sense::new(ILLEGAL, 0x21)),
            "{bad:02x?}"
        );
    }
    // A mis-sized buffer or a range past the end is refused, not a panic.
    assert_eq!(
        atapi.read_blocks(39, 2, &mut vec![0u8; 2 * BLOCK_SIZE]),
        Err(Sense::new(ILLEGAL, 0x21))
    );
    assert!(atapi.read_blocks(0, 1, &mut [0u8; 10]).is_err());
    assert_eq!(
        cdrom(None).read_blocks(0, 1, &mut [0u8; BLOCK_SIZE]),
        Err(Sense::new(2, 0x3a))
    );
}

#[test]
fn reads_are_accounted() {
    let iso = TempImage::iso(40);
    let atapi = cdrom(Some(iso.path()));
    let mut buf = vec![0u8; BLOCK_SIZE];
    atapi.read_blocks(5, 1, &mut buf).unwrap();
    let stats = atapi.drive.stats();
    assert_eq!(stats.rd_operations.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rd_bytes.load(Ordering::Relaxed), 2048);
}

#[test]
fn read_cd_user_data_and_raw_sectors() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(
        atapi.execute(&cdb(&[0xbe, 0, 0, 0, 0, 4, 0, 0, 2, 0x10])),
        PacketOutcome::ReadBlocks { lba: 4, count: 2 }
    );
    let raw = data(&mut atapi, &[0xbe, 0, 0, 0, 0, 1, 0, 0, 2, 0xf8]);
    assert_eq!(raw.len(), 2 * RAW_SECTOR_SIZE);
    assert_eq!(
        &raw[..16],
        &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 2, 1, 1]
    );
    assert_eq!(raw[16], 7); // block 1's first byte
    assert!(raw[16 + BLOCK_SIZE..RAW_SECTOR_SIZE]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(raw[RAW_SECTOR_SIZE + 14], 2); // frame of block 2
    assert_eq!(
        atapi.execute(&cdb(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 2, 0x00])),
        PacketOutcome::Done
    );
    assert_eq!(
        error(&mut atapi, &[0xbe, 0, 0, 0, 0, 1, 0, 0, 2, 0x08]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(
        error(&mut atapi, &[0xbe, 0, 0, 0, 0, 39, 0, 0, 2, 0x10]),
        (ILLEGAL, 0x21)
    );
    // Huge raw requests are bounded instead of allocated.
    let big = TempImage::sparse(4 << 20);
    assert_eq!(
        error(
            &mut cdrom(Some(big.path())),
            &[0xbe, 0, 0, 0, 0, 0, 0, 0x07, 0xd0, 0xf8]
        ),
        (ILLEGAL, 0x24)
    );
}

#[test]
fn seek_checks_the_address() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(
        atapi.execute(&cdb(&[0x2b, 0, 0, 0, 0, 39])),
        PacketOutcome::Done
    );
    assert_eq!(error(&mut atapi, &[0x2b, 0, 0, 0, 0, 40]), (ILLEGAL, 0x21));
}

#[test]
fn read_toc_formats() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(
        data(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100]),
        [0, 0x12, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x16, 0xaa, 0, 0, 0, 0, 40]
    );
    assert_eq!(
        data(&mut atapi, &[0x43, 2, 0, 0, 0, 0, 0, 0, 100]),
        [0, 0x12, 1, 1, 0, 0x14, 1, 0, 0, 0, 2, 0, 0, 0x16, 0xaa, 0, 0, 0, 2, 40]
    );
    assert_eq!(
        data(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 0, 0, 4]),
        [0, 0x12, 1, 1]
    );
    assert_eq!(
        error(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 2, 0, 100]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(
        data(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x40]),
        [0, 10, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let raw = data(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x80]);
    assert_eq!(raw.len(), 48);
    assert_eq!(&raw[..4], &[0, 46, 1, 1]);
    assert_eq!(&raw[26..37], &[1, 0x14, 0, 0xa2, 0, 0, 0, 0, 0, 0, 40]);
    assert_eq!(
        error(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0xc0]),
        (ILLEGAL, 0x24)
    );
}

#[test]
fn get_configuration_lists_dvd_and_cd_profiles() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(
        data(&mut atapi, &[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        [0, 0, 0, 16, 0, 0, 0, 8, 0, 0, 3, 8, 0, 0x10, 0, 0, 0, 8, 1, 0]
    );
    assert_eq!(data(&mut atapi, &[0x46, 0, 0, 0, 0, 0, 0, 0, 8]).len(), 8);
    assert_eq!(error(&mut atapi, &[0x46, 0, 0, 1]), (ILLEGAL, 0x24));
    // No medium: no current profile; a DVD-sized medium: DVD-ROM is current.
    assert_eq!(
        data(&mut cdrom(None), &[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        [0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 3, 8, 0, 0x10, 0, 0, 0, 8, 0, 0]
    );
    let dvd = TempImage::sparse(800_000_000);
    assert_eq!(
        &data(
            &mut cdrom(Some(dvd.path())),
            &[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]
        )[6..20],
        &[0, 0x10, 0, 0, 3, 8, 0, 0x10, 1, 0, 0, 8, 0, 0]
    );
}

#[test]
fn event_status_reports_media_events_once() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    let gesn = [0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8];
    assert_eq!(data(&mut atapi, &gesn), [0, 4, 4, 0x10, 0, 2, 0, 0]);
    atapi.change_medium(true);
    assert_eq!(data(&mut atapi, &gesn), [0, 4, 4, 0x10, 2, 2, 0, 0]);
    assert_eq!(data(&mut atapi, &gesn), [0, 4, 4, 0x10, 0, 2, 0, 0]);
    atapi.request_eject(false);
    assert_eq!(data(&mut atapi, &gesn), [0, 4, 4, 0x10, 1, 2, 0, 0]);
    // Other classes: no event available.
    assert_eq!(
        data(&mut atapi, &[0x4a, 1, 0, 0, 0x02, 0, 0, 0, 8]),
        [0, 0, 0x80, 0x10]
    );
    assert_eq!(
        error(&mut atapi, &[0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(data(&mut cdrom(None), &gesn), [0, 4, 4, 0x10, 0, 0, 0, 0]);
}

#[test]
fn mode_sense_pages() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    assert_eq!(
        data(&mut atapi, &[0x5a, 0, 0x01, 0, 0, 0, 0, 0, 0xff]),
        [0, 14, 0x70, 0, 0, 0, 0, 0, 1, 6, 0, 5, 0, 0, 0, 0]
    );
    let caps = data(&mut atapi, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff]);
    assert_eq!(
        caps,
        [
            0, 28, 0x70, 0, 0, 0, 0, 0, 0x2a, 20, 0x3b, 0, 0x71, 0x60, 0x29, 0, 2, 0xc0, 0, 2, 2,
            0, 2, 0xc0, 0, 0, 0, 0, 0, 0
        ]
    );
    atapi.execute(&cdb(&[0x1e, 0, 0, 0, 1]));
    assert_eq!(
        data(&mut atapi, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff])[14],
        0x2b
    );
    let audio = data(&mut atapi, &[0x5a, 0, 0x0e, 0, 0, 0, 0, 0, 0xff]);
    assert_eq!(&audio[..10], &[0, 22, 0x70, 0, 0, 0, 0, 0, 0x0e, 14]);
    assert_eq!(
        data(&mut atapi, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 4]).len(),
        4
    );
    assert_eq!(error(&mut atapi, &[0x5a, 0, 0x3f]), (ILLEGAL, 0x24));
    assert_eq!(error(&mut atapi, &[0x5a, 0, 0x6a]), (ILLEGAL, 0x24));
    assert_eq!(error(&mut atapi, &[0x5a, 0, 0xaa]), (ILLEGAL, 0x24));
    assert_eq!(error(&mut atapi, &[0x5a, 0, 0xea]), (ILLEGAL, 0x39));
    // MODE SENSE does not need a medium.
    assert_eq!(
        data(&mut cdrom(None), &[0x5a, 0, 0x01, 0, 0, 0, 0, 0, 0xff]).len(),
        16
    );
}

#[test]
fn mode_sense_audio_page_shows_the_buffer_as_qemu_leaves_it() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    // The holes show the packet's bytes 10-11 and then the previous reply's bytes.
    data(&mut atapi, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x80]);
    let audio = data(
        &mut atapi,
        &[0x5a, 0, 0x0e, 0, 0, 0, 0, 0, 0xff, 0, 0xaa, 0xbb],
    );
    assert_eq!(
        &audio[10..24],
        &[0xaa, 0xbb, 1, 0, 0, 1, 0x14, 0, 0xa1, 0, 0, 0, 0, 0]
    );
    // Data read passes through the buffer too.
    let mut block = vec![0u8; BLOCK_SIZE];
    atapi.read_blocks(2, 1, &mut block).unwrap();
    let audio = data(&mut atapi, &[0x5a, 0, 0x0e, 0, 0, 0, 0, 0, 0xff]);
    assert_eq!(&audio[12..17], &block[12..17]);
}

#[test]
fn disc_information_and_mechanism_status() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    let info = data(&mut atapi, &[0x51, 0, 0, 0, 0, 0, 0, 0, 0xff]);
    assert_eq!(info.len(), 34);
    assert_eq!(&info[..9], &[0, 32, 0x0e, 1, 1, 1, 1, 0x20, 0]);
    assert!(info[9..].iter().all(|&b| b == 0));
    assert_eq!(
        error(&mut atapi, &[0x51, 1, 0, 0, 0, 0, 0, 0, 0xff]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(
        data(&mut atapi, &[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8]),
        [0, 0, 0, 0, 0, 1, 0, 0]
    );
    assert_eq!(
        data(&mut cdrom(None), &[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8]),
        [0, 0, 0, 0, 0, 1, 0, 0]
    );
    assert_eq!(
        error(&mut cdrom(None), &[0x51, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        (2, 0x3a)
    );
}

#[test]
fn dvd_structures_only_for_dvd_media() {
    let iso = TempImage::iso(40);
    let mut cd = cdrom(Some(iso.path()));
    assert_eq!(
        error(&mut cd, &[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]),
        (ILLEGAL, 0x30)
    );
    // The capability list (format 0xff) is answered for CDs too.
    let list = data(&mut cd, &[0xad, 0, 0, 0, 0, 0, 0, 0xff, 0, 0xff]);
    assert_eq!(
        list,
        [0, 18, 0, 0, 0, 0x40, 0x08, 0x04, 1, 0x40, 0, 8, 3, 0x40, 0, 192, 4, 0x40, 0x08, 0x04]
    );
    let dvd = TempImage::sparse(800_000_000);
    let mut dvd = cdrom(Some(dvd.path()));
    let physical = data(&mut dvd, &[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]);
    assert_eq!(physical.len(), 2052);
    let last = (800_000_000u32 / 2048 - 1).to_be_bytes();
    assert_eq!(&physical[..12], &[8, 2, 0, 0, 1, 0xf, 1, 0, 0, 0, 0, 0]);
    assert_eq!(&physical[12..16], &last);
    assert_eq!(&physical[16..20], &last);
    assert_eq!(
        data(&mut dvd, &[0xad, 0, 0, 0, 0, 0, 0, 1, 0, 0xff]),
        [0, 6, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        error(&mut dvd, &[0xad, 0, 0, 0, 0, 0, 0, 3, 0, 0xff]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(
        error(&mut dvd, &[0xad, 1, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(
        error(&mut dvd, &[0xad, 0, 0, 0, 0, 0, 0, 0x80, 0, 0xff]),
        (ILLEGAL, 0x24)
    );
    assert_eq!(
        data(&mut dvd, &[0xad, 0, 0, 0, 0, 0, 0, 4, 0, 4]),
        [8, 2, 0, 0]
    );
}

#[test]
fn tray_lock_and_eject() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    let eject = [0x1b, 0, 0, 0, 2];
    let load = [0x1b, 0, 0, 0, 3];
    assert_eq!(
        atapi.execute(&cdb(&[0x1e, 0, 0, 0, 1])),
        PacketOutcome::Done
    );
    assert!(atapi.tray_locked());
    assert_eq!(error(&mut atapi, &eject), (2, 0x53));
    assert!(!atapi.tray_open());
    atapi.execute(&cdb(&[0x1e, 0, 0, 0, 0]));
    assert_eq!(atapi.execute(&cdb(&eject)), PacketOutcome::Done);
    assert!(atapi.tray_open());
    assert_eq!(error(&mut atapi, &[0x00]), (2, 0x3a));
    assert_eq!(atapi.capacity_blocks(), 0);
    // Tray open: GESN says so.
    assert_eq!(data(&mut atapi, &[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8])[5], 1);
    assert_eq!(atapi.execute(&cdb(&eject)), PacketOutcome::Done);
    assert_eq!(atapi.execute(&cdb(&load)), PacketOutcome::Done);
    assert_eq!(atapi.take_tray_moves(), [true, false]);
    assert_eq!(atapi.execute(&cdb(&[0x00])), PacketOutcome::Done);
    // A power condition makes it a no-op.
    assert_eq!(
        atapi.execute(&cdb(&[0x1b, 0, 0, 0, 0x12])),
        PacketOutcome::Done
    );
    assert!(atapi.take_tray_moves().is_empty());
    // Locked and empty: ILLEGAL REQUEST instead of NOT READY.
    let mut empty = cdrom(None);
    empty.execute(&cdb(&[0x1e, 0, 0, 0, 1]));
    assert_eq!(error(&mut empty, &eject), (ILLEGAL, 0x53));
    // Reset unlocks and closes.
    atapi.execute(&cdb(&[0x1e, 0, 0, 0, 1]));
    atapi.reset();
    assert!(!atapi.tray_locked());
}

#[test]
fn medium_change_reports_not_ready_then_unit_attention() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    atapi.change_medium(true);
    // INQUIRY may run under unit attention and does not consume the sequence.
    assert_eq!(data(&mut atapi, &[0x12, 0, 0, 0, 36]).len(), 36);
    assert_eq!(error(&mut atapi, &[0x00]), (2, 0x3a));
    assert_eq!(error(&mut atapi, &[0x00]), (6, 0x28));
    // Now the unit attention blocks other commands until REQUEST SENSE.
    let transfer = PacketTransfer {
        dma: false,
        byte_count_limit: 0xfffe,
    };
    assert_eq!(
        atapi.execute_packet(&cdb(&[0x25]), transfer),
        PacketReply::UnitAttentionPending
    );
    assert_eq!(
        atapi.execute(&cdb(&[0x25])),
        PacketOutcome::Error(Sense::new(6, 0x28))
    );
    assert_eq!(data(&mut atapi, &[0x03, 0, 0, 0, 18])[2], 6);
    assert_eq!(atapi.execute(&cdb(&[0x00])), PacketOutcome::Done);
    // The ASC stays after the key is cleared.
    let sense = data(&mut atapi, &[0x03, 0, 0, 0, 18]);
    assert_eq!((sense[2], sense[12]), (0, 0x28));
    // No unit attention at power-on or after reset.
    atapi.change_medium(true);
    atapi.reset();
    assert_eq!(atapi.execute(&cdb(&[0x00])), PacketOutcome::Done);
}

#[test]
fn zero_byte_count_limit_aborts_pio_data_commands_only() {
    let iso = TempImage::iso(40);
    let mut atapi = cdrom(Some(iso.path()));
    let pio0 = PacketTransfer {
        dma: false,
        byte_count_limit: 0,
    };
    assert_eq!(
        atapi.execute_packet(&cdb(&[0x12, 0, 0, 0, 36]), pio0),
        PacketReply::AtaAbort
    );
    assert_eq!(
        atapi.execute_packet(&cdb(&[0x00]), pio0),
        PacketReply::Outcome(PacketOutcome::Done)
    );
    assert_eq!(
        atapi.execute_packet(&cdb(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 1, 0x10]), pio0),
        PacketReply::AtaAbort
    );
    assert_eq!(
        atapi.execute_packet(&cdb(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 1, 0x00]), pio0),
        PacketReply::Outcome(PacketOutcome::Done)
    );
    // Unknown commands fail with the invalid opcode before the limit matters.
    assert_eq!(
        atapi.execute_packet(&cdb(&[0x2a]), pio0),
        PacketReply::Outcome(PacketOutcome::Error(Sense::new(ILLEGAL, 0x20)))
    );
}

#[test]
fn every_opcode_and_hostile_fields_are_answered_without_panic() {
    let iso = TempImage::iso(40);
    for image in [Some(iso.path()), None] {
        let mut atapi = cdrom(image);
        for opcode in 0..=255u8 {
            for fill in [0x00u8, 0xff, 0x5a] {
                let mut packet = [fill; 12];
                packet[0] = opcode;
                let _ = atapi.execute(&packet);
                let _ = atapi.execute_packet(
                    &packet,
                    PacketTransfer {
                        dma: false,
                        byte_count_limit: 0,
                    },
                );
                atapi.reset();
            }
        }
    }
}

#[test]
fn identify_packet_device_words() {
    let atapi = cdrom(None);
    let words = atapi.identify("QM00003");
    assert_eq!(words[0], 0x85c0);
    assert_eq!(words[10], u16::from_be_bytes(*b"QM"));
    assert_eq!(words[13], u16::from_be_bytes(*b"3 "));
    assert_eq!(words[23], u16::from_be_bytes(*b"2."));
    assert_eq!(words[27], u16::from_be_bytes(*b"QE"));
    assert_eq!(words[49], 0x0300);
    assert_eq!(words[88], 0x203f);
}

// Differential tests against QEMU 7.2.

/// One step of a scenario, run on both sides.
#[derive(Clone, Debug)]
enum Step {
    Packet([u8; 12], u16),
    Identify,
    Reset,
    ChangeMedium,
}

fn packet(bytes: &[u8]) -> Step {
    Step::Packet(cdb(bytes), 0xfffe)
}

fn packet_bcl(bytes: &[u8], byte_count_limit: u16) -> Step {
    Step::Packet(cdb(bytes), byte_count_limit)
}

/// What the IDE layer shows for our reply, following QEMU's register updates.
fn ours(atapi: &mut Atapi, cdb: &[u8; 12], byte_count_limit: u16) -> Observed {
    let transfer = PacketTransfer {
        dma: false,
        byte_count_limit,
    };
    let done = |data: Vec<u8>| Observed {
        status: 0x50,
        error: 0,
        sector_count: 3,
        data,
    };
    let failed = |sense: Sense, data: Vec<u8>| Observed {
        status: 0x41,
        error: sense.error_register(),
        sector_count: 3,
        data,
    };
    match atapi.execute_packet(cdb, transfer) {
        PacketReply::Outcome(PacketOutcome::Done) => done(Vec::new()),
        PacketReply::Outcome(PacketOutcome::DataIn(mut data)) if data.len() % 2 == 1 => {
            // QEMU's PIO data port cannot hand out the odd last byte; the transfer stays
            // in its data phase (DRQ, interrupt reason I/O) until a reset.
            data.pop();
            Observed {
                status: 0x58,
                error: 0,
                sector_count: 2,
                data,
            }
        }
        PacketReply::Outcome(PacketOutcome::DataIn(data)) => done(data),
        PacketReply::Outcome(PacketOutcome::ReadBlocks { lba, count }) => {
            // PIO: block by block, as QEMU reads them.
            let mut data = Vec::new();
            for i in 0..count {
                let mut block = vec![0u8; BLOCK_SIZE];
                if let Err(sense) = atapi.read_blocks(lba + i, 1, &mut block) {
                    return failed(sense, data);
                }
                data.extend_from_slice(&block);
            }
            done(data)
        }
        PacketReply::Outcome(PacketOutcome::Error(sense)) => failed(sense, Vec::new()),
        PacketReply::UnitAttentionPending => Observed {
            status: 0x01,
            error: 0x60,
            sector_count: 0,
            data: Vec::new(),
        },
        PacketReply::AtaAbort => Observed {
            status: 0x41,
            error: 0x04,
            sector_count: 1,
            data: Vec::new(),
        },
    }
}

fn compare(image: Option<&Path>, steps: &[Step]) {
    let mut qemu = QemuCdrom::start(image);
    let mut atapi = cdrom(image);
    for (i, step) in steps.iter().enumerate() {
        if std::env::var_os("VMSCOPE_ATAPI_TRACE").is_some() {
            eprintln!("step {i}: {step:?}");
        }
        match step {
            Step::Packet(cdb, bcl) => {
                let reference = qemu.packet(cdb, *bcl);
                let got = ours(&mut atapi, cdb, *bcl);
                assert_eq!(got, reference, "step {i}: packet {cdb:02x?} (bcl {bcl:#x})");
            }
            Step::Identify => {
                let reference = qemu.identify_packet();
                let got = atapi.identify("QM00003");
                assert_eq!(got, reference, "step {i}: IDENTIFY PACKET DEVICE");
            }
            Step::Reset => {
                qemu.device_reset();
                atapi.reset();
            }
            Step::ChangeMedium => {
                let path = image.expect("a medium to change").display().to_string();
                let reply = qemu.qmp(&format!(
                    "{{\"execute\":\"blockdev-change-medium\",\"arguments\":\
                     {{\"device\":\"ide1-cd0\",\"filename\":\"{path}\",\"format\":\"raw\"}}}}"
                ));
                assert!(reply.contains("\"return\""), "{reply}");
                atapi.change_medium(true);
            }
        }
    }
}

/// Commands that need no special state, with good and bad fields.
fn command_tour() -> Vec<Step> {
    let audio_page = packet(&[0x5a, 0, 0x0e, 0, 0, 0, 0, 0, 0xff, 0, 0x11, 0x22]);
    vec![
        Step::Identify,
        audio_page.clone(),
        packet(&[0x00]),
        packet(&[0x03, 0, 0, 0, 18]),
        packet(&[0x03, 0, 0, 0, 4]),
        packet(&[0x03, 0, 0, 0, 0]),
        packet(&[0x12, 0, 0, 0, 96]),
        packet(&[0x12, 0, 0, 0, 5]),
        Step::Reset,
        packet(&[0x12, 0, 0, 0, 0]),
        packet(&[0x12, 1, 0, 0, 255]),
        packet(&[0x12, 1, 0x83, 0, 255]),
        packet(&[0x12, 1, 0x83, 0, 99]),
        packet(&[0x12, 1, 0x83, 0, 28]),
        packet(&[0x12, 1, 0x83, 0, 27]),
        packet(&[0x03, 0, 0, 0, 18]),
        packet(&[0x12, 1, 0x80, 0, 255]),
        audio_page.clone(),
        packet(&[0x25]),
        packet(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0]),
        packet(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1]),
        audio_page.clone(),
        packet(&[0x28, 0, 0, 0, 0, 3, 0, 0, 2]),
        packet(&[0x28, 0, 0, 0, 0, 39, 0, 0, 1]),
        packet(&[0x28, 0, 0, 0, 0, 39, 0, 0, 2]),
        packet(&[0x28, 0, 0, 0, 0, 40, 0, 0, 1]),
        packet(&[0x28, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1]),
        packet(&[0x28, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0]),
        packet(&[0xa8, 0, 0, 0, 0, 1, 0, 0, 0, 3]),
        packet(&[0xa8, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        packet(&[0x2b, 0, 0, 0, 0, 39]),
        packet(&[0x2b, 0, 0, 0, 0, 40]),
        packet(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100]),
        packet(&[0x43, 2, 0, 0, 0, 0, 1, 0, 100]),
        packet(&[0x43, 0, 0, 0, 0, 0, 2, 0, 100]),
        packet(&[0x43, 2, 0, 0, 0, 0, 0xaa, 0, 100]),
        packet(&[0x43, 0, 0, 0, 0, 0, 0, 0, 4]),
        packet(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x40]),
        packet(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x80]),
        audio_page.clone(),
        packet(&[0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0x80]),
        packet(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0xc0]),
        packet(&[0x43, 0, 2, 0, 0, 0, 0, 0, 100]),
        packet(&[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x46, 2, 0, 0, 0, 0, 0, 0, 8]),
        packet(&[0x46, 0, 0, 0, 0, 0, 0, 0, 5]),
        Step::Reset,
        packet(&[0x46, 0, 0, 0, 0, 0, 0, 0x10, 0]),
        packet(&[0x46, 0, 0, 0x1e, 0, 0, 0, 0, 0xff]),
        audio_page.clone(),
        packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
        packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 4]),
        packet(&[0x4a, 1, 0, 0, 0x02, 0, 0, 0, 8]),
        packet(&[0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8]),
        packet(&[0x5a, 0, 0x01, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 8]),
        packet(&[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x5a, 0, 0x41, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x5a, 0, 0x81, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x5a, 0, 0xc1, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x51, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0x51, 0, 0, 0, 0, 0, 0, 0, 2]),
        packet(&[0x51, 1, 0, 0, 0, 0, 0, 0, 0xff]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 0xff, 0, 0xff]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 0xff, 0, 6]),
        packet(&[0xad, 1, 0, 0, 0, 0, 0, 0xff, 0, 0xff]),
        packet(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8]),
        packet(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
        Step::Reset,
        packet(&[0xbb, 0, 0xff, 0xff]),
        packet(&[0xbe, 0, 0, 0, 0, 4, 0, 0, 2, 0x10]),
        packet(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 2, 0xf8]),
        audio_page.clone(),
        packet(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 2, 0x00]),
        packet(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 2, 0x08]),
        packet(&[0xbe, 0, 0, 0, 0, 39, 0, 0, 2, 0x10]),
        packet(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 0, 0x10]),
        packet(&[0x01]),
        packet(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1]),
        packet(&[0x55]),
        packet(&[0xff, 0xff, 0xff]),
        packet(&[0x03, 0, 0, 0, 18]),
        packet_bcl(&[0x12, 0, 0, 0, 36], 0),
        packet_bcl(&[0x00], 0),
        packet_bcl(&[0x1e], 0),
        packet_bcl(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 1, 0x10], 0),
        packet_bcl(&[0xbe, 0, 0, 0, 0, 1, 0, 0, 1, 0x00], 0),
        packet_bcl(&[0x01], 0),
        packet_bcl(&[0x12, 0, 0, 0, 36], 7),
        packet_bcl(&[0x28, 0, 0, 0, 0, 5, 0, 0, 2], 1000),
        packet_bcl(&[0x28, 0, 0, 0, 0, 5, 0, 0, 1], 0xffff),
        packet(&[0x03, 0, 0, 0, 18]),
        Step::Reset,
        packet(&[0x03, 0, 0, 0, 18]),
        audio_page,
    ]
}

#[test]
fn matches_qemu_with_a_medium() {
    let iso = TempImage::iso(40);
    compare(Some(iso.path()), &command_tour());
}

#[test]
fn matches_qemu_without_a_medium() {
    let mut steps = command_tour();
    steps.extend([
        packet(&[0x1b, 0, 0, 0, 2]),
        packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
        packet(&[0x1b, 0, 0, 0, 3]),
        packet(&[0x1e, 0, 0, 0, 1]),
        packet(&[0x1b, 0, 0, 0, 2]),
        packet(&[0x03, 0, 0, 0, 18]),
    ]);
    compare(None, &steps);
}

#[test]
fn matches_qemu_with_a_dvd_sized_medium() {
    let dvd = TempImage::sparse(800_000_000);
    let mut steps = command_tour();
    steps.extend([
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]),
        packet(&[0xad, 0, 0, 0, 0, 0, 1, 0, 0x08, 0x04]),
        packet(&[0xad, 0, 0, 0, 0, 0, 1, 0, 0, 4]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 1, 0, 0xff]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 3, 0, 0xff]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 4, 0x08, 0x04]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 0x30, 0, 0xff]),
        packet(&[0xad, 0, 0, 0, 0, 0, 0, 0x80, 0, 0xff]),
        packet(&[0x43, 2, 0, 0, 0, 0, 0, 0, 100]),
    ]);
    compare(Some(dvd.path()), &steps);
}

#[test]
fn matches_qemu_with_media_shorter_than_a_block() {
    for len in [1024usize, 3000] {
        let image = TempImage::with_bytes(&vec![0x42u8; len]);
        compare(
            Some(image.path()),
            &[
                packet(&[0x00]),
                packet(&[0x25]),
                packet(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1]),
                packet(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100]),
                packet(&[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]),
                packet(&[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]),
                packet(&[0x03, 0, 0, 0, 18]),
            ],
        );
    }
}

#[test]
fn matches_qemu_for_tray_lock_and_eject() {
    let iso = TempImage::iso(40);
    compare(
        Some(iso.path()),
        &[
            packet(&[0x1e, 0, 0, 0, 1]),
            packet(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff]),
            packet(&[0x1b, 0, 0, 0, 2]),
            packet(&[0x03, 0, 0, 0, 18]),
            packet(&[0x1e, 0, 0, 0, 0]),
            packet(&[0x1b, 0, 0, 0, 2]),
            packet(&[0x00]),
            packet(&[0x25]),
            packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
            packet(&[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            packet(&[0x1b, 0, 0, 0, 0x22]),
            packet(&[0x1b, 0, 0, 0, 3]),
            packet(&[0x00]),
            packet(&[0x1b, 0, 0, 0, 1]),
            packet(&[0x1e, 0, 0, 0, 1]),
            Step::Reset,
            packet(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff]),
            packet(&[0x1b, 0, 0, 0, 2]),
            packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
            Step::Reset,
            packet(&[0x00]),
        ],
    );
}

#[test]
fn matches_qemu_after_a_medium_change() {
    let iso = TempImage::iso(40);
    compare(
        Some(iso.path()),
        &[
            packet(&[0x00]),
            Step::ChangeMedium,
            packet(&[0x12, 0, 0, 0, 36]),
            packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
            packet(&[0x00]),
            packet(&[0x03, 0, 0, 0, 18]),
            packet(&[0x25]),
            packet(&[0x00]),
            packet(&[0x25]),
            packet(&[0x01]),
            packet(&[0x46, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            packet(&[0x03, 0, 0, 0, 18]),
            packet(&[0x00]),
            packet(&[0x03, 0, 0, 0, 18]),
            packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
            Step::ChangeMedium,
            Step::Reset,
            packet(&[0x00]),
            packet(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8]),
        ],
    );
}
