//! Block jobs on a live node, checked with QEMU's tools: the stream and commit jobs run in
//! the background with a speed limit, pause, resume and cancel as QEMU's do, report QEMU's
//! status sequence, and leave a chain that `qemu-img` opens, checks clean and reads the
//! same at every point; guest writes racing with snapshot pivots and jobs are never lost.

#[path = "block_support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use vmscope::block::job::{
    CommitWork, HmpCommit, Job, JobEvent, JobList, JobSpec, JobStatus, JobType, StreamWork,
};
use vmscope::block::qcow2::{self, Qcow2CreateOptions};
use vmscope::block::{create_overlay, open_node, BlockNode, ImageFormat, OpenOptions};

const SIZE: u64 = 4 << 20;
const MIB: u64 = 1 << 20;

/// base.qcow2 (1 MiB of 0x11 at 0, 64 KiB of 0x22 at 2 MiB) <- mid.qcow2 (128 KiB of 0x33
/// at 1 MiB) <- top.qcow2 (64 KiB of 0x44 at 3 MiB). Returns the expected disk content.
fn build(s: &Scratch) -> Vec<u8> {
    qcow2::create(
        &s.path("base.qcow2"),
        &Qcow2CreateOptions {
            size: SIZE,
            ..Default::default()
        },
    )
    .unwrap();
    create_overlay(&s.path("mid.qcow2"), "base.qcow2", ImageFormat::Qcow2, SIZE).unwrap();
    create_overlay(&s.path("top.qcow2"), "mid.qcow2", ImageFormat::Qcow2, SIZE).unwrap();
    let mut expected = vec![0u8; SIZE as usize];
    for (file, off, len, byte) in [
        ("base.qcow2", 0, MIB, 0x11u8),
        ("base.qcow2", 2 * MIB, 65536, 0x22),
        ("mid.qcow2", MIB, 131072, 0x33),
        ("top.qcow2", 3 * MIB, 65536, 0x44),
    ] {
        let node = open_node(
            &s.path(file),
            &OpenOptions {
                no_backing: true,
                ..Default::default()
            },
        )
        .unwrap();
        node.write_at(off, &vec![byte; len as usize]).unwrap();
        node.close().unwrap();
        expected[off as usize..(off + len) as usize].fill(byte);
    }
    expected
}

fn open(s: &Scratch, file: &str) -> Arc<BlockNode> {
    Arc::new(open_node(&s.path(file), &OpenOptions::default()).unwrap())
}

type Events = Arc<Mutex<Vec<JobEvent>>>;

fn start(
    list: &Arc<JobList>,
    kind: JobType,
    speed: u64,
    work: Box<dyn vmscope::block::job::JobWork>,
) -> (Arc<Job>, Events) {
    let events: Events = Arc::default();
    let sink_events = events.clone();
    let job = list
        .start(
            JobSpec {
                id: "job0".into(),
                kind,
                drive: "drive0".into(),
                speed,
            },
            work,
            Arc::new(move |e| sink_events.lock().unwrap().push(e)),
        )
        .unwrap();
    (job, events)
}

fn statuses(events: &Events) -> Vec<&'static str> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            JobEvent::StatusChange { status, .. } => status.as_str(),
            JobEvent::Ready(_) => "READY",
            JobEvent::Completed(_) => "COMPLETED",
            JobEvent::Cancelled(_) => "CANCELLED",
            JobEvent::IoError { .. } => "ERROR",
        })
        .collect()
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What QEMU reads through the chain starting at `file`, and its check result.
fn qemu_view(s: &Scratch, file: &str) -> Vec<u8> {
    assert_qemu_check_clean(&s.p(file), false);
    qemu_read_all(&s.p(file), s)
}

