//! Hostile and damaged images: clear errors, never a panic, never an unbounded allocation.
//! Also the header feature bits (dirty, corrupt, unknown incompatible features).

#[path = "block_support.rs"]
mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use support::*;
use vmscope::block::{open_node, BlockError, OpenOptions};

fn poke(path: &str, off: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(bytes).unwrap();
}

fn open_err(path: &str, read_only: bool) -> String {
    match open_node(
        Path::new(path),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    ) {
        Ok(_) => panic!("{path} opened although it is broken"),
        Err(e) => e.to_string(),
    }
}

/// Opens, reads everything (errors allowed), tries a write and a flush (errors allowed).
fn exercise(path: &str) {
    let Ok(node) = open_node(Path::new(path), &OpenOptions::default()) else {
        return;
    };
    let size = node.virtual_size().unwrap_or(0).min(64 << 20);
    let mut buf = vec![0u8; 65536];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(65536);
        let _ = node.read_at(pos, &mut buf[..n as usize]);
        let _ = node.block_status(pos, n);
        pos += n;
    }
    let _ = node.write_at(1000.min(size.saturating_sub(10)), b"0123456789");
    let _ = node.discard(0, size.min(1 << 20));
    let _ = node.flush();
}

fn base_image(s: &Scratch, name: &str, opts: &str) -> String {
    let p = s.p(name);
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, &p, "4M"]);
    qemu_io(
        &p,
        "qcow2",
        &["write -P 0x61 0 300k", "write -P 0x62 3M 64k"],
    );
    p
}

#[test]
fn truncated_images_give_errors() {
    require_qemu();
    let s = Scratch::new("hostile-trunc");
    let good = base_image(&s, "good.qcow2", "cluster_size=4096");
    let len = std::fs::metadata(&good).unwrap().len();
    for cut in [
        0,
        3,
        50,
        72,
        100,
        104,
        4096,
        4096 * 2 + 8,
        4096 * 3,
        4096 * 4 + 100,
        len / 2,
        len - 1,
    ] {
        let p = s.p("cut.qcow2");
        std::fs::copy(&good, &p).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(cut)
            .unwrap();
        exercise(&p);
    }
    // A file shorter than a header is raw when probed, and an error when qcow2 is forced.
    let p = s.p("tiny.qcow2");
    std::fs::write(&p, b"QFI\xfb\0\0\0\x03").unwrap();
    let e = open_node(
        Path::new(&p),
        &OpenOptions {
            read_only: true,
            format: Some("qcow2".into()),
            ..Default::default()
        },
    )
    .err()
    .expect("tiny header must not open");
    assert!(
        matches!(e, BlockError::Corrupt(_) | BlockError::Unsupported(_)),
        "{e}"
    );
}

#[test]
fn oversized_tables_are_refused_before_allocation() {
    require_qemu();
    let s = Scratch::new("hostile-huge");
    let good = base_image(&s, "good.qcow2", "cluster_size=65536");
    let cases: &[(u64, &[u8], &str)] = &[
        // l1_size = 0xffffffff
        (36, &[0xff, 0xff, 0xff, 0xff], "L1 table too large"),
        // refcount_table_clusters huge
        (56, &[0x10, 0, 0, 0], "Reference count table too large"),
        // nb_snapshots huge
        (60, &[0xff, 0xff, 0xff, 0xff], "Too many snapshots"),
        // backing file size beyond the cluster
        (
            8,
            &[0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x00, 0x10, 0, 0],
            "Backing file name too long",
        ),
        // L1 table offset past the end of the file
        (40, &[0, 0, 0, 1, 0, 0, 0, 0], "Invalid L1 table offset"),
        // offsets near 2^64 (arithmetic overflow found by cargo-fuzz)
        (
            40,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00],
            "Invalid L1 table offset",
        ),
        (
            48,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00],
            "Invalid reference count table offset",
        ),
        // unaligned refcount table
        (
            48,
            &[0, 0, 0, 0, 0, 1, 0, 8],
            "Invalid reference count table offset",
        ),
        // absurd cluster bits
        (20, &[0, 0, 0, 40], "cluster size"),
        // refcount order 7
        (96, &[0, 0, 0, 7], "Reference count entry width too large"),
        // header length beyond the cluster
        (100, &[0, 2, 0, 0], "header exceeds cluster size"),
    ];
    for (off, bytes, msg) in cases {
        let p = s.p("h.qcow2");
        std::fs::copy(&good, &p).unwrap();
        poke(&p, *off, bytes);
        let e = open_err(&p, true);
        assert!(e.contains(msg), "poke at {off}: got '{e}', want '{msg}'");
    }
}

