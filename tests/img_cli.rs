//! `vmscope-img` against `qemu-img` 7.2: the same command on the same images gives the same
//! output and exit code; the writing commands give images QEMU finds identical and clean.

#[path = "block_support.rs"]
mod support;

use std::process::Command;

use support::*;

/// Runs `qemu-img ARGS` and `vmscope-img ARGS` in `dir`; returns (qemu, vmscope) as
/// (exit code, stdout, stderr) with vmscope's program name replaced by qemu-img's.
fn both(dir: &Scratch, args: &[&str]) -> ((i32, String, String), (i32, String, String)) {
    let run_in = |bin: &str| {
        let o = Command::new(bin)
            .args(args)
            .current_dir(&dir.dir)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).replace("vmscope-img:", "qemu-img:"),
        )
    };
    (run_in("qemu-img"), run_in(vmscope_img()))
}

/// Same exit code and same stdout.
fn same_stdout(dir: &Scratch, args: &[&str]) {
    let (q, v) = both(dir, args);
    assert_eq!(
        q.0, v.0,
        "exit code of {args:?}; qemu stderr: {} ours: {}",
        q.2, v.2
    );
    assert_eq!(q.1, v.1, "stdout of {args:?}");
}

/// Same exit code, stdout and stderr.
fn same_all(dir: &Scratch, args: &[&str]) {
    let (q, v) = both(dir, args);
    assert_eq!(q, v, "{args:?}");
}

fn setup(s: &Scratch) {
    let sh = |args: &[&str]| {
        let o = Command::new("qemu-img")
            .args(args)
            .current_dir(&s.dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let io = |img: &str, cmds: &[&str]| qemu_io(&s.p(img), "qcow2", cmds);
    sh(&["create", "-q", "-f", "qcow2", "a.qcow2", "64M"]);
    io(
        "a.qcow2",
        &[
            "write -P 1 0 1M",
            "write -c -P 2 2M 64k",
            "write -z 4M 64k",
            "discard 512k 64k",
        ],
    );
    sh(&["snapshot", "-c", "s1", "a.qcow2"]);
    sh(&[
        "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2",
    ]);
    io("b.qcow2", &["write -P 3 512k 1M"]);
    sh(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=4096",
        "v2.qcow2",
        "3M",
    ]);
    io("v2.qcow2", &["write -P 4 100k 300k"]);
    sh(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on,refcount_bits=1,compression_type=zstd",
        "z.qcow2",
        "1G",
    ]);
    sh(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        "pm.qcow2",
        "2M",
    ]);
    io("pm.qcow2", &["write -z 0 256k", "write -P 5 1M 4k"]);
    sh(&["create", "-q", "-f", "raw", "r.raw", "5M"]);
    std::fs::write(s.path("r.raw"), vec![7u8; 8192]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.path("r.raw"))
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    sh(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "r.raw",
        "-F",
        "raw",
        "onraw.qcow2",
    ]);
}

#[test]
fn info_and_map_match_qemu() {
    require_qemu();
    let s = Scratch::new("cli-info");
    setup(&s);
    for img in [
        "a.qcow2",
        "b.qcow2",
        "v2.qcow2",
        "z.qcow2",
        "r.raw",
        "onraw.qcow2",
    ] {
        same_all(&s, &["info", img]);
        same_all(&s, &["info", "--output=json", img]);
        same_all(&s, &["info", "--backing-chain", img]);
        same_all(&s, &["info", "--backing-chain", "--output=json", img]);
        same_all(&s, &["map", "--output=json", img]);
        same_stdout(&s, &["map", img]);
    }
    same_all(
        &s,
        &[
            "map",
            "--output=json",
            "--start-offset=1M",
            "--max-length=3M",
            "a.qcow2",
        ],
    );
    // Absolute paths show the "actual path" of the backing file.
    let abs = s.p("b.qcow2");
    same_all(&s, &["info", &abs]);
    same_all(&s, &["info", "nonexistent.qcow2"]);
    same_all(&s, &["snapshot", "-l", "a.qcow2"]);
}

