//! Block commands, differentially: the vmscope binary and QEMU 7.2 (`-accel tcg -S
//! -nodefaults`, the same `-drive if=none,...` over identical copies of the same images,
//! each in its own directory) get the same QMP and HMP conversations; the transcripts are
//! compared with the directory, node names (`#blockNNN`), image allocation sizes, versions
//! and timestamps masked. After the conversation the images both left on disk are
//! compared with `qemu-img`.
//!
//! Each test skips with a message when QEMU 7.2 or qemu-img/qemu-io are not installed.

mod chardev_common;
mod common;
mod monitor_qmp_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chardev_common::*;
use monitor_qmp_common::*;

fn skip_without_qemu() -> bool {
    let img = Command::new("qemu-img").arg("--version").output().is_ok();
    let io = Command::new("qemu-io").arg("--version").output().is_ok();
    if qemu_available() && img && io {
        return false;
    }
    eprintln!("SKIPPED: qemu-system-x86_64 7.2, qemu-img and qemu-io are needed");
    true
}

fn run(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 4 MiB qcow2 chain in `dir`: `base.qcow2` (data at 0 and 2M) <- `mid.qcow2` (data at
/// 1M, relative backing name) when `chain`.
fn make_images(dir: &Path, chain: bool) {
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "base.qcow2", "4M"],
        dir,
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x11 0 1M",
            "-c",
            "write -P 0x22 2M 64k",
            "base.qcow2",
        ],
        dir,
    );
    if chain {
        run(
            "qemu-img",
            &[
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
            dir,
        );
        run(
            "qemu-io",
            &[
                "-c",
                "write -P 0x33 1M 128k",
                "-c",
                "write -P 0x44 0 64k",
                "mid.qcow2",
            ],
            dir,
        );
    }
    run(
        "qemu-img",
        &["create", "-q", "-f", "raw", "raw.img", "1M"],
        dir,
    );
}

/// One emulator (QEMU or vmscope) running in its own directory with a QMP and an HMP
/// unix socket there.
struct Emulator {
    child: Child,
    dir: PathBuf,
}