#[test]
fn stream_pauses_resumes_and_the_chain_stays_consistent_throughout() {
    require_qemu();
    let s = Scratch::new("job-stream");
    let expected = build(&s);
    let node = open(&s, "top.qcow2");
    let list = Arc::new(JobList::new());
    let work = StreamWork::new(node.clone(), 3, None).unwrap();
    // 1 byte/s: after its first chunk the job sleeps until the speed changes.
    let (job, events) = start(&list, JobType::Stream, 1, Box::new(work));
    wait_for("first chunk", || job.info().offset > 0 && !job.info().busy);
    assert_eq!(job.info().len, SIZE);
    assert_eq!(job.info().offset, 512 * 1024);
    assert!(list.on_drive("drive0").is_some());
    node.flush().unwrap();
    // Mid-stream, the chain on disk is valid and reads the same.
    assert_same_content("mid-stream", &qemu_view(&s, "top.qcow2"), &expected);

    job.pause().unwrap();
    job.wait_paused(Duration::from_secs(10));
    assert!(job.info().paused);
    assert_eq!(job.info().status, JobStatus::Paused);
    assert_eq!(
        job.pause().map_err(|e| e.to_string()),
        Err("Job is already paused".into())
    );
    job.resume().unwrap();
    assert_eq!(
        job.resume().map_err(|e| e.to_string()),
        Err("Can't resume a job that was not paused".into())
    );
    assert!(job.complete().is_err(), "a stream cannot be completed");
    job.set_speed(0).unwrap();
    job.wait_finished(Duration::from_secs(20));
    assert_eq!(
        statuses(&events),
        [
            "created",
            "running",
            "paused",
            "running",
            "waiting",
            "pending",
            "COMPLETED",
            "concluded",
            "null"
        ]
    );
    let completed = events
        .lock()
        .unwrap()
        .iter()
        .find_map(|e| match e {
            JobEvent::Completed(info) => Some(info.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (completed.len, completed.offset, completed.error),
        (SIZE, SIZE, None)
    );
    assert!(list.list().is_empty());
    assert_eq!(node.chain_len(), 1);
    drop(node);
    let info = qemu_img(&["info", &s.p("top.qcow2")]);
    assert!(!info.contains("backing file"), "{info}");
    assert_same_content("after stream", &qemu_view(&s, "top.qcow2"), &expected);
}

#[test]
fn stream_to_a_base_names_it_and_cancel_keeps_the_chain() {
    require_qemu();
    let s = Scratch::new("job-stream-base");
    let expected = build(&s);
    let node = open(&s, "top.qcow2");
    let list = Arc::new(JobList::new());
    // Cancelled while throttled: nothing is switched.
    let work = StreamWork::new(
        node.clone(),
        2,
        Some(("base.qcow2".into(), ImageFormat::Qcow2)),
    )
    .unwrap();
    let (job, events) = start(&list, JobType::Stream, 1, Box::new(work));
    wait_for("first chunk", || job.info().offset > 0 && !job.info().busy);
    job.cancel(false).unwrap();
    job.wait_finished(Duration::from_secs(10));
    assert_eq!(
        statuses(&events),
        [
            "created",
            "running",
            "aborting",
            "CANCELLED",
            "concluded",
            "null"
        ]
    );
    assert_eq!(node.chain_len(), 3);
    node.flush().unwrap();
    assert_same_content("after cancel", &qemu_view(&s, "top.qcow2"), &expected);
    // Then to completion: top names base, mid leaves the chain.
    let work = StreamWork::new(
        node.clone(),
        2,
        Some(("base.qcow2".into(), ImageFormat::Qcow2)),
    )
    .unwrap();
    let (job, _) = start(&list, JobType::Stream, 0, Box::new(work));
    job.wait_finished(Duration::from_secs(20));
    assert_eq!(node.chain_len(), 2);
    drop(node);
    let info = qemu_img(&["info", &s.p("top.qcow2")]);
    assert!(info.contains("backing file: base.qcow2 "), "{info}");
    assert!(info.contains("backing file format: qcow2"), "{info}");
    assert_same_content("after stream", &qemu_view(&s, "top.qcow2"), &expected);
}

#[test]
fn intermediate_and_active_commit_and_hmp_commit() {
    require_qemu();
    let s = Scratch::new("job-commit");
    let expected = build(&s);
    let node = open(&s, "top.qcow2");
    let list = Arc::new(JobList::new());
    // mid into base: top then names base.
    let work = CommitWork::new(node.clone(), 1, 2).unwrap();
    let (job, events) = start(&list, JobType::Commit, 0, Box::new(work));
    job.wait_finished(Duration::from_secs(20));
    assert_eq!(
        statuses(&events),
        [
            "created",
            "running",
            "waiting",
            "pending",
            "COMPLETED",
            "concluded",
            "null"
        ]
    );
    assert_eq!(node.chain_len(), 2);
    node.flush().unwrap();
    let info = qemu_img(&["info", "-U", &s.p("top.qcow2")]);
    assert!(info.contains("backing file: "), "{info}");
    assert!(info.contains("base.qcow2"), "{info}");
    assert_same_content("after commit", &qemu_view(&s, "top.qcow2"), &expected);

    // Active: ready, a guest write meanwhile, complete: base is the active image.
    let work = CommitWork::new(node.clone(), 0, 1).unwrap();
    let (job, events) = start(&list, JobType::Commit, 0, Box::new(work));
    wait_for("ready", || job.info().ready);
    let mut expected = expected;
    node.write_at(3 * MIB + 4096, &[0x55; 4096]).unwrap();
    expected[(3 * MIB + 4096) as usize..(3 * MIB + 8192) as usize].fill(0x55);
    job.complete().unwrap();
    job.wait_finished(Duration::from_secs(20));
    assert_eq!(
        statuses(&events),
        [
            "created",
            "running",
            "ready",
            "READY",
            "waiting",
            "pending",
            "COMPLETED",
            "concluded",
            "null"
        ]
    );
    assert_eq!(node.chain_len(), 1);
    assert_eq!(node.filename(), s.path("base.qcow2"));
    node.write_at(0, &[0x66; 512]).unwrap();
    expected[..512].fill(0x66);
    node.flush().unwrap();
    assert_same_content(
        "after active commit",
        &qemu_view(&s, "base.qcow2"),
        &expected,
    );
    drop(node);

    // HMP commit: the active image's data goes into its backing file, which it then
    // shows through.
    create_overlay(&s.path("o.qcow2"), "base.qcow2", ImageFormat::Qcow2, SIZE).unwrap();
    let node = open(&s, "o.qcow2");
    node.write_at(MIB, &[0x77; 65536]).unwrap();
    expected[MIB as usize..(MIB + 65536) as usize].fill(0x77);
    HmpCommit::run(&node).unwrap();
    assert_eq!(node.chain_len(), 2);
    node.flush().unwrap();
    let map = qemu_img(&["map", "--output=json", &s.p("o.qcow2")]);
    assert!(!map.contains("\"depth\": 0"), "overlay not emptied: {map}");
    assert_same_content("after hmp commit", &qemu_view(&s, "base.qcow2"), &expected);
    assert_same_content("overlay view", &qemu_view(&s, "o.qcow2"), &expected);
}

/// Writers keep writing their own regions while the drive is snapshotted again and again
/// and then streamed: every region ends with the last value written to it, in vmscope's
/// view and in QEMU's.
#[test]
fn guest_writes_racing_with_snapshots_and_a_stream_are_never_lost() {
    require_qemu();
    let s = Scratch::new("job-race");
    build(&s);
    let node = open(&s, "top.qcow2");
    let stop = Arc::new(AtomicBool::new(false));
    const WRITERS: u64 = 4;
    const REGION: u64 = 8192;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let node = node.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = vec![0u8; 16];
                let mut n: u8 = 0;
                while !stop.load(Ordering::Relaxed) {
                    for (r, value) in last.iter_mut().enumerate() {
                        n = n.wrapping_add(1).max(1);
                        // Regions interleave across clusters so pivots split them.
                        let off = (r as u64 * WRITERS + w) * 65536 + 4096;
                        node.write_at(off, &vec![n; REGION as usize]).unwrap();
                        *value = n;
                    }
                }
                last
            })
        })
        .collect();
    let mut top = "top.qcow2".to_string();
    for i in 0..8 {
        let name = format!("snap{i}.qcow2");
        node.snapshot_to_new_overlay(&s.path(&name), &s.p(&top))
            .unwrap();
        top = name;
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = Arc::new(JobList::new());
    let base_depth = node.chain_len();
    let work = StreamWork::new(node.clone(), base_depth, None).unwrap();
    let (job, _) = start(&list, JobType::Stream, 0, Box::new(work));
    job.wait_finished(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let lasts: Vec<Vec<u8>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(node.chain_len(), 1);
    node.flush().unwrap();
    let qemu = qemu_view(&s, &top);
    let mut ours = vec![0u8; SIZE as usize];
    node.read_at(0, &mut ours).unwrap();
    for (w, last) in lasts.iter().enumerate() {
        for (r, &value) in last.iter().enumerate() {
            let off = ((r as u64 * WRITERS + w as u64) * 65536 + 4096) as usize;
            let want = vec![value; REGION as usize];
            assert_eq!(
                &ours[off..off + REGION as usize],
                &want[..],
                "vmscope, writer {w} region {r}"
            );
            assert_eq!(
                &qemu[off..off + REGION as usize],
                &want[..],
                "QEMU, writer {w} region {r}"
            );
        }
    }
}

/// Writers keep writing while an active commit copies, waits `ready` (keeping the base in
/// step) and completes: the base, now the active image, holds every last write.
#[test]
fn guest_writes_racing_with_an_active_commit_are_never_lost() {
    require_qemu();
    let s = Scratch::new("job-race-commit");
    build(&s);
    let node = open(&s, "top.qcow2");
    let stop = Arc::new(AtomicBool::new(false));
    const WRITERS: u64 = 3;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let node = node.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = vec![0u8; 12];
                let mut n: u8 = 0;
                while !stop.load(Ordering::Relaxed) {
                    for (r, value) in last.iter_mut().enumerate() {
                        n = n.wrapping_add(1).max(1);
                        let off = (r as u64 * WRITERS + w) * 65536 + 512;
                        node.write_at(off, &[n; 4096]).unwrap();
                        *value = n;
                    }
                }
                last
            })
        })
        .collect();
    let list = Arc::new(JobList::new());
    let base = node.chain_len() - 1;
    let work = CommitWork::new(node.clone(), 0, base).unwrap();
    let (job, _) = start(&list, JobType::Commit, 0, Box::new(work));
    wait_for("ready", || job.info().ready);
    // Long enough for a few background syncs while the writers go on.
    std::thread::sleep(Duration::from_millis(700));
    job.complete().unwrap();
    job.wait_finished(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let lasts: Vec<Vec<u8>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(node.chain_len(), 1);
    assert_eq!(node.filename(), s.path("base.qcow2"));
    node.flush().unwrap();
    let qemu = qemu_view(&s, "base.qcow2");
    for (w, last) in lasts.iter().enumerate() {
        for (r, &value) in last.iter().enumerate() {
            let off = ((r as u64 * WRITERS + w as u64) * 65536 + 512) as usize;
            let mut ours = [0u8; 4096];
            node.read_at(off as u64, &mut ours).unwrap();
            assert_eq!(ours, [value; 4096], "vmscope, writer {w} region {r}");
            assert_eq!(
                &qemu[off..off + 4096],
                &[value; 4096][..],
                "QEMU, writer {w} region {r}"
            );
        }
    }
}
