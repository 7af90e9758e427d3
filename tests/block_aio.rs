//! The `aio=native` and `aio=io_uring` engines: images written through each engine read
//! back identical and pass `qemu-img check`; the engine asked for is the one doing the I/O
//! (its request counter moves, `threads` leaves it at zero); QEMU's errors for impossible
//! combinations.

#[path = "block_support.rs"]
mod support;

use support::*;
use vmscope::block::{open_node, AioMode, BlockNode, CacheMode, OpenOptions};

/// Writes that exercise aligned, unaligned (bounce buffer, read-modify-write), allocating
/// and cluster-crossing paths; the same ones as qemu-io commands for the reference image.
const WRITES: &[(u64, usize, u8)] = &[
    (0, 65536, 0x11),
    (1 << 20, 4096, 0x22),
    ((1 << 20) + 4096 * 3 + 17, 5000, 0x33),
    (3 << 20, 200 * 1024, 0x44),
    ((8 << 20) - 512, 1024, 0x55),
];

fn engines() -> [(AioMode, CacheMode); 3] {
    [
        (AioMode::Native, CacheMode::None),
        (AioMode::IoUring, CacheMode::None),
        (AioMode::IoUring, CacheMode::Writeback),
    ]
}

fn open(img: &str, aio: AioMode, cache: CacheMode, read_only: bool) -> BlockNode {
    open_node(
        std::path::Path::new(img),
        &OpenOptions {
            aio,
            cache,
            read_only,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {img} with aio={}: {e}", aio.name()))
}

fn engine_requests(node: &BlockNode) -> u64 {
    node.chain()
        .iter()
        .map(|l| l.file().engine_requests())
        .sum()
}

fn write_pattern(node: &BlockNode) {
    for &(off, len, byte) in WRITES {
        node.write_at(off, &vec![byte; len]).unwrap();
    }
    node.flush().unwrap();
}

fn reference_image(s: &Scratch, fmt: &str) -> String {
    let r = s.p(&format!("ref.{fmt}"));
    qemu_img(&["create", "-q", "-f", fmt, &r, "16M"]);
    let cmds: Vec<String> = WRITES
        .iter()
        .map(|&(off, len, b)| format!("write -P {b} {off} {len}"))
        .collect();
    let cmds: Vec<&str> = cmds.iter().map(|c| c.as_str()).collect();
    qemu_io(&r, fmt, &cmds);
    r
}

#[test]
fn images_written_by_each_engine_match_qemus_and_pass_check() {
    require_qemu();
    let s = Scratch::new("aio-write");
    for fmt in ["qcow2", "raw"] {
        let reference = reference_image(&s, fmt);
        for (aio, cache) in engines() {
            let img = s.p(&format!("{}-{}.{fmt}", aio.name(), cache.name()));
            qemu_img(&["create", "-q", "-f", fmt, &img, "16M"]);
            let node = open(&img, aio, cache, false);
            assert_eq!(node.chain()[0].file().aio_mode(), aio);
            write_pattern(&node);
            let used = engine_requests(&node);
            // 5 data writes, their L2/refcount updates and the flushes at least.
            assert!(
                used >= WRITES.len() as u64,
                "aio={} {fmt}: only {used} requests went through the engine",
                aio.name()
            );
            node.close().unwrap();
            if fmt == "qcow2" {
                assert_qemu_check_clean(&img, false);
            }
            qemu_img(&["compare", "-f", fmt, "-F", fmt, &img, &reference]);
        }
    }
}

#[test]
fn each_engine_reads_qemu_written_images_identically() {
    require_qemu();
    let s = Scratch::new("aio-read");
    let reference = reference_image(&s, "qcow2");
    // A backing chain, so every layer's file goes through the engine.
    let top = s.p("top.qcow2");
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "-b", &reference, "-F", "qcow2", &top,
    ]);
    qemu_io(&top, "qcow2", &["write -P 0x66 2M 8k", "write -z 0 4k"]);
    let expected = qemu_read_all(&top, &s);
    for (aio, cache) in engines() {
        let node = open(&top, aio, cache, true);
        let before = engine_requests(&node);
        let mut got = vec![0u8; expected.len()];
        // Odd-sized reads at odd offsets exercise the O_DIRECT bounce path.
        let mut off = 0usize;
        while off < got.len() {
            let n = (got.len() - off).min(123_457);
            node.read_at(off as u64, &mut got[off..off + n]).unwrap();
            off += n;
        }
        assert_same_content(
            &format!("aio={} cache={}", aio.name(), cache.name()),
            &got,
            &expected,
        );
        let after = engine_requests(&node);
        assert!(
            after > before + 10,
            "aio={}: reads did not go through the engine ({before} -> {after})",
            aio.name()
        );
        for layer in node.chain().iter() {
            assert!(
                layer.file().engine_requests() > 0,
                "a layer bypassed the engine"
            );
        }
    }
}