#[test]
fn check_matches_qemu_including_exit_codes() {
    require_qemu();
    let s = Scratch::new("cli-check");
    setup(&s);
    for img in ["a.qcow2", "b.qcow2", "v2.qcow2", "z.qcow2"] {
        same_all(&s, &["check", img]);
        same_all(&s, &["check", "--output=json", img]);
    }
    same_all(&s, &["check", "r.raw"]);
    // A leak (exit 3) and a corruption (exit 2), found and repaired the same way.
    let d = std::fs::read(s.path("b.qcow2")).unwrap();
    let rb = u64::from_be_bytes(d[0x10000..0x10008].try_into().unwrap()) as usize;
    let mut leak = d.clone();
    leak[rb + 2 * 3..rb + 2 * 3 + 2].copy_from_slice(&2u16.to_be_bytes());
    std::fs::write(s.path("leak.qcow2"), &leak).unwrap();
    let (q, v) = both(&s, &["check", "leak.qcow2"]);
    assert_ne!(q.0, 0, "{q:?}");
    assert_eq!(q, v);
    let mut leak_only = d.clone();
    let len = d.len();
    // Mark the cluster after the last one used as allocated: a pure leak.
    let last = len / 65536;
    leak_only.resize((last + 1) * 65536, 0);
    leak_only[rb + 2 * last..rb + 2 * last + 2].copy_from_slice(&1u16.to_be_bytes());
    std::fs::write(s.path("leak2.qcow2"), &leak_only).unwrap();
    let (q, v) = both(&s, &["check", "--output=json", "leak2.qcow2"]);
    assert_eq!(q.0, 3, "{q:?}");
    assert_eq!(q, v);
    std::fs::copy(s.path("leak2.qcow2"), s.path("leak3.qcow2")).unwrap();
    let q = run("qemu-img", &["check", "-r", "leaks", &s.p("leak2.qcow2")]);
    let v = run(
        vmscope_img(),
        &["check", "-r", "leaks", &s.p("leak3.qcow2")],
    );
    assert_eq!(q.status.code(), v.status.code());
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).replace("leak2", "leak3"),
        String::from_utf8_lossy(&v.stdout)
    );
    assert_qemu_check_clean(&s.p("leak3.qcow2"), false);
}

#[test]
fn create_matches_qemu() {
    require_qemu();
    let s = Scratch::new("cli-create");
    setup(&s);
    for args in [
        vec!["create", "-f", "qcow2", "n.qcow2", "1G"],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k,lazy_refcounts=on,preallocation=metadata",
            "n.qcow2",
            "10M",
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "n.qcow2",
            "1.5G",
        ],
        vec![
            "create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "n.qcow2",
        ],
        vec![
            "create", "n.qcow2", "-b", "a.qcow2", "-f", "qcow2", "-F", "qcow2",
        ],
        vec![
            "create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "-u", "n.qcow2", "2G",
        ],
        vec!["create", "-f", "raw", "n.raw", "10M"],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=1000",
            "n.qcow2",
            "1M",
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10,lazy_refcounts=on",
            "n.qcow2",
            "1M",
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "refcount_bits=3",
            "n.qcow2",
            "1M",
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "compression_type=foo",
            "n.qcow2",
            "1M",
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-b",
            "nonexistent.qcow2",
            "-F",
            "qcow2",
            "n.qcow2",
        ],
    ] {
        let (q, v) = both(&s, &args);
        assert_eq!(q.0, v.0, "{args:?}: {} / {}", q.2, v.2);
        assert_eq!(q.1, v.1, "{args:?}");
        assert_eq!(q.2.trim_end(), v.2.trim_end(), "{args:?}");
    }
    // The backing-format requirement of QEMU 7.2.
    let (q, v) = both(&s, &["create", "-f", "qcow2", "-b", "a.qcow2", "n.qcow2"]);
    assert_eq!((q.0, q.2.trim_end()), (v.0, v.2.trim_end()));
}