impl Emulator {
    fn start(program: &str, qemu: bool, dir: &Path, drives: &[&str]) -> Emulator {
        let mut cmd = Command::new(program);
        if qemu {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.args(["-S", "-display", "none", "-nodefaults", "-m", "64"]);
        for d in drives {
            cmd.args(["-drive", d]);
        }
        cmd.args([
            "-qmp",
            &format!("unix:{},server,nowait", dir.join("qmp.sock").display()),
            "-monitor",
            &format!("unix:{},server,nowait", dir.join("hmp.sock").display()),
        ]);
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("emulator starts");
        Emulator {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    fn hmp(&self) -> PathBuf {
        self.dir.join("hmp.sock")
    }

    /// Ends the process the way a client does (`quit`), so images are closed cleanly.
    fn quit(mut self) {
        let s = connect_unix(&self.qmp()).short_timeout();
        let _ = converse_qmp_stream(
            s,
            &[b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"quit\"}\n"],
            false,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces each `#block` followed by digits by `#blockN`.
fn mask_node_names(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find("#block") {
        out.push_str(&rest[..pos + 6]);
        rest = &rest[pos + 6..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push('N');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks what legitimately differs: the directory, node names, host allocation sizes
/// (`actual-size`, `disk size`), versions and timestamps.
fn mask(text: &[u8], dir: &Path) -> String {
    let text = mask_qmp(text);
    let text = text.replace(&dir.display().to_string(), "DIR");
    let text = mask_node_names(&text);
    let text = mask_after(&text, "\"actual-size\": ");
    let text = mask_line_after(&text, "disk size: ");
    String::from_utf8_lossy(&mask_version(text.as_bytes())).into_owned()
}

fn mask_after(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(key) {
        out.push_str(&rest[..pos + key.len()]);
        rest = &rest[pos + key.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push('N');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn mask_line_after(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(key) {
        out.push_str(&rest[..pos + key.len()]);
        rest = &rest[pos + key.len()..];
        let end = rest.find(['\r', '\n', '"']).unwrap_or(rest.len());
        out.push('N');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A differential run: the same images for both, then the same conversation.
struct Pair {
    _root: TempDir,
    qemu_dir: PathBuf,
    ours_dir: PathBuf,
    qemu: Option<Emulator>,
    ours: Option<Emulator>,
}

impl Pair {
    fn start(tag: &str, chain: bool, drives: &[&str]) -> Pair {
        let root = TempDir::new(tag);
        let qemu_dir = root.join("q");
        let ours_dir = root.join("v");
        for d in [&qemu_dir, &ours_dir] {
            std::fs::create_dir_all(d).unwrap();
            make_images(d, chain);
        }
        let qemu = Emulator::start("qemu-system-x86_64", true, &qemu_dir, drives);
        let ours = Emulator::start(env!("CARGO_BIN_EXE_vmscope"), false, &ours_dir, drives);
        Pair {
            _root: root,
            qemu_dir,
            ours_dir,
            qemu: Some(qemu),
            ours: Some(ours),
        }
    }

    /// `chunks` (with `DIR` standing for each emulator's directory) over QMP to both.
    fn qmp(&self, chunks: &[String]) -> (String, String) {
        self.converse(chunks, true)
    }

    /// The same over HMP.
    fn hmp(&self, chunks: &[String]) -> (String, String) {
        self.converse(chunks, false)
    }

    fn converse(&self, chunks: &[String], qmp: bool) -> (String, String) {
        let talk = |e: &Emulator, dir: &Path| {
            let bytes: Vec<Vec<u8>> = chunks
                .iter()
                .map(|c| c.replace("DIR", &dir.display().to_string()).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            let out = if qmp {
                converse_qmp(&e.qmp(), &refs, false)
            } else {
                let mut s = connect_unix(&e.hmp()).short_timeout();
                converse_lines(&mut s, &refs, QUIET)
            };
            mask(&out, dir)
        };
        let (q, v) = std::thread::scope(|s| {
            let q = s.spawn(|| talk(self.qemu.as_ref().unwrap(), &self.qemu_dir));
            let v = talk(self.ours.as_ref().unwrap(), &self.ours_dir);
            (q.join().unwrap(), v)
        });
        (q, v)
    }

    fn assert_same_qmp(&self, chunks: &[String]) {
        let (qemu, ours) = self.qmp(chunks);
        dump(&qemu, &ours);
        assert!(qemu.starts_with("{\"QMP\": "), "QEMU: {qemu}");
        assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
    }

    fn assert_same_hmp(&self, chunks: &[String]) {
        let (qemu, ours) = self.hmp(chunks);
        dump(&qemu, &ours);
        assert!(qemu.contains("monitor - type"), "QEMU: {qemu}");
        assert_eq!(ours, qemu, "\nvmscope:\n{ours:?}\nQEMU 7.2:\n{qemu:?}");
    }

    /// Quits both and returns their directories for the on-disk comparison.
    fn quit(&mut self) -> (PathBuf, PathBuf) {
        let q = self.qemu.take().unwrap();
        let v = self.ours.take().unwrap();
        std::thread::scope(|s| {
            s.spawn(move || q.quit());
            v.quit();
        });
        (self.qemu_dir.clone(), self.ours_dir.clone())
    }
}

/// With `BLOCK_DIFF_DUMP=dir`, both transcripts are written there for `diff`.
fn dump(qemu: &str, ours: &str) {
    if let Some(dir) = std::env::var_os("BLOCK_DIFF_DUMP") {
        let dir = PathBuf::from(dir);
        let name = std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "_");
        let _ = std::fs::write(dir.join(format!("{name}.qemu")), qemu);
        let _ = std::fs::write(dir.join(format!("{name}.ours")), ours);
    }
}

fn lines(chunks: &[&str]) -> Vec<String> {
    chunks.iter().map(|c| format!("{c}\n")).collect()
}

fn hmp_in_qmp(command: &str) -> String {
    format!(
        "{{\"execute\": \"human-monitor-command\", \"arguments\": {{\"command-line\": \"{}\"}}}}",
        command.replace('"', "\\\"")
    )
}

/// What `qemu-img info` says of an image, the directory masked and the disk size dropped.
fn image_info(dir: &Path, file: &str) -> String {
    run("qemu-img", &["info", "-U", file], dir)
        .replace(&dir.display().to_string(), "DIR")
        .lines()
        .filter(|l| !l.starts_with("disk size:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Both images hold the same guest-visible data (and the same data as `reference`).
fn assert_same_contents(qemu_dir: &Path, ours_dir: &Path, file: &str) {
    let a = qemu_dir.join(file);
    let b = ours_dir.join(file);
    let out = Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{file} differs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

const CAPS: &str = "{\"execute\": \"qmp_capabilities\"}";

#[test]
fn query_block_and_info_block() {
    if skip_without_qemu() {
        return;
    }
    let pair = Pair::start(
        "blkq",
        true,
        &[
            "if=none,id=drive0,file=mid.qcow2",
            "if=none,id=r,file=raw.img,format=raw,cache=none",
            "if=none,id=ro,file=base.qcow2,readonly=on,cache=writethrough",
        ],
    );
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"query-block\"}",
        "{\"execute\": \"query-block\", \"arguments\": {\"x\": 1}}",
        "{\"execute\": \"query-block-jobs\"}",
        &hmp_in_qmp("info block"),
        &hmp_in_qmp("info block drive0"),
        &hmp_in_qmp("info block nodev"),
        &hmp_in_qmp("info block -v r"),
        &hmp_in_qmp("info block -v drive0"),
        &hmp_in_qmp("info blockstats"),
        &hmp_in_qmp("info blockstats x"),
        &hmp_in_qmp("info block-jobs"),
        &hmp_in_qmp("help info block"),
        &hmp_in_qmp("help info blockstats"),
        &hmp_in_qmp("help info block-jobs"),
    ]));
}

/// Drives without a medium and read-only drives.
#[test]
fn empty_and_read_only_drives() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start(
        "blkro",
        true,
        &[
            "if=none,id=drive0,file=mid.qcow2,readonly=on",
            "if=none,id=cd,media=cdrom",
        ],
    );
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"cd\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"cd\", \"snapshot-file\": \"DIR/s2.qcow2\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"cd\"}}",
        &hmp_in_qmp("commit cd"),
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s1.qcow2\"}}",
        &hmp_in_qmp("commit drive0"),
        &hmp_in_qmp("info block"),
        "{\"execute\": \"query-block\"}",
    ]));
    let (q, v) = pair.quit();
    assert_eq!(image_info(&v, "s1.qcow2"), image_info(&q, "s1.qcow2"));
}

/// `query-blockstats` without the `parent` member QEMU adds for the protocol (file) node,
/// which vmscope does not have: everything else is compared.
#[test]
fn query_blockstats_of_the_drives() {
    if skip_without_qemu() {
        return;
    }
    let pair = Pair::start("blks", false, &["if=none,id=drive0,file=base.qcow2"]);
    let (qemu, ours) = pair.qmp(&lines(&[CAPS, "{\"execute\": \"query-blockstats\"}"]));
    let qemu = remove_member(&qemu, "\"parent\": ");
    assert_eq!(ours, qemu);
}

/// Removes `"key": {...}, ` (a JSON object member) from `text`.
fn remove_member(text: &str, key: &str) -> String {
    let Some(start) = text.find(key) else {
        return text.to_string();
    };
    let bytes = text.as_bytes();
    let mut i = start + key.len();
    let mut depth = 0;
    loop {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    i += 1;
                    break;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if text[i..].starts_with(", ") {
        i += 2;
    }
    format!("{}{}", &text[..start], &text[i..])
}

#[test]
fn snapshots_and_their_errors() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blksnap", true, &["if=none,id=drive0,file=mid.qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"nodev\", \"snapshot-file\": \"DIR/x.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"node-name\": \"nonode\", \"snapshot-file\": \"DIR/x.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"snapshot-file\": \"DIR/x.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": 1}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/x.qcow2\", \"mode\": \"bad\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/x.qcow2\", \"format\": \"foo\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/x.qcow2\", \"format\": \"raw\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"mid.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/nodir/x.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/none.qcow2\", \"mode\": \"existing\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"node-name\": \"x\", \"snapshot-file\": \"DIR/x.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s1.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s2.qcow2\", \"snapshot-node-name\": \"snap2\"}}",
        "{\"execute\": \"query-block\"}",
        "{\"execute\": \"transaction\", \"arguments\": {\"actions\": [{\"type\": \"foo\", \"data\": {}}]}}",
        "{\"execute\": \"transaction\", \"arguments\": {\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"drive0\"}}]}}",
        "{\"execute\": \"transaction\", \"arguments\": {\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/t1.qcow2\"}}, {\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"nodev\", \"snapshot-file\": \"DIR/t2.qcow2\"}}]}}",
        "{\"execute\": \"query-block\"}",
        "{\"execute\": \"transaction\", \"arguments\": {\"actions\": []}}",
        "{\"execute\": \"transaction\", \"arguments\": {\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/t3.qcow2\"}}]}}",
        "{\"execute\": \"query-block\"}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/n0.qcow2\", \"snapshot-node-name\": \"x y\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/n1.qcow2\", \"snapshot-node-name\": \"drive0\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/n2.qcow2\", \"snapshot-node-name\": \"snap2\"}}",
        // Two snapshots of one drive in a transaction: the second on top of the first.
        "{\"execute\": \"transaction\", \"arguments\": {\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/u1.qcow2\"}}, {\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/u2.qcow2\"}}]}}",
        "{\"execute\": \"query-block\"}",
    ]));
    pair.assert_same_hmp(&lines(&[
        "snapshot_blkdev",
        "snapshot_blkdev drive0",
        "snapshot_blkdev nodev DIR/h.qcow2",
        "snapshot_blkdev drive0 DIR/u2.qcow2",
        "snapshot_blkdev drive0 DIR/h.qcow2 foo",
        "snapshot_blkdev drive0 DIR/h.qcow2 qcow2 extra",
        "snapshot_blkdev -x drive0 DIR/h.qcow2",
        "snapshot_blkdev -n drive0 DIR/none.qcow2",
        "snapshot_blkdev drive0 DIR/h1.qcow2 qcow2",
        "snapshot_blkdev drive0 DIR/h2.qcow2",
        "help snapshot_blkdev",
        "info block",
    ]));
    let (q, v) = pair.quit();
    for file in [
        "s1.qcow2", "s2.qcow2", "t3.qcow2", "u1.qcow2", "u2.qcow2", "n0.qcow2", "h1.qcow2",
        "h2.qcow2",
    ] {
        assert_eq!(image_info(&v, file), image_info(&q, file), "{file}");
        assert_same_contents(&q, &v, file);
    }
    // The failed transaction created its first overlay in both, and switched neither.
    assert!(q.join("t1.qcow2").exists() == v.join("t1.qcow2").exists());
}

#[test]
fn stream_a_snapshot_chain_then_compare_the_images() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blkstream", true, &["if=none,id=drive0,file=mid.qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"nodev\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"speed\": \"x\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"base\": \"base.qcow2\", \"base-node\": \"x\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"base\": \"DIR/nope\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"base-node\": \"nonode\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"job-id\": \"9\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"speed\": -5}}",
        "{\"execute\": \"block-job-cancel\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-job-pause\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-job-resume\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-job-complete\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-job-set-speed\", \"arguments\": {\"device\": \"drive0\", \"speed\": 1}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s1.qcow2\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s2.qcow2\"}}",
        // A rate-limited stream stays after its first chunk: query it, refuse a second
        // job and a snapshot, then lift the limit.
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"speed\": 1}}",
        "{\"execute\": \"query-block-jobs\"}",
        &hmp_in_qmp("info block-jobs"),
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\"}}",
        // Snapshots drain the node: the job pauses and resumes, then the snapshot is refused.
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s3.qcow2\"}}",
        &hmp_in_qmp("snapshot_blkdev drive0 DIR/s3.qcow2"),
        "{\"execute\": \"block-job-pause\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"query-block-jobs\"}",
        "{\"execute\": \"block-job-pause\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s3.qcow2\"}}",
        "{\"execute\": \"block-job-resume\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"query-block-jobs\"}",
        "{\"execute\": \"block-job-complete\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-job-resume\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-job-set-speed\", \"arguments\": {\"device\": \"drive0\", \"speed\": -1}}",
        "{\"execute\": \"block-job-set-speed\", \"arguments\": {\"device\": \"drive0\", \"speed\": 0}}",
        "{\"execute\": \"query-block-jobs\"}",
        "{\"execute\": \"query-block\"}",
        // Nothing below the active image any more: the job ends within the command.
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"job-id\": \"j\"}}",
    ]));
    let (q, v) = pair.quit();
    assert_eq!(image_info(&v, "s2.qcow2"), image_info(&q, "s2.qcow2"));
    assert_same_contents(&q, &v, "s2.qcow2");
    assert!(!image_info(&v, "s2.qcow2").contains("backing file"));
}

#[test]
fn stream_down_to_a_base_keeps_the_base() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blkbase", true, &["if=none,id=drive0,file=mid.qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s1.qcow2\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"base\": \"base.qcow2\", \"job-id\": \"j1\"}}",
        "{\"execute\": \"query-block\"}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s2.qcow2\"}}",
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"base\": \"DIR/s1.qcow2\"}}",
        "{\"execute\": \"query-block\"}",
    ]));
    pair.assert_same_hmp(&lines(&[
        "block_stream",
        "block_stream nodev",
        "block_stream drive0 abc",
        "block_stream drive0 -5",
        "block_stream drive0 1x",
        "block_stream drive0 0 DIR/nope",
        "help block_stream",
    ]));
    let (q, v) = pair.quit();
    for file in ["s1.qcow2", "s2.qcow2"] {
        assert_eq!(image_info(&v, file), image_info(&q, file), "{file}");
        assert_same_contents(&q, &v, file);
    }
}