#[test]
fn tables_past_eof_and_overlapping_metadata_are_errors() {
    require_qemu();
    let s = Scratch::new("hostile-tables");
    let good = base_image(&s, "good.qcow2", "cluster_size=65536");
    // The L1 table is at 0x30000 in QEMU's layout; its first entry points at the L2 table.
    let p = s.p("l2eof.qcow2");
    std::fs::copy(&good, &p).unwrap();
    poke(
        &p,
        0x30000,
        &(0x8000_0000_0000_0000u64 | (1 << 40)).to_be_bytes(),
    );
    let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
    let mut b = [0u8; 512];
    let e = node.read_at(0, &mut b).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    drop(node);

    // L2 table pointing at the header.
    let p = s.p("l2hdr.qcow2");
    std::fs::copy(&good, &p).unwrap();
    poke(&p, 0x30000, &0x8000_0000_0000_0000u64.to_be_bytes());
    let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
    // Offset 0 means "no L2 table": reads zeros, does not touch the header.
    node.read_at(0, &mut b).unwrap();
    assert_eq!(b, [0u8; 512]);
    drop(node);

    // A data cluster entry that points at the header must not be written through.
    let p = s.p("datahdr.qcow2");
    std::fs::copy(&good, &p).unwrap();
    let l1e = {
        let d = std::fs::read(&p).unwrap();
        u64::from_be_bytes(d[0x30000..0x30008].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00
    };
    // First L2 entry := COPIED | offset 0 with... offset 0 is "unallocated"; use the L1
    // table's own cluster instead.
    poke(&p, l1e, &(0x8000_0000_0000_0000u64 | 0x30000).to_be_bytes());
    let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
    let e = node.write_at(0, b"evil").unwrap_err();
    assert!(
        e.to_string()
            .contains("Preventing invalid write on metadata"),
        "{e}"
    );
    drop(node);
    let hdr = std::fs::read(&p).unwrap();
    assert_eq!(
        &hdr[0x30000..0x30004],
        &[0x80, 0, 0, 0],
        "L1 table was overwritten"
    );

    // Unaligned L2 offset.
    let p = s.p("unal.qcow2");
    std::fs::copy(&good, &p).unwrap();
    poke(&p, 0x30000, &(0x8000_0000_0004_0200u64).to_be_bytes());
    let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
    assert!(node.read_at(0, &mut b).is_err());
}

#[test]
fn backing_loops_and_missing_backing_files_are_errors() {
    require_qemu();
    let s = Scratch::new("hostile-loop");
    let a = s.p("loop1.qcow2");
    let b = s.p("loop2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "loop2.qcow2",
        "-F",
        "qcow2",
        "-u",
        &a,
        "1M",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "loop1.qcow2",
        "-F",
        "qcow2",
        "-u",
        &b,
        "1M",
    ]);
    let e = open_err(&a, true);
    assert!(e.contains("creates an infinite loop"), "{e}");
    let selfloop = s.p("self.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "self.qcow2",
        "-F",
        "qcow2",
        "-u",
        &selfloop,
        "1M",
    ]);
    assert!(open_err(&selfloop, true).contains("infinite loop"));
    let m = s.p("miss.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "missing.qcow2",
        "-F",
        "qcow2",
        "-u",
        &m,
        "1M",
    ]);
    let e = open_err(&m, true);
    assert!(
        e.contains("Could not open backing file: Could not open")
            && e.contains("No such file or directory"),
        "{e}"
    );
}

#[test]
fn bad_compressed_data_is_a_read_error() {
    require_qemu();
    let s = Scratch::new("hostile-compressed");
    let src = s.p("src.raw");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i / 100) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let img = s.p("c.qcow2");
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", &src, &img]);
    // Garble everything after the metadata clusters (the compressed payloads).
    let len = std::fs::metadata(&img).unwrap().len();
    let mut junk = vec![0u8; (len - 0x50000) as usize];
    let mut r = Rng(3);
    for b in junk.iter_mut() {
        *b = r.next_u64() as u8;
    }
    poke(&img, 0x50000, &junk);
    let node = open_node(Path::new(&img), &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut errors = 0;
    for i in 0..16 {
        if let Err(e) = node.read_at(i * 65536, &mut buf) {
            assert!(e.to_string().contains("decompress"), "{e}");
            errors += 1;
        }
    }
    assert!(errors > 0, "garbled compressed clusters must fail to read");
}