#[test]
fn compare_matches_qemu() {
    require_qemu();
    let s = Scratch::new("cli-compare");
    setup(&s);
    same_all(&s, &["compare", "a.qcow2", "a.qcow2"]);
    same_all(&s, &["compare", "a.qcow2", "b.qcow2"]);
    same_all(&s, &["compare", "v2.qcow2", "a.qcow2"]);
    same_all(&s, &["compare", "-s", "v2.qcow2", "a.qcow2"]);
    qemu_img(&["convert", "-O", "raw", &s.p("b.qcow2"), &s.p("b.raw")]);
    same_all(&s, &["compare", "-F", "raw", "b.qcow2", "b.raw"]);
    same_all(&s, &["compare", "b.qcow2", "missing.qcow2"]);
}

#[test]
fn convert_produces_identical_clean_images() {
    require_qemu();
    let s = Scratch::new("cli-convert");
    setup(&s);
    for (src, extra) in [
        ("b.qcow2", vec!["-O", "qcow2"]),
        ("b.qcow2", vec!["-O", "raw"]),
        ("a.qcow2", vec!["-c", "-O", "qcow2"]),
        (
            "a.qcow2",
            vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
        ),
        (
            "v2.qcow2",
            vec!["-O", "qcow2", "-o", "cluster_size=512,refcount_bits=2"],
        ),
        ("r.raw", vec!["-f", "raw", "-O", "qcow2", "-t", "none"]),
        ("onraw.qcow2", vec!["-p", "-O", "qcow2"]),
    ] {
        let out = s.p("out.img");
        let mut args = vec!["convert"];
        args.extend(extra.iter().copied());
        let src_p = s.p(src);
        args.push(&src_p);
        args.push(&out);
        let o = run(vmscope_img(), &args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let cmp = run("qemu-img", &["compare", &src_p, &out]);
        assert!(
            cmp.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&cmp.stdout)
        );
        if extra.contains(&"qcow2") {
            assert_qemu_check_clean(&out, false);
        }
        std::fs::remove_file(&out).unwrap();
    }
    // An uncompressed qcow2 conversion lays the image out exactly as QEMU does.
    qemu_img(&["convert", "-O", "qcow2", &s.p("b.qcow2"), &s.p("q.qcow2")]);
    ok(
        vmscope_img(),
        &["convert", "-O", "qcow2", &s.p("b.qcow2"), &s.p("v.qcow2")],
    );
    same_all(&s, &["map", "--output=json", "q.qcow2"]);
    let (_, vm) = both(&s, &["map", "--output=json", "v.qcow2"]);
    let (qm, _) = both(&s, &["map", "--output=json", "q.qcow2"]);
    assert_eq!(qm.1, vm.1);
    // Progress output has QEMU's format.
    let o = run(
        vmscope_img(),
        &["convert", "-p", "-O", "raw", &s.p("a.qcow2"), &s.p("p.raw")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("    (0.00/100%)\r"), "{out:?}");
    assert!(out.ends_with("    (100.00/100%)\r\n"), "{out:?}");
}

/// Builds base <- mid <- top in `s`, returns the reference content of top.
fn chain(s: &Scratch) -> Vec<u8> {
    for cmd in [
        vec!["create", "-q", "-f", "qcow2", "base.qcow2", "8M"],
        vec![
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "mid.qcow2",
        ],
        vec![
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
        vec!["create", "-q", "-f", "qcow2", "nb.qcow2", "8M"],
    ] {
        let o = Command::new("qemu-img")
            .args(&cmd)
            .current_dir(&s.dir)
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    qemu_io(&s.p("base.qcow2"), "qcow2", &["write -P 1 0 8M"]);
    qemu_io(&s.p("mid.qcow2"), "qcow2", &["write -P 2 1M 1M"]);
    qemu_io(
        &s.p("top.qcow2"),
        "qcow2",
        &["write -P 3 1536k 1M", "write -z 5M 64k"],
    );
    qemu_io(&s.p("nb.qcow2"), "qcow2", &["write -P 9 0 2M"]);
    qemu_read_all(&s.p("top.qcow2"), s)
}

#[test]
fn rebase_commit_resize_keep_content() {
    require_qemu();
    let s = Scratch::new("cli-chain-ops");
    let reference = chain(&s);
    let v = |args: &[&str]| {
        let o = Command::new(vmscope_img())
            .args(args)
            .current_dir(&s.dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Safe rebase onto an unrelated image keeps the guest view.
    v(&["rebase", "-b", "nb.qcow2", "-F", "qcow2", "top.qcow2"]);
    assert_same_content(
        "after rebase",
        &qemu_read_all(&s.p("top.qcow2"), &s),
        &reference,
    );
    assert_qemu_check_clean(&s.p("top.qcow2"), false);
    let info = qemu_img(&["info", &s.p("top.qcow2")]);
    assert!(info.contains("backing file: nb.qcow2"), "{info}");
    // Commit into nb.qcow2: the base then holds the view, the top is emptied.
    assert_eq!(v(&["commit", "top.qcow2"]), "Image committed.\n");
    assert_same_content(
        "committed base",
        &qemu_read_all(&s.p("nb.qcow2"), &s),
        &reference,
    );
    assert_same_content(
        "emptied top",
        &qemu_read_all(&s.p("top.qcow2"), &s),
        &reference,
    );
    let map = qemu_img(&["map", "--output=json", &s.p("top.qcow2")]);
    assert!(
        !map.contains("\"depth\": 0"),
        "top must be empty after commit: {map}"
    );
    assert_qemu_check_clean(&s.p("nb.qcow2"), false);
    assert_qemu_check_clean(&s.p("top.qcow2"), false);
    // Unsafe rebase only rewrites the header.
    v(&[
        "rebase",
        "-u",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    let info = qemu_img(&["info", "--output=json", &s.p("top.qcow2")]);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    // Removing the backing file in safe mode copies what it showed.
    let before = qemu_read_all(&s.p("top.qcow2"), &s);
    v(&["rebase", "-b", "", "top.qcow2"]);
    assert!(!qemu_img(&["info", &s.p("top.qcow2")]).contains("backing file"));
    assert_same_content("standalone", &qemu_read_all(&s.p("top.qcow2"), &s), &before);
    // Resize grows the disk with zeros.
    assert_eq!(v(&["resize", "top.qcow2", "+1M"]), "Image resized.\n");
    let after = qemu_read_all(&s.p("top.qcow2"), &s);
    assert_eq!(after.len(), before.len() + (1 << 20));
    assert!(after[before.len()..].iter().all(|&b| b == 0));
    assert_qemu_check_clean(&s.p("top.qcow2"), false);
    let (q, o) = both(&s, &["resize", "top.qcow2", "1M"]);
    assert_eq!((q.0, q.2.trim_end()), (o.0, o.2.trim_end()));
}

#[test]
fn bench_prints_qemu_lines() {
    require_qemu();
    let s = Scratch::new("cli-bench");
    setup(&s);
    for args in [
        vec!["bench", "-c", "1000", "a.qcow2"],
        vec![
            "bench", "-w", "-c", "500", "-d", "4", "-o", "4096", "-S", "8192", "-t", "none",
            "b.qcow2",
        ],
        vec![
            "bench",
            "-c",
            "300",
            "-s",
            "65536",
            "-d",
            "1",
            "--pattern=7",
            "a.qcow2",
        ],
    ] {
        let (q, v) = both(&s, &args);
        assert_eq!(q.0, v.0);
        let first = |x: &str| x.lines().next().unwrap_or("").to_string();
        assert_eq!(first(&q.1), first(&v.1), "{args:?}");
        assert!(
            v.1.lines().nth(1).unwrap().starts_with("Run completed in "),
            "{}",
            v.1
        );
    }
    assert_qemu_check_clean(&s.p("b.qcow2"), false);
    let o = run(
        vmscope_img(),
        &["bench", "-c", "100", "--random", &s.p("a.qcow2")],
    );
    assert!(o.status.success());
    // Every engine qemu-img bench takes (-i) runs; more in tests/block_aio.rs.
    for engine in ["io_uring", "native", "threads"] {
        let o = run(
            vmscope_img(),
            &[
                "bench",
                "-c",
                "10",
                "-t",
                "none",
                "-i",
                engine,
                &s.p("a.qcow2"),
            ],
        );
        assert!(o.status.success(), "-i {engine}: {o:?}");
    }
}