#[test]
fn commit_jobs_intermediate_and_active() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blkcommit", true, &["if=none,id=drive0,file=mid.qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"nodev\"}}",
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s1.qcow2\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"top\": \"DIR/nope\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"base\": \"DIR/nope\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"top\": \"base.qcow2\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"job-id\": \"x y\"}}",
        // Intermediate: mid.qcow2 into base.qcow2; s1 then names base.qcow2.
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"top\": \"mid.qcow2\"}}",
        "{\"execute\": \"query-block\"}",
    ]));
    pair.assert_same_hmp(&lines(&[
        "commit",
        "commit nodev",
        "commit drive0",
        "commit all",
        "help commit",
    ]));
    let (q, v) = pair.quit();
    for file in ["base.qcow2", "s1.qcow2"] {
        assert_eq!(image_info(&v, file), image_info(&q, file), "{file}");
        assert_same_contents(&q, &v, file);
    }
}

/// Active commit: the active image's data goes into the base, the job goes ready and
/// waits for `block-job-complete`, then the base is the active image. (An active image
/// with no data is avoided: QEMU 7.2 then sends `ready` before or after the reply.)
#[test]
fn active_commit_goes_ready_and_completes() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blkactive", true, &["if=none,id=drive0,file=mid.qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"block-job-complete\", \"arguments\": {\"device\": \"drive0\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"job-id\": \"ac\"}}",
        "{\"execute\": \"query-block-jobs\"}",
        &hmp_in_qmp("info block-jobs"),
        "{\"execute\": \"block-job-complete\", \"arguments\": {\"device\": \"ac\"}}",
        "{\"execute\": \"query-block-jobs\"}",
        "{\"execute\": \"query-block\"}",
    ]));
    let (q, v) = pair.quit();
    assert_eq!(image_info(&v, "base.qcow2"), image_info(&q, "base.qcow2"));
    assert_same_contents(&q, &v, "base.qcow2");
    // The base now shows what the active image showed.
    let out = run(
        "qemu-img",
        &["compare", "-U", "base.qcow2", "mid.qcow2"],
        &v,
    );
    assert!(out.contains("identical"), "{out}");
}