#[test]
fn threads_engine_does_not_count_as_native_or_io_uring() {
    require_qemu();
    let s = Scratch::new("aio-threads");
    let img = s.p("t.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &img, "16M"]);
    let node = open(&img, AioMode::Threads, CacheMode::None, false);
    write_pattern(&node);
    assert_eq!(engine_requests(&node), 0);
}

#[test]
fn requests_from_many_threads_use_the_engine_concurrently() {
    require_qemu();
    let s = Scratch::new("aio-mt");
    for aio in [AioMode::Native, AioMode::IoUring] {
        let img = s.p(&format!("mt-{}.qcow2", aio.name()));
        qemu_img(&["create", "-q", "-f", "qcow2", &img, "32M"]);
        let node = open(&img, aio, CacheMode::None, false);
        std::thread::scope(|sc| {
            for t in 0..8u64 {
                let node = &node;
                sc.spawn(move || {
                    for i in 0..32u64 {
                        let off = (i * 8 + t) * 65536 + t * 4096;
                        node.write_at(off, &[t as u8 + 1; 4096]).unwrap();
                    }
                });
            }
        });
        node.close().unwrap();
        assert_qemu_check_clean(&img, false);
        for t in 0..8u64 {
            let off = (5 * 8 + t) * 65536 + t * 4096;
            qemu_io(&img, "qcow2", &[&format!("read -P {} {off} 4096", t + 1)]);
        }
    }
}

#[test]
fn native_without_direct_io_is_refused_like_qemu() {
    require_qemu();
    let s = Scratch::new("aio-native-err");
    let img = s.p("n.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &img, "16M"]);
    let q = run("qemu-img", &["bench", "-c", "1", "-i", "native", &img]);
    let v = run(vmscope_img(), &["bench", "-c", "1", "-i", "native", &img]);
    assert_eq!(q.status.code(), Some(1));
    assert_eq!(v.status.code(), q.status.code());
    let qerr = String::from_utf8_lossy(&q.stderr).replace("qemu-img:", "");
    let verr = String::from_utf8_lossy(&v.stderr).replace("vmscope-img:", "");
    assert_eq!(verr, qerr);
    assert!(qerr.contains("requires cache.direct=on"));
    let e = open_node(
        std::path::Path::new(&img),
        &OpenOptions {
            aio: AioMode::Native,
            ..Default::default()
        },
    )
    .err()
    .expect("aio=native with the page cache must be refused");
    assert!(e.to_string().contains("requires cache.direct=on"), "{e}");
}

#[test]
fn bench_runs_every_engine_like_qemu_img() {
    require_qemu();
    let s = Scratch::new("aio-bench");
    let img = s.p("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &img, "16M"]);
    for engine in ["native", "io_uring", "threads"] {
        let args = [
            "bench",
            "-w",
            "-c",
            "300",
            "-d",
            "8",
            "-t",
            "none",
            "-i",
            engine,
            "--pattern=9",
            &img,
        ];
        let q = run("qemu-img", &args);
        let v = run(vmscope_img(), &args);
        assert!(
            q.status.success() && v.status.success(),
            "bench -i {engine}: {v:?}"
        );
        let first = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(first(&v), first(&q));
    }
    assert_qemu_check_clean(&img, false);
    qemu_io(&img, "qcow2", &["read -P 9 0 1228800"]);
    let bad = run(vmscope_img(), &["bench", "-c", "1", "-i", "bogus", &img]);
    let qbad = run("qemu-img", &["bench", "-c", "1", "-i", "bogus", &img]);
    assert_eq!(bad.status.code(), qbad.status.code());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).replace("vmscope-img:", ""),
        String::from_utf8_lossy(&qbad.stderr).replace("qemu-img:", "")
    );
}

/// When `io_uring_setup` fails (here: no file descriptor left for the ring), the error names
/// io_uring and the errno as QEMU's does, whether it happens at open or on a worker thread.
#[test]
fn io_uring_setup_failure_names_io_uring_and_the_errno() {
    require_qemu();
    let s = Scratch::new("aio-uring-fail");
    let img = s.p("f.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &img, "16M"]);
    let mut named = false;
    for n in 3..12 {
        let o = run(
            "sh",
            &[
                "-c",
                &format!(
                    "ulimit -n {n}; exec '{}' bench -w -c 4 -d 2 -i io_uring '{img}'",
                    vmscope_img()
                ),
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.code() == Some(127) && err.contains("shared libraries") {
            // Too few descriptors for the dynamic loader itself.
            continue;
        }
        assert!(
            matches!(o.status.code(), Some(0) | Some(1)),
            "nofile={n}: {o:?}"
        );
        if err.contains(
            "Unable to use io_uring: failed to init linux io_uring ring: Too many open files",
        ) {
            assert_eq!(o.status.code(), Some(1));
            named = true;
        }
        if o.status.success() {
            break;
        }
    }
    assert!(named, "no run reported the io_uring setup failure");
}
