//! Deterministic crash simulation: the writer "dies" by leaking its node (no flush, no
//! close), at many points; the same checks as the kill -9 test follow.

#[path = "block_support.rs"]
mod support;

use std::path::Path;

use support::*;
use vmscope::block::qcow2::{self, Qcow2CreateOptions};
use vmscope::block::{open_node, OpenOptions};

const BLOCK: u64 = 4096;
const SIZE: u64 = 4 << 20;

fn record(seq: u64, b: u64) -> Vec<u8> {
    let mut v = vec![(seq as u8) | 1; BLOCK as usize];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v[8..16].copy_from_slice(&b.to_le_bytes());
    v
}

fn simulate(opts: Qcow2CreateOptions, seed: u64, rounds: usize) {
    require_qemu();
    let s = Scratch::new(&format!("crashsim-{seed}"));
    let img = s.path("c.qcow2");
    qcow2::create(&img, &Qcow2CreateOptions { size: SIZE, ..opts }).unwrap();
    let img_s = img.to_string_lossy().into_owned();
    let n = (SIZE / BLOCK) as usize;
    // Durable expectations: Some(content) known, None unknown.
    let mut durable: Vec<Option<Vec<u8>>> = vec![Some(vec![0; BLOCK as usize]); n];
    let mut r = Rng(seed);
    let mut seq = 0;
    for round in 0..rounds {
        let node = open_node(&img, &OpenOptions::default()).unwrap();
        let mut pending: Vec<(usize, Vec<u8>)> = Vec::new();
        let ops = 1 + r.below(40);
        let mut log = Vec::new();
        for _ in 0..ops {
            seq += 1;
            match r.below(10) {
                0 => {
                    let u = r.below(SIZE / 65536);
                    node.discard(u * 65536, 65536).unwrap();
                    log.push(format!("D {u}"));
                    for b in (u * 16)..(u * 16 + 16) {
                        pending.push((b as usize, vec![0; BLOCK as usize]));
                    }
                }
                1 => {
                    let b = r.below(SIZE / BLOCK);
                    let unmap = r.below(2) == 0;
                    node.write_zeroes(b * BLOCK, BLOCK, unmap).unwrap();
                    log.push(format!("Z {b}"));
                    pending.push((b as usize, vec![0; BLOCK as usize]));
                }
                _ => {
                    let b = r.below(SIZE / BLOCK);
                    node.write_at(b * BLOCK, &record(seq, b)).unwrap();
                    log.push(format!("W {b} {seq}"));
                    pending.push((b as usize, record(seq, b)));
                }
            }
            if r.below(5) == 0 {
                node.flush().unwrap();
                log.push("F".into());
                for (b, c) in pending.drain(..) {
                    durable[b] = Some(c);
                }
            }
        }
        for (b, _) in &pending {
            durable[*b] = None;
        }
        std::mem::forget(node);
        let (code, out) = qemu_check(&img_s);
        assert!(
            code == 0 || code == 3,
            "seed {seed} round {round}: {out}\nlog: {log:?}"
        );
        let content = qemu_read_all(&img_s, &s);
        for (b, d) in durable.iter_mut().enumerate() {
            let got = &content[b * BLOCK as usize..(b + 1) * BLOCK as usize];
            match d {
                Some(c) => assert!(
                    got == c.as_slice(),
                    "seed {seed} round {round}: block {b} wrong (has {})\nlog: {log:?}",
                    u64::from_le_bytes(got[..8].try_into().unwrap())
                ),
                None => *d = Some(got.to_vec()),
            }
        }
        let _ = Path::new("");
    }
}

#[test]
fn simulated_crashes_default() {
    for seed in 1..=5 {
        simulate(Qcow2CreateOptions::default(), seed, 15);
    }
}