#[test]
fn cancel_and_pause_a_rate_limited_commit() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blkcancel", true, &["if=none,id=drive0,file=mid.qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {\"device\": \"drive0\", \"snapshot-file\": \"DIR/s1.qcow2\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"top\": \"mid.qcow2\", \"speed\": 1, \"job-id\": \"c\"}}",
        "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"top\": \"mid.qcow2\"}}",
        "{\"execute\": \"block-job-cancel\", \"arguments\": {\"device\": \"c\", \"force\": 1}}",
        "{\"execute\": \"block-job-cancel\", \"arguments\": {\"device\": \"c\"}}",
        "{\"execute\": \"query-block-jobs\"}",
        "{\"execute\": \"query-block\"}",
    ]));
    pair.assert_same_hmp(&lines(&[
        "block_job_cancel",
        "block_job_cancel -f",
        "block_job_cancel -x drive0",
        "block_job_cancel drive0 extra",
        "block_job_cancel drive0",
        "block_job_pause drive0",
        "block_job_resume drive0",
        "block_job_complete drive0",
        "block_job_set_speed",
        "block_job_set_speed drive0",
        "block_job_set_speed drive0 x",
        "block_job_set_speed drive0 1M",
        "help block_job_cancel",
        "help block_job_pause",
        "help block_job_resume",
        "help block_job_complete",
        "help block_job_set_speed",
    ]));
    let (q, v) = pair.quit();
    assert_same_contents(&q, &v, "s1.qcow2");
    assert_eq!(image_info(&v, "s1.qcow2"), image_info(&q, "s1.qcow2"));
}

