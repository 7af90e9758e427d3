//! Long backing chains: opening and reading walk the chain iteratively, so a 10,000-layer
//! chain opens and reads on a small thread stack (QEMU overflows its stack from ~870 layers).

#[path = "block_support.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use support::*;
use vmscope::block::qcow2::{self, Qcow2CreateOptions};
use vmscope::block::{create_overlay, open_node, ImageFormat, OpenOptions};

const SIZE: u64 = 16 << 20;

/// Builds `layers` overlays over a base; layer i (1-based) writes cluster (i % 256) with
/// byte i. Returns the path of the top image.
fn build_chain(s: &Scratch, layers: usize) -> std::path::PathBuf {
    qcow2::create(
        &s.path("base.qcow2"),
        &Qcow2CreateOptions {
            size: SIZE,
            ..Default::default()
        },
    )
    .unwrap();
    let mut prev = "base.qcow2".to_string();
    for i in 1..=layers {
        let name = format!("l{i}.qcow2");
        create_overlay(&s.path(&name), &prev, ImageFormat::Qcow2, SIZE).unwrap();
        if i % 97 == 0 || i == layers {
            // Only some layers own data: each opened alone (no backing chain).
            let node = open_node(
                &s.path(&name),
                &OpenOptions {
                    no_backing: true,
                    ..Default::default()
                },
            )
            .unwrap();
            node.write_at((i as u64 % 256) * 65536, &vec![(i % 251) as u8 + 1; 65536])
                .unwrap();
            node.close().unwrap();
        }
        prev = name;
    }
    s.path(&prev)
}

fn expected(layers: usize) -> Vec<u8> {
    let mut m = vec![0u8; SIZE as usize];
    for i in 1..=layers {
        if i % 97 == 0 || i == layers {
            let c = (i % 256) * 65536;
            m[c..c + 65536].fill((i % 251) as u8 + 1);
        }
    }
    m
}

#[test]
fn ten_thousand_layers_open_and_read_on_a_small_stack() {
    let s = Scratch::new("chain-10k");
    let layers = 10_000;
    let top = build_chain(&s, layers);
    let expect = expected(layers);
    // 256 KiB of stack: per-layer recursion would overflow long before 10,000 layers.
    let handle = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let t = Instant::now();
            let node = open_node(
                &top,
                &OpenOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let opened = t.elapsed();
            assert_eq!(node.chain_len(), layers + 1);
            let mut got = vec![0u8; SIZE as usize];
            for (i, chunk) in got.chunks_mut(1 << 20).enumerate() {
                node.read_at(i as u64 * (1 << 20), chunk).unwrap();
            }
            eprintln!(
                "10,000-layer chain: open {opened:?}, full read {:?}",
                t.elapsed() - opened
            );
            got
        })
        .unwrap();
    let got = handle
        .join()
        .expect("reader thread must not overflow its stack");
    assert_same_content("10k chain", &got, &expect);
}

#[test]
fn chain_reads_match_qemu() {
    require_qemu();
    let s = Scratch::new("chain-qemu");
    let layers = 300;
    let top = build_chain(&s, layers);
    let top_s = top.to_string_lossy().into_owned();
    let q = qemu_read_all(&top_s, &s);
    assert_same_content("300 layers vs qemu", &q, &expected(layers));
    assert_same_content("300 layers vmscope", &vmscope_read_all(Path::new(&top)), &q);
}

#[test]
fn block_stream_primitives_keep_guest_writes() {
    require_qemu();
    let s = Scratch::new("chain-stream");
    for keep_base in [true, false] {
        let base = s.p("base.qcow2");
        let mid = s.p("mid.qcow2");
        let top = s.p("top.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", &base, "8M"]);
        qemu_io(&base, "qcow2", &["write -P 1 0 8M"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            &mid,
        ]);
        qemu_io(&mid, "qcow2", &["write -P 2 1M 2M", "write -z 4M 64k"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            &top,
        ]);
        qemu_io(&top, "qcow2", &["write -P 3 1536k 64k"]);
        let mut model = qemu_read_all(&top, &s);
        let node = open_node(Path::new(&top), &OpenOptions::default()).unwrap();
        let base_depth = if keep_base { 2 } else { node.chain_len() };
        std::thread::scope(|sc| {
            let n = &node;
            // The guest keeps writing while the stream runs.
            let writer = sc.spawn(move || {
                let mut writes = Vec::new();
                for i in 0..64u64 {
                    let off = (i * 131_072 + 7_000) % (8 << 20);
                    n.write_at(off, &[0xee; 3000]).unwrap();
                    writes.push(off);
                }
                writes
            });
            let mut pos = 0;
            while pos < 8 << 20 {
                n.stream_range(base_depth, pos, 1 << 20).unwrap();
                pos += 1 << 20;
            }
            for off in writer.join().unwrap() {
                model[off as usize..off as usize + 3000].fill(0xee);
            }
        });
        if keep_base {
            node.finish_stream(base_depth, Some("base.qcow2"), Some(ImageFormat::Qcow2))
                .unwrap();
            assert_eq!(node.chain_len(), 2);
        } else {
            node.finish_stream(base_depth, None, None).unwrap();
            assert_eq!(node.chain_len(), 1);
        }
        let mut all = vec![0u8; 8 << 20];
        node.read_at(0, &mut all).unwrap();
        assert_same_content("stream view", &all, &model);
        node.close().unwrap();
        assert_qemu_check_clean(&top, false);
        assert_same_content("stream file", &qemu_read_all(&top, &s), &model);
        let info = qemu_img(&["info", &top]);
        assert_eq!(
            info.contains("backing file: base.qcow2"),
            keep_base,
            "{info}"
        );
        for f in [&base, &mid, &top] {
            std::fs::remove_file(f).unwrap();
        }
    }
}
