//! Helpers shared by the block-layer tests (included with `#[path]`; as its own test target
//! it contains no tests).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory removed at the end of the test.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vmscope-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }
    pub fn p(&self, f: &str) -> String {
        self.path(f).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The oracle must be installed: tests that silently pass without it would prove nothing.
pub fn require_qemu() {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    assert!(
        ok,
        "qemu-img (QEMU 7.2, Debian package qemu-utils) is required by the block oracle tests"
    );
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn qemu_img(args: &[&str]) -> String {
    ok("qemu-img", args)
}

/// qemu-io commands on an image (each `-c`).
pub fn qemu_io(img: &str, fmt: &str, cmds: &[&str]) {
    let mut a = vec!["-f", fmt];
    for c in cmds {
        a.push("-c");
        a.push(c);
    }
    a.push(img);
    let out = ok("qemu-io", &a);
    assert!(
        !out.contains("error") && !out.contains("failed"),
        "qemu-io reported: {out}"
    );
}

/// `qemu-img check` exit code and output.
pub fn qemu_check(img: &str) -> (i32, String) {
    let o = run("qemu-img", &["check", img]);
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Asserts `qemu-img check` finds no corruption (leaks allowed only if `allow_leaks`).
pub fn assert_qemu_check_clean(img: &str, allow_leaks: bool) {
    let (code, out) = qemu_check(img);
    let good = code == 0 || (allow_leaks && code == 3);
    assert!(good, "qemu-img check {img}: exit {code}\n{out}");
}

/// The whole guest-visible content of an image according to QEMU.
pub fn qemu_read_all(img: &str, scratch: &Scratch) -> Vec<u8> {
    let out = scratch.p("qemu-read-all.raw");
    qemu_img(&["convert", "-O", "raw", img, &out]);
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    v
}

/// The whole guest-visible content according to vmscope.
pub fn vmscope_read_all(img: &Path) -> Vec<u8> {
    let node = vmscope::block::open_node(
        img,
        &vmscope::block::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("vmscope cannot open {}: {e}", img.display()));
    let size = node.virtual_size().unwrap();
    let mut v = vec![0u8; size as usize];
    // Odd-sized reads to cross cluster and extent boundaries.
    let mut pos = 0usize;
    let mut step = 65536 + 4096 + 512;
    while pos < v.len() {
        let n = step.min(v.len() - pos);
        node.read_at(pos as u64, &mut v[pos..pos + n]).unwrap();
        pos += n;
        step = if step > 300_000 { 777 } else { step * 3 };
    }
    v
}

/// Index of the first differing byte, for readable assertion messages.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

pub fn assert_same_content(what: &str, a: &[u8], b: &[u8]) {
    if let Some(i) = first_diff(a, b) {
        panic!(
            "{what}: contents differ at byte {i} (lengths {} and {})",
            a.len(),
            b.len()
        );
    }
}

/// Path of the vmscope-img binary built for these tests.
pub fn vmscope_img() -> &'static str {
    env!("CARGO_BIN_EXE_vmscope-img")
}

/// A tiny deterministic generator for randomized tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