/// The seed conversations, as the scripts send them: `echo "snapshot_blkdev …" | socat`
/// to the HMP socket, then `echo "{'execute':'qmp_capabilities'} " "{ 'execute':
/// 'block-stream', …}" | socat` to the QMP socket, both half-closing at once.
#[test]
fn seed_snapshot_then_stream_over_socat() {
    if skip_without_qemu() {
        return;
    }
    let has_socat = Command::new("socat").arg("-V").output().is_ok();
    if !has_socat {
        eprintln!("SKIPPED: socat is not installed");
        return;
    }
    let mut pair = Pair::start("blkseed", true, &["if=none,id=ide0-hd0,file=mid.qcow2"]);
    let socat = |dir: &Path, sock: &str, input: &str| {
        let mut child = Command::new("socat")
            .args(["-", &format!("UNIX-CONNECT:{}", dir.join(sock).display())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        mask(&out.stdout, dir)
    };
    // socat does not retry: wait until both monitors listen.
    for dir in [&pair.qemu_dir, &pair.ours_dir] {
        drop(connect_unix(&dir.join("hmp.sock")));
        drop(connect_unix(&dir.join("qmp.sock")));
    }
    for i in 1..=3 {
        let line = format!("snapshot_blkdev ide0-hd0 DIR/snapshot-{i} qcow2\n");
        // What HMP prints back is never read by the scripts (QEMU 7.2 drops it when the
        // client has half-closed): the snapshot itself is what counts.
        for dir in [&pair.qemu_dir, &pair.ours_dir] {
            socat(
                dir,
                "hmp.sock",
                &line.replace("DIR", &dir.display().to_string()),
            );
            let file = dir.join(format!("snapshot-{i}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !file.exists() {
                assert!(Instant::now() < deadline, "{} not created", file.display());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let stream = "{'execute':'qmp_capabilities'}  { 'execute': 'block-stream', 'arguments': { 'device': 'ide0-hd0'} }\n";
    let q = socat(&pair.qemu_dir, "qmp.sock", stream);
    let v = socat(&pair.ours_dir, "qmp.sock", stream);
    assert!(q.contains("\"status\": \"running\""), "QEMU: {q}");
    // Up to the reply of block-stream; how many later job events arrive before the
    // connection ends depends on timing (socat lingers 0.5 s after its input ends).
    let upto_reply = |t: &str| {
        let first = t.find("{\"return\": {}}").expect("capabilities reply");
        let second = first
            + 1
            + t[first + 1..]
                .find("{\"return\": {}}")
                .expect("stream reply");
        t[..second].to_string()
    };
    assert_eq!(upto_reply(&v), upto_reply(&q));
    // Wait for both jobs to end, then compare what is on disk.
    for dir in [&pair.qemu_dir, &pair.ours_dir] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = converse_qmp(
                &dir.join("qmp.sock"),
                &[b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-block-jobs\"}\n"],
                false,
            );
            if String::from_utf8_lossy(&out).contains("{\"return\": []}") {
                break;
            }
            assert!(Instant::now() < deadline, "stream did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (q, v) = pair.quit();
    for i in 1..=3 {
        let file = format!("snapshot-{i}");
        assert_eq!(image_info(&v, &file), image_info(&q, &file), "{file}");
        assert_same_contents(&q, &v, &file);
    }
    // The top holds all the data, with no backing file left.
    assert!(!image_info(&v, "snapshot-3").contains("backing file"));
    let out = run(
        "qemu-img",
        &["compare", "-U", "mid.qcow2", "snapshot-3"],
        &v,
    );
    assert!(out.contains("identical"), "{out}");
}

/// `kill -9` in the middle of a throttled stream, and of a throttled commit: the chain
/// left on disk opens, checks clean (leaks allowed) and reads what the guest saw.
#[test]
fn killed_mid_job_the_chain_stays_valid() {
    if skip_without_qemu() {
        return;
    }
    for (tag, job) in [
        (
            "blkkill-stream",
            "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"drive0\", \"speed\": 1}}",
        ),
        (
            "blkkill-commit",
            "{\"execute\": \"block-commit\", \"arguments\": {\"device\": \"drive0\", \"top\": \"mid.qcow2\", \"speed\": 1}}",
        ),
    ] {
        let root = TempDir::new(tag);
        let dir = root.join("v");
        std::fs::create_dir_all(&dir).unwrap();
        make_images(&dir, true);
        // What the guest sees, frozen as a raw image before anything runs.
        run(
            "qemu-img",
            &["convert", "-O", "raw", "mid.qcow2", "seen.raw"],
            &dir,
        );
        let emu = Emulator::start(
            env!("CARGO_BIN_EXE_vmscope"),
            false,
            &dir,
            &["if=none,id=drive0,file=mid.qcow2"],
        );
        let snap = format!(
            "{{\"execute\": \"blockdev-snapshot-sync\", \"arguments\": {{\"device\": \"drive0\", \"snapshot-file\": \"{}\"}}}}\n",
            dir.join("s1.qcow2").display()
        );
        let job = format!("{job}\n");
        let out = converse_qmp(
            &emu.qmp(),
            &[
                CAPS.as_bytes(),
                b"\n",
                snap.as_bytes(),
                job.as_bytes(),
                b"{\"execute\": \"query-block-jobs\"}\n",
            ],
            false,
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("\"offset\": "), "{out}");
        assert!(!out.contains("\"offset\": 0,"), "no progress yet: {out}");
        drop(emu); // SIGKILL
        let check = Command::new("qemu-img")
            .args(["check", "s1.qcow2"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let code = check.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "{tag}: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let out = run("qemu-img", &["compare", "s1.qcow2", "seen.raw"], &dir);
        assert!(out.contains("identical"), "{tag}: {out}");
    }
}

/// The seed workflows' drive: `-drive file=…,format=qcow2` is `ide0-hd0` on the IDE
/// controller, with its device: query-block shows the device, snapshots and a stream
/// go as QEMU's, and HMP `commit` works on it.
#[test]
fn ide_disk_snapshot_stream_and_commit() {
    if skip_without_qemu() {
        return;
    }
    let mut pair = Pair::start("blkide", true, &["file=mid.qcow2,format=qcow2"]);
    pair.assert_same_qmp(&lines(&[
        CAPS,
        "{\"execute\": \"query-block\"}",
        &hmp_in_qmp("info block"),
        &hmp_in_qmp("snapshot_blkdev ide0-hd0 DIR/snapshot-1 qcow2"),
        &hmp_in_qmp("snapshot_blkdev ide0-hd0 DIR/snapshot-2 qcow2"),
        "{\"execute\": \"query-block\"}",
        &hmp_in_qmp("commit ide0-hd0"),
        "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"ide0-hd0\"}}",
        "{\"execute\": \"query-block\"}",
        &hmp_in_qmp("info block"),
    ]));
    let (q, v) = pair.quit();
    for file in ["snapshot-1", "snapshot-2"] {
        assert_eq!(image_info(&v, file), image_info(&q, file), "{file}");
        assert_same_contents(&q, &v, file);
    }
}
