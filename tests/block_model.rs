//! Randomized sequences of writes, zero-writes, discards, flushes, reopenings and new
//! overlays, checked against an in-memory model of the disk, then against qemu-img.

#[path = "block_support.rs"]
mod support;

use std::path::Path;

use support::*;
use vmscope::block::qcow2::{self, Qcow2CreateOptions};
use vmscope::block::{open_node, BlockNode, OpenOptions, Qcow2CacheOptions};

const SIZE: u64 = 12 << 20;

fn open(path: &Path, small_cache: bool) -> BlockNode {
    open_node(
        path,
        &OpenOptions {
            qcow2_cache: if small_cache {
                Qcow2CacheOptions {
                    l2_cache_size: Some(2048),
                    l2_cache_entry_size: Some(1024),
                    refcount_cache_size: Some(1),
                    ..Default::default()
                }
            } else {
                Qcow2CacheOptions::default()
            },
            ..Default::default()
        },
    )
    .unwrap()
}

fn run_model(seed: u64, cluster_size: u64, version: u32, steps: usize) {
    require_qemu();
    let s = Scratch::new(&format!("model-{seed}"));
    let mut r = Rng(seed);
    let small_cache = cluster_size >= 1024 && r.below(2) == 0;
    let mut names = vec!["layer0.qcow2".to_string()];
    qcow2::create(
        &s.path(&names[0]),
        &Qcow2CreateOptions {
            size: SIZE,
            cluster_size,
            version,
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; SIZE as usize];
    // What the active layer's backing shows (for v2 discards, which reveal it).
    let mut backing_view: Option<Vec<u8>> = None;
    let mut top_version = version;
    let mut top_cluster = cluster_size;
    let mut node = open(&s.path(&names[0]), small_cache);
    for step in 0..steps {
        let off = r.below(SIZE - 1);
        let len = (r.below(3 * top_cluster + 5000) + 1).min(SIZE - off);
        let (o, l) = (off as usize, len as usize);
        if std::env::var("MODEL_DEBUG").is_ok() {
            let mut all = vec![0u8; SIZE as usize];
            node.read_at(0, &mut all).unwrap();
            if let Some(i) = first_diff(&all, &model) {
                panic!("diverged before step {step} at byte {i}");
            }
        }
        let op = r.below(20);
        if std::env::var("MODEL_DEBUG").is_ok() {
            eprintln!("step {step} op {op} off {off} len {len}");
        }
        match op {
            0..=10 => {
                let mut buf = vec![0u8; l];
                for b in buf.iter_mut() {
                    *b = r.next_u64() as u8 | 1;
                }
                node.write_at(off, &buf).unwrap();
                model[o..o + l].copy_from_slice(&buf);
            }
            11 | 12 => {
                node.write_zeroes(off, len, r.below(2) == 0).unwrap();
                model[o..o + l].fill(0);
            }
            13 | 14 => {
                node.discard(off, len).unwrap();
                // Whole clusters inside the range are dropped.
                let cs = top_cluster;
                let mut c = off.div_ceil(cs) * cs;
                while c + cs <= off + len {
                    let (a, b) = (c as usize, (c + cs) as usize);
                    match (&backing_view, top_version) {
                        (Some(bv), 2) => model[a..b].copy_from_slice(&bv[a..b]),
                        _ => model[a..b].fill(0),
                    }
                    c += cs;
                }
            }
            15 => node.flush().unwrap(),
            16 => {
                node.close().unwrap();
                node = open(&s.path(names.last().unwrap()), small_cache);
            }
            17 if names.len() < 6 => {
                // A new overlay on top, the snapshot_blkdev way.
                let name = format!("layer{}.qcow2", names.len());
                node.snapshot_to_new_overlay(&s.path(&name), names.last().unwrap())
                    .unwrap();
                names.push(name);
                backing_view = Some(model.clone());
                top_version = 3;
                top_cluster = 65536;
            }
            _ => {
                let mut b = vec![0u8; l];
                node.read_at(off, &mut b).unwrap();
                let _ = step;
                assert!(
                    b == model[o..o + l],
                    "seed {seed} step {step}: read mismatch at {off}+{len}"
                );
            }
        }
    }
    let mut all = vec![0u8; SIZE as usize];
    node.read_at(0, &mut all).unwrap();
    assert_same_content(&format!("seed {seed} final"), &all, &model);
    node.close().unwrap();
    for n in &names {
        assert_qemu_check_clean(&s.p(n), false);
    }
    let raw = s.p("model.raw");
    std::fs::write(&raw, &model).unwrap();
    let top = s.p(names.last().unwrap());
    let out = run("qemu-img", &["compare", "-F", "raw", &top, &raw]);
    assert!(
        out.status.success(),
        "seed {seed}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn random_sequences_v3_64k() {
    for seed in 1..=4 {
        run_model(seed, 65536, 3, 300);
    }
}

#[test]
fn random_sequences_v3_small_clusters() {
    for (seed, cs) in [(11, 512), (12, 4096), (13, 1024)] {
        run_model(seed, cs, 3, 300);
    }
}

#[test]
fn random_sequences_v2() {
    for seed in 21..=23 {
        run_model(seed, 65536, 2, 300);
    }
}

#[test]
fn concurrent_requests_keep_the_image_consistent() {
    require_qemu();
    let s = Scratch::new("model-concurrent");
    let img = s.path("c.qcow2");
    qcow2::create(
        &img,
        &Qcow2CreateOptions {
            size: SIZE,
            ..Default::default()
        },
    )
    .unwrap();
    let node = open(&img, false);
    let threads = 4u64;
    let region = SIZE / threads;
    // Each thread owns a region: writes, rewrites in place, zeroes and discards in it while
    // the others do the same; one of them flushes now and then.
    let models: Vec<Vec<u8>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let node = &node;
                sc.spawn(move || {
                    let mut r = Rng(100 + t);
                    let base = t * region;
                    let mut m = vec![0u8; region as usize];
                    for i in 0..400 {
                        let off = r.below(region - 70_000);
                        let len = r.below(70_000) + 1;
                        let (o, l) = (off as usize, len as usize);
                        match r.below(8) {
                            0 => {
                                node.write_zeroes(base + off, len, true).unwrap();
                                m[o..o + l].fill(0);
                            }
                            1 => {
                                let c0 = off.div_ceil(65536) * 65536;
                                // Stay inside this thread's region.
                                if c0 + 65536 <= region {
                                    node.discard(base + c0, 65536).unwrap();
                                    m[c0 as usize..c0 as usize + 65536].fill(0);
                                }
                            }
                            _ => {
                                let v = vec![(t as u8) * 50 + (i % 50) as u8 + 1; l];
                                node.write_at(base + off, &v).unwrap();
                                m[o..o + l].copy_from_slice(&v);
                            }
                        }
                        if t == 0 && i % 17 == 0 {
                            node.flush().unwrap();
                        }
                    }
                    m
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let model: Vec<u8> = models.concat();
    let mut all = vec![0u8; SIZE as usize];
    node.read_at(0, &mut all).unwrap();
    assert_same_content("concurrent", &all, &model);
    node.close().unwrap();
    assert_qemu_check_clean(&s.p("c.qcow2"), false);
    let raw = s.p("model.raw");
    std::fs::write(&raw, &model).unwrap();
    let out = run("qemu-img", &["compare", "-F", "raw", &s.p("c.qcow2"), &raw]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn concurrent_writes_into_the_same_new_clusters_are_all_kept() {
    require_qemu();
    let s = Scratch::new("model-same-cluster");
    let img = s.path("c.qcow2");
    qcow2::create(
        &img,
        &Qcow2CreateOptions {
            size: SIZE,
            ..Default::default()
        },
    )
    .unwrap();
    let node = open(&img, false);
    let threads = 8u64;
    let blocks = SIZE / 4096;
    // Thread t writes every block b with b % threads == t: all threads allocate the same
    // clusters at the same time.
    std::thread::scope(|sc| {
        for t in 0..threads {
            let node = &node;
            sc.spawn(move || {
                let mut b = t;
                while b < blocks {
                    node.write_at(b * 4096, &[(b % 251) as u8 + 1; 4096])
                        .unwrap();
                    b += threads;
                }
            });
        }
    });
    let mut all = vec![0u8; SIZE as usize];
    node.read_at(0, &mut all).unwrap();
    for b in 0..blocks as usize {
        assert!(
            all[b * 4096..(b + 1) * 4096]
                .iter()
                .all(|&x| x == (b % 251) as u8 + 1),
            "block {b} lost"
        );
    }
    node.close().unwrap();
    assert_qemu_check_clean(&s.p("c.qcow2"), false);
}