#[test]
fn refcount_overflow_is_an_error_not_a_panic() {
    require_qemu();
    let s = Scratch::new("hostile-refcount");
    let p = s.p("r1.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "refcount_bits=1",
        &p,
        "1M",
    ]);
    qemu_io(&p, "qcow2", &["write -P 1 0 64k", "write -P 2 64k 64k"]);
    // Point the second L2 entry at the first data cluster: reference count 2 on a 1-bit
    // refcount cannot be represented.
    let d = std::fs::read(&p).unwrap();
    let l2 = u64::from_be_bytes(d[0x30000..0x30008].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00;
    let first = u64::from_be_bytes(d[l2 as usize..l2 as usize + 8].try_into().unwrap());
    poke(&p, l2 + 8, &first.to_be_bytes());
    let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
    let q = node.chain()[0].clone();
    let report = vmscope::block::qcow2::check(q.qcow2().unwrap(), false, false).unwrap();
    assert!(report.corruptions > 0 || report.leaks > 0);
    let e = vmscope::block::qcow2::check(q.qcow2().unwrap(), true, true).unwrap_err();
    assert!(matches!(e, BlockError::Corrupt(_)), "{e}");
}

#[test]
fn random_metadata_corruption_never_panics() {
    require_qemu();
    let s = Scratch::new("hostile-fuzz");
    let good = base_image(&s, "good.qcow2", "cluster_size=512,refcount_bits=4");
    let orig = std::fs::read(&good).unwrap();
    let meta_end = orig.len().min(64 * 512);
    let mut r = Rng(99);
    for _ in 0..300 {
        let mut d = orig.clone();
        for _ in 0..(1 + r.below(6)) {
            let i = r.below(meta_end as u64) as usize;
            d[i] = r.next_u64() as u8;
        }
        let p = s.p("fuzz.qcow2");
        std::fs::write(&p, &d).unwrap();
        exercise(&p);
    }
}

