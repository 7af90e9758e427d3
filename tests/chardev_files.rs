//! file, pipe, null backends and logfiles.

mod chardev_common;
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chardev_common::*;
use vmscope::chardev::{ChardevEvent, Chardevs, MainLoop};
use vmscope::config::{ChardevBackend, ChardevConfig};
use vmscope::monitor::RunState;

fn config(id: &str, backend: ChardevBackend, logfile: Option<PathBuf>) -> ChardevConfig {
    ChardevConfig {
        id: id.into(),
        backend,
        mux: false,
        logfile,
    }
}

fn file(path: &Path, input_path: Option<PathBuf>, append: bool) -> ChardevBackend {
    ChardevBackend::File {
        path: path.to_path_buf(),
        input_path,
        append,
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Writes through a chardev and stops the loop (which flushes it).
fn write_through(configs: Vec<ChardevConfig>, id: &'static str, data: &'static [u8]) {
    let rec = Recorder::new(usize::MAX);
    let running = Running::start(
        configs,
        vec![Attach::Recorder(id, rec.clone())],
        RunState::Running,
    );
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    (&rec.writer()).write_all(data).unwrap();
    running.stop();
}

#[test]
fn file_output_truncates_or_appends_and_logfile_copies() {
    let dir = TempDir::new("file");
    let out = dir.join("out");
    let log = dir.join("log");
    std::fs::write(&out, b"old contents\n").unwrap();
    write_through(
        vec![config("f", file(&out, None, false), Some(log.clone()))],
        "f",
        b"first\n",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"first\n");
    assert_eq!(std::fs::read(&log).unwrap(), b"first\n");
    write_through(
        vec![config("f", file(&out, None, true), None)],
        "f",
        b"second\n",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"first\nsecond\n");
}

#[test]
fn file_input_path_is_read_and_then_closed() {
    let dir = TempDir::new("filein");
    let input = dir.join("in");
    let data: Vec<u8> = (0..5_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    // A slow front end: 16 bytes at a time, as a 16550 FIFO would take them.
    let rec = Recorder::new(0);
    let _running = Running::start(
        vec![config(
            "f",
            file(&dir.join("out"), Some(input), false),
            None,
        )],
        vec![Attach::Recorder("f", rec.clone())],
        RunState::Running,
    );
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    while rec.received().len() < data.len() {
        let before = rec.received().len();
        rec.make_room(16);
        wait_for("16 more bytes", || {
            rec.received().len() == (before + 16).min(data.len())
        });
    }
    assert_eq!(rec.received(), data);
    wait_for("Closed at end of file", || {
        rec.events() == vec![ChardevEvent::Opened, ChardevEvent::Closed]
    });
}

#[test]
fn pipe_with_in_and_out_fifos() {
    let dir = TempDir::new("pipe");
    let base = dir.join("p");
    mkfifo(&dir.join("p.in"));
    mkfifo(&dir.join("p.out"));
    let rec = Recorder::new(usize::MAX);
    let running = Running::start(
        vec![config("p", ChardevBackend::Pipe { path: base }, None)],
        vec![Attach::Recorder("p", rec.clone())],
        RunState::Running,
    );
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    let mut to_guest = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("p.in"))
        .unwrap();
    to_guest.write_all(b"keyboard").unwrap();
    wait_for("input", || rec.received() == b"keyboard");
    let mut from_guest = std::fs::File::open(dir.join("p.out")).unwrap();
    (&rec.writer()).write_all(b"console output").unwrap();
    let mut got = vec![0u8; 14];
    std::io::Read::read_exact(&mut from_guest, &mut got).unwrap();
    assert_eq!(got, b"console output");
    running.stop();
}

#[test]
fn pipe_with_one_fifo() {
    let dir = TempDir::new("pipe1");
    let path = dir.join("p");
    mkfifo(&path);
    let rec = Recorder::new(usize::MAX);
    let _running = Running::start(
        vec![config(
            "p",
            ChardevBackend::Pipe { path: path.clone() },
            None,
        )],
        vec![Attach::Recorder("p", rec.clone())],
        RunState::Running,
    );
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    w.write_all(b"both ways").unwrap();
    wait_for("input", || rec.received() == b"both ways");
}

#[test]
fn null_accepts_output_and_opens() {
    let dir = TempDir::new("null");
    let log = dir.join("log");
    let rec = Recorder::new(usize::MAX);
    let running = Running::start(
        vec![config("n", ChardevBackend::Null, Some(log.clone()))],
        vec![Attach::Recorder("n", rec.clone())],
        RunState::Running,
    );
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    let w = rec.writer();
    assert!(w.is_connected());
    for _ in 0..100 {
        (&w).write_all(&[b'x'; 100_000]).unwrap();
    }
    running.stop();
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 10_000_000);
    std::thread::sleep(Duration::from_millis(10));
    assert!(rec.received().is_empty());
}

#[test]
fn open_errors_are_qemus() {
    let ml = MainLoop::new().unwrap();
    let dir = TempDir::new("errs");
    let cases = [
        (
            config("f", file(Path::new("/nonexistdir/x"), None, false), None),
            "Could not open '/nonexistdir/x': No such file or directory".to_string(),
        ),
        (
            config(
                "p",
                ChardevBackend::Pipe {
                    path: dir.join("nopipe"),
                },
                None,
            ),
            format!(
                "Could not open '{}': No such file or directory",
                dir.join("nopipe").display()
            ),
        ),
        (
            config(
                "l",
                ChardevBackend::Null,
                Some(PathBuf::from("/nonexistdir/log")),
            ),
            "Unable to open logfile /nonexistdir/log: No such file or directory".to_string(),
        ),
    ];
    for (config, expected) in cases {
        let err = Chardevs::open(&[config], &ml).err().expect("fails");
        assert_eq!(err.to_string(), expected);
    }
}
