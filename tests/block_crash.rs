//! Crash consistency: a writer process is killed with SIGKILL at random moments, many times.
//! Afterwards `qemu-img check` must report no corruption (leaks are fine) and every block the
//! writer had flushed, and not touched since, must read back exactly.

#[path = "block_support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use vmscope::block::qcow2::{self, Qcow2CreateOptions};
use vmscope::block::{open_node, OpenOptions};

const BLOCK: u64 = 4096;
const SIZE: u64 = 16 << 20;
const DISCARD_UNIT: u64 = 65536;

/// The content of block `b` after write number `seq`.
fn record(seq: u64, b: u64) -> Vec<u8> {
    let mut v = vec![(seq as u8) | 1; BLOCK as usize];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v[8..16].copy_from_slice(&b.to_le_bytes());
    v
}

/// The child: runs only when the parent sets the environment variables.
#[test]
#[ignore = "run by crash_consistency_under_kill_9 as a child process"]
fn crash_writer_child() {
    let Ok(img) = std::env::var("VMSCOPE_CRASH_IMG") else {
        return;
    };
    let seed: u64 = std::env::var("VMSCOPE_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let first_seq: u64 = std::env::var("VMSCOPE_CRASH_SEQ").unwrap().parse().unwrap();
    let node = open_node(Path::new(&img), &OpenOptions::default()).unwrap();
    let mut r = Rng(seed);
    let out = std::io::stdout();
    let mut seq = first_seq;
    // libtest has printed "test crash_writer_child ... " without a newline: end that line
    // so the first operation is not glued to it.
    println!();
    loop {
        seq += 1;
        let op = r.below(10);
        let mut o = out.lock();
        match op {
            0 => {
                let u = r.below(SIZE / DISCARD_UNIT);
                writeln!(o, "D {u} {seq}").unwrap();
                o.flush().unwrap();
                node.discard(u * DISCARD_UNIT, DISCARD_UNIT).unwrap();
            }
            1 => {
                let b = r.below(SIZE / BLOCK);
                writeln!(o, "Z {b} {seq}").unwrap();
                o.flush().unwrap();
                node.write_zeroes(b * BLOCK, BLOCK, r.below(2) == 0)
                    .unwrap();
            }
            _ => {
                let b = r.below(SIZE / BLOCK);
                writeln!(o, "W {b} {seq}").unwrap();
                o.flush().unwrap();
                node.write_at(b * BLOCK, &record(seq, b)).unwrap();
            }
        }
        if r.below(6) == 0 {
            node.flush().unwrap();
            writeln!(o, "F {seq}").unwrap();
            o.flush().unwrap();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Known content: block content after write `seq` (0 = zeros).
    Record(u64),
    Zero,
    /// Touched after the last flush: anything goes.
    Unknown,
}

fn crash_loop(name: &str, opts: Qcow2CreateOptions, rounds: usize) {
    require_qemu();
    let s = Scratch::new(name);
    let img = s.path("crash.qcow2");
    qcow2::create(&img, &Qcow2CreateOptions { size: SIZE, ..opts }).unwrap();
    let img_s = img.to_string_lossy().into_owned();
    let nblocks = (SIZE / BLOCK) as usize;
    let mut expect = vec![Expect::Zero; nblocks];
    let mut seq = 0u64;
    let mut r = Rng(1234);
    let mut history: Vec<String> = Vec::new();
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VMSCOPE_CRASH_IMG", &img_s)
            .env("VMSCOPE_CRASH_SEED", (round as u64 * 7919 + 17).to_string())
            .env("VMSCOPE_CRASH_SEQ", seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + r.below(120)));
        child.kill().unwrap();
        let stdout = child.stdout.take().unwrap();
        child.wait().unwrap();
        // Replay the log: ops since the last flush are uncertain.
        let mut pending: Vec<(char, u64, u64)> = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["F", n] => {
                    history.push(format!("round {round}: {line}"));
                    for (op, x, sq) in pending.drain(..) {
                        apply(&mut expect, op, x, sq);
                    }
                    seq = seq.max(n.parse().unwrap());
                }
                [op @ ("W" | "Z" | "D"), x, n] => {
                    history.push(format!("round {round}: {line}"));
                    let sq: u64 = n.parse().unwrap();
                    pending.push((op.chars().next().unwrap(), x.parse().unwrap(), sq));
                    seq = seq.max(sq);
                }
                _ => {}
            }
        }
        if std::env::var("CRASH_DEBUG").is_ok() {
            let ops = history
                .iter()
                .filter(|h| h.starts_with(&format!("round {round}: ")) && !h.contains(": F"))
                .count();
            eprintln!("round {round}: {ops} ops, seq now {seq}");
        }
        for (op, x, _) in pending {
            let blocks: Vec<usize> = match op {
                'D' => {
                    let per = (DISCARD_UNIT / BLOCK) as usize;
                    (x as usize * per..(x as usize + 1) * per).collect()
                }
                _ => vec![x as usize],
            };
            for b in blocks {
                expect[b] = Expect::Unknown;
            }
        }
        let (code, out) = qemu_check(&img_s);
        assert!(
            code == 0 || code == 3,
            "round {round}: qemu-img check found corruption (exit {code}):\n{out}"
        );
        let content = qemu_read_all(&img_s, &s);
        for (b, e) in expect.iter_mut().enumerate() {
            let got = &content[b * BLOCK as usize..(b + 1) * BLOCK as usize];
            match *e {
                Expect::Record(sq) => assert!(
                    got == record(sq, b as u64).as_slice(),
                    "round {round}: flushed block {b} (write {sq}) lost, has {}; history:\n{}",
                    u64::from_le_bytes(got[..8].try_into().unwrap()),
                    history
                        .iter()
                        .filter(|h| {
                            h.contains(&format!(" {b} "))
                                || h.contains(&format!("D {} ", b as u64 * BLOCK / DISCARD_UNIT))
                                || h.ends_with(&format!(" {}", u64::from_le_bytes(got[..8].try_into().unwrap())))
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                Expect::Zero => assert!(
                    got.iter().all(|&x| x == 0),
                    "round {round}: block {b} should read zeros, has write {} of block {}; history:\n{}",
                    u64::from_le_bytes(got[..8].try_into().unwrap()),
                    u64::from_le_bytes(got[8..16].try_into().unwrap()),
                    history
                        .iter()
                        .filter(|h| {
                            h.contains(&format!(" {b} "))
                                || h.contains(&format!("D {} ", b as u64 * BLOCK / DISCARD_UNIT))
                                || h.contains(": F")
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                Expect::Unknown => {
                    // Whatever landed is the new baseline.
                    *e = if got.iter().all(|&x| x == 0) {
                        Expect::Zero
                    } else {
                        Expect::Record(u64::from_le_bytes(got[..8].try_into().unwrap()))
                    };
                }
            }
        }
    }
    // The image stays usable by vmscope after all those crashes.
    let node = open_node(&img, &OpenOptions::default()).unwrap();
    node.write_at(0, &[1u8; 512]).unwrap();
    node.close().unwrap();
    assert_qemu_check_clean(&img_s, true);
}

fn apply(expect: &mut [Expect], op: char, x: u64, seq: u64) {
    match op {
        'W' => expect[x as usize] = Expect::Record(seq),
        'Z' => expect[x as usize] = Expect::Zero,
        'D' => {
            let per = (DISCARD_UNIT / BLOCK) as usize;
            for e in &mut expect[x as usize * per..(x as usize + 1) * per] {
                *e = Expect::Zero;
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn crash_consistency_under_kill_9() {
    crash_loop("crash-default", Qcow2CreateOptions::default(), 25);
}

#[test]
fn crash_consistency_lazy_refcounts_small_clusters() {
    crash_loop(
        "crash-lazy",
        Qcow2CreateOptions {
            lazy_refcounts: true,
            cluster_size: 4096,
            ..Default::default()
        },
        15,
    );
}