#[test]
fn unknown_incompatible_features_are_refused_with_qemus_text() {
    require_qemu();
    let s = Scratch::new("features-unknown");
    let p = s.p("f.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &p, "1M"]);
    poke(&p, 72, &(1u64 << 9).to_be_bytes());
    let ours = open_err(&p, true);
    let theirs = String::from_utf8_lossy(&run("qemu-img", &["info", &p]).stderr).into_owned();
    assert_eq!(
        ours,
        "Unsupported qcow2 feature(s): Unknown incompatible feature: 200"
    );
    assert!(theirs.contains(&ours), "QEMU says: {theirs}");
    // Known to QEMU but not implemented here: named from the image's feature table.
    poke(&p, 72, &(1u64 << 2).to_be_bytes());
    assert_eq!(
        open_err(&p, true),
        "Unsupported qcow2 feature(s): external data file"
    );
}

#[test]
fn corrupt_images_are_refused_read_write_but_readable() {
    require_qemu();
    let s = Scratch::new("features-corrupt");
    let p = s.p("c.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &p, "1M"]);
    qemu_io(&p, "qcow2", &["write -P 7 0 4k"]);
    poke(&p, 72, &2u64.to_be_bytes());
    let e = open_err(&p, false);
    assert_eq!(e, "qcow2: Image is corrupt; cannot be opened read/write");
    let qemu =
        String::from_utf8_lossy(&run("qemu-io", &["-c", "write 0 1", &p]).stderr).into_owned();
    assert!(qemu.contains(&e), "{qemu}");
    let node = open_node(
        Path::new(&p),
        &OpenOptions {
            auto_read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(node.is_read_only());
    assert!(node.warnings()[0].contains("corrupt"));
    let mut b = [0u8; 4];
    node.read_at(0, &mut b).unwrap();
    assert_eq!(b, [7; 4]);
    assert!(matches!(node.write_at(0, b"x"), Err(BlockError::ReadOnly)));
}

#[test]
fn dirty_images_are_repaired_on_open() {
    require_qemu();
    let s = Scratch::new("features-dirty");
    let p = s.p("d.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        &p,
        "4M",
    ]);
    qemu_io(&p, "qcow2", &["write -P 9 0 128k"]);
    // Simulate a crash with lazy refcounts: dirty bit set and refcounts wrong (the data
    // clusters' refcounts zeroed, one leaked cluster).
    let d = std::fs::read(&p).unwrap();
    let rb = u64::from_be_bytes(d[0x10000..0x10008].try_into().unwrap());
    poke(&p, rb + 2 * 5, &[0, 0, 0, 0]);
    poke(&p, rb + 2 * 40, &[0, 1]);
    poke(&p, 72, &1u64.to_be_bytes());
    let (code, _) = qemu_check(&p);
    assert_eq!(code, 2, "the damage must be visible to qemu-img first");
    {
        let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
        let mut b = [0u8; 8];
        node.read_at(65536, &mut b).unwrap();
        assert_eq!(b, [9; 8]);
        node.write_at(1 << 20, b"after repair").unwrap();
        node.close().unwrap();
    }
    assert_qemu_check_clean(&p, false);
    let d = std::fs::read(&p).unwrap();
    assert_eq!(
        u64::from_be_bytes(d[72..80].try_into().unwrap()) & 1,
        0,
        "dirty bit cleared"
    );
    // Read-only opens leave a dirty image alone.
    poke(&p, 72, &1u64.to_be_bytes());
    let before = std::fs::read(&p).unwrap();
    drop(
        open_node(
            Path::new(&p),
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    assert!(before == std::fs::read(&p).unwrap());
}

#[test]
fn lazy_refcounts_set_the_dirty_bit_while_writing() {
    require_qemu();
    let s = Scratch::new("features-lazy");
    let p = s.p("l.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        &p,
        "4M",
    ]);
    let node = open_node(Path::new(&p), &OpenOptions::default()).unwrap();
    node.write_at(0, &[1u8; 70000]).unwrap();
    node.flush().unwrap();
    let d = std::fs::read(&p).unwrap();
    assert_eq!(
        u64::from_be_bytes(d[72..80].try_into().unwrap()) & 1,
        1,
        "dirty while open"
    );
    node.close().unwrap();
    let d = std::fs::read(&p).unwrap();
    assert_eq!(
        u64::from_be_bytes(d[72..80].try_into().unwrap()) & 1,
        0,
        "clean after close"
    );
    assert_qemu_check_clean(&p, false);
}

#[test]
fn random_l2_entries_never_panic() {
    // The stable-toolchain twin of fuzz/fuzz_targets/l2_walk.rs.
    let s = Scratch::new("hostile-l2");
    let cs = 4096u64;
    let p = s.path("l2.qcow2");
    let mut r = Rng(5);
    for round in 0..150 {
        vmscope::block::qcow2::create(
            &p,
            &vmscope::block::qcow2::Qcow2CreateOptions {
                size: 2 << 20,
                cluster_size: cs,
                ..Default::default()
            },
        )
        .unwrap();
        let mut img = std::fs::read(&p).unwrap();
        let l1 = u64::from_be_bytes(img[40..48].try_into().unwrap()) as usize;
        img.resize(17 * cs as usize, 0);
        let l2 = 8 * cs as usize;
        for e in img[l2..l2 + cs as usize].chunks_mut(8) {
            // A mix of plausible and absurd entries: flags, offsets in and past the file,
            // compressed sizes.
            let v = match r.below(6) {
                0 => 0,
                1 => r.next_u64(),
                2 => (1 << 63) | (r.below(20) * cs),
                3 => (1 << 62) | (r.next_u64() & ((1 << 62) - 1)),
                4 => 1 | (r.below(20) * cs),
                _ => (1 << 63) | (r.below(1 << 30) << 9),
            };
            e.copy_from_slice(&v.to_be_bytes());
        }
        img[l1..l1 + 8].copy_from_slice(&((1u64 << 63) | l2 as u64).to_be_bytes());
        std::fs::write(&p, &img).unwrap();
        let p_s = p.to_string_lossy().into_owned();
        exercise(&p_s);
        let _ = round;
    }
}
