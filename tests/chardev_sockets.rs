//! Socket chardevs with real sockets: servers (one client at a time, many sequential
//! clients), clients with reconnect, telnet, flow control, and robustness.

mod chardev_common;
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use chardev_common::*;
use vmscope::chardev::{ChardevError, ChardevEvent, Chardevs, MainLoop};
use vmscope::config::{ChardevBackend, ChardevConfig, SocketAddress, SocketChardev};
use vmscope::monitor::RunState;

const QUIET: Duration = Duration::from_millis(150);

#[test]
fn unix_server_delivers_both_ways_and_reports_connections() {
    let dir = TempDir::new("srv");
    let path = dir.join("s");
    let rec = Recorder::new(usize::MAX);
    let running = Running::start(
        vec![unix_server("ser", &path, false, false)],
        vec![Attach::Recorder("ser", rec.clone())],
        RunState::Running,
    );
    // Output before any client is discarded, as QEMU does for serial.
    wait_for("socket file", || path.exists());
    let w = rec.writer();
    assert!(!w.is_connected());
    (&w).write_all(b"lost").unwrap();

    let mut client = connect_unix(&path).short_timeout();
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    assert!(w.is_connected());
    client.write_all(b"hello\xff\x00").unwrap();
    wait_for("input", || rec.received() == b"hello\xff\x00");
    (&w).write_all(b"from guest").unwrap();
    let got = read_until(&mut client, QUIET, Duration::from_secs(5), |b| {
        b.len() >= 10
    });
    assert_eq!(got, b"from guest");
    drop(client);
    wait_for("Closed", || {
        rec.events() == vec![ChardevEvent::Opened, ChardevEvent::Closed]
    });
    assert!(!w.is_connected());
    running.stop();
    // The server removes its socket file when it closes, like QEMU.
    assert!(!path.exists());
}

#[test]
fn server_takes_one_client_at_a_time_and_the_next_when_it_leaves() {
    let dir = TempDir::new("one");
    let path = dir.join("s");
    let rec = Recorder::new(usize::MAX);
    let _running = Running::start(
        vec![unix_server("ser", &path, false, false)],
        vec![Attach::Recorder("ser", rec.clone())],
        RunState::Running,
    );
    let mut first = connect_unix(&path).short_timeout();
    wait_for("first Opened", || rec.events().len() == 1);
    // The second client's connect succeeds (backlog) but it is not served yet.
    let mut second = connect_unix(&path).short_timeout();
    second.write_all(b"second").unwrap();
    first.write_all(b"first").unwrap();
    wait_for("first input", || rec.received() == b"first");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rec.received(), b"first");
    (&rec.writer()).write_all(b"to first").unwrap();
    assert_eq!(
        read_until(&mut first, QUIET, Duration::from_secs(5), |b| b.len() >= 8),
        b"to first"
    );
    drop(first);
    wait_for("second served", || rec.received() == b"firstsecond");
    assert_eq!(
        rec.events(),
        vec![
            ChardevEvent::Opened,
            ChardevEvent::Closed,
            ChardevEvent::Opened
        ]
    );
    (&rec.writer()).write_all(b"to second").unwrap();
    assert_eq!(
        read_until(&mut second, QUIET, Duration::from_secs(5), |b| b.len() >= 9),
        b"to second"
    );
}

#[test]
fn two_hundred_connect_disconnect_cycles_with_hmp() {
    let dir = TempDir::new("cycles");
    let path = dir.join("m");
    let running = Running::start(
        vec![unix_server("mon", &path, false, false)],
        vec![Attach::Hmp("mon")],
        RunState::Prelaunch,
    );
    for i in 0..200 {
        let mut client = connect_unix(&path).short_timeout();
        match i % 4 {
            // Connect and vanish without reading.
            0 => {}
            // A command with half-close.
            1 => {
                client.write_all(b"info status\n").unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
                let out = read_quiet(&mut client, Duration::from_secs(2), Duration::from_secs(5));
                assert!(
                    out.ends_with(b"VM status: paused (prelaunch)\r\n(qemu) "),
                    "cycle {i}: {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            // Garbage.
            2 => {
                let garbage: Vec<u8> = (0..4096u32).map(|n| (n * 7919 % 251) as u8).collect();
                client.write_all(&garbage).unwrap();
            }
            // Read the banner, then leave.
            _ => {
                let out = read_until(&mut client, QUIET, Duration::from_secs(5), |b| {
                    b.ends_with(b"(qemu) ")
                });
                assert!(out.starts_with(b"QEMU 7.2.0 monitor"), "cycle {i}");
            }
        }
    }
    // Still serving after all that.
    let mut client = connect_unix(&path).short_timeout();
    let out = converse(&mut client, &[b"info status\n"], QUIET);
    assert!(out.ends_with(b"VM status: paused (prelaunch)\r\n(qemu) "));
    assert_eq!(running.vm.state(), RunState::Prelaunch);
}

#[test]
fn a_client_that_vanishes_mid_reply_does_not_stop_the_loop() {
    let dir = TempDir::new("vanish");
    let path = dir.join("s");
    let rec = Recorder::new(usize::MAX);
    let _running = Running::start(
        vec![unix_server("ser", &path, false, false)],
        vec![Attach::Recorder("ser", rec.clone())],
        RunState::Running,
    );
    for round in 0..5 {
        let client = connect_unix(&path);
        wait_for("Opened", || {
            rec.events()
                .iter()
                .filter(|e| **e == ChardevEvent::Opened)
                .count()
                == round + 1
        });
        // More than a socket buffer of output, then the client disappears unread.
        let w = rec.writer();
        for _ in 0..64 {
            let _ = (&w).write_all(&[b'x'; 16384]);
        }
        drop(client);
        wait_for("Closed", || {
            rec.events()
                .iter()
                .filter(|e| **e == ChardevEvent::Closed)
                .count()
                == round + 1
        });
    }
    let mut client = connect_unix(&path).short_timeout();
    wait_for("last Opened", || rec.events().len() == 11);
    (&rec.writer()).write_all(b"alive").unwrap();
    let out = read_until(&mut client, QUIET, Duration::from_secs(5), |b| b.len() >= 5);
    assert_eq!(out, b"alive");
}

#[test]
fn flow_control_holds_input_until_the_front_end_has_room() {
    let dir = TempDir::new("flow");
    let path = dir.join("s");
    // A 16-byte FIFO that is full until the "guest" reads it.
    let rec = Recorder::new(0);
    let _running = Running::start(
        vec![unix_server("ser", &path, false, false)],
        vec![Attach::Recorder("ser", rec.clone())],
        RunState::Running,
    );
    let mut client = connect_unix(&path);
    wait_for("Opened", || rec.events().len() == 1);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    client.write_all(&data).unwrap();
    // The client half-closes: every byte must still arrive before Closed.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(rec.received().is_empty());
    let mut delivered = 0;
    while delivered < data.len() {
        assert_eq!(rec.events(), vec![ChardevEvent::Opened], "closed too early");
        rec.make_room(16);
        delivered = (delivered + 16).min(data.len());
        wait_for("16 more bytes", || rec.received().len() == delivered);
    }
    assert_eq!(rec.received(), data);
    wait_for("Closed after the last byte", || {
        rec.events() == vec![ChardevEvent::Opened, ChardevEvent::Closed]
    });
}

#[test]
fn telnet_server_negotiates_and_filters_iac() {
    let port = free_tcp_port();
    let rec = Recorder::new(usize::MAX);
    let _running = Running::start(
        vec![tcp_server("tn", port, true)],
        vec![Attach::Recorder("tn", rec.clone())],
        RunState::Running,
    );
    let mut client = connect_tcp(port).short_timeout();
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    (&rec.writer()).write_all(b"banner").unwrap();
    let got = read_until(&mut client, QUIET, Duration::from_secs(5), |b| {
        b.len() >= 18
    });
    assert_eq!(
        got, b"\xff\xfb\x01\xff\xfb\x03\xff\xfb\x00\xff\xfd\x00banner",
        "negotiation first, then the front end's output"
    );
    // A client's answers, a break and an escaped 0xFF.
    client
        .write_all(b"\xff\xfd\x01\xff\xfd\x03a\xff\xf3b\xff\xffc")
        .unwrap();
    wait_for("input", || rec.received() == b"ab\xffc");
    let events = rec.events();
    assert_eq!(events, vec![ChardevEvent::Opened, ChardevEvent::Break]);
    // The negotiation is sent again to each new client.
    drop(client);
    let mut client = connect_tcp(port).short_timeout();
    let got = read_until(&mut client, QUIET, Duration::from_secs(5), |b| {
        b.len() >= 12
    });
    assert_eq!(got, b"\xff\xfb\x01\xff\xfb\x03\xff\xfb\x00\xff\xfd\x00");
}

#[test]
fn wait_server_blocks_open_until_a_client_connects() {
    let dir = TempDir::new("wait");
    let path = dir.join("s");
    let config = unix_server("w", &path, true, false);
    let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened2 = opened.clone();
    let thread = std::thread::spawn(move || {
        let ml = MainLoop::new().unwrap();
        let chardevs = Chardevs::open(&[config], &ml).unwrap();
        opened2.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(chardevs);
    });
    wait_for("socket", || path.exists());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!opened.load(std::sync::atomic::Ordering::SeqCst));
    let _client = connect_unix(&path);
    thread.join().unwrap();
    assert!(opened.load(std::sync::atomic::Ordering::SeqCst));
}

fn unix_client(id: &str, path: &std::path::Path, reconnect_secs: u64) -> ChardevConfig {
    ChardevConfig {
        id: id.into(),
        backend: ChardevBackend::Socket(SocketChardev {
            address: SocketAddress::Unix {
                path: path.to_path_buf(),
            },
            server: false,
            wait: false,
            telnet: false,
            reconnect_secs,
        }),
        mux: false,
        logfile: None,
    }
}

#[test]
fn client_without_server_fails_with_qemus_message() {
    let dir = TempDir::new("cli");
    let path = dir.join("none");
    let ml = MainLoop::new().unwrap();
    let err = Chardevs::open(&[unix_client("c", &path, 0)], &ml)
        .err()
        .expect("no server");
    assert_eq!(
        err.to_string(),
        format!(
            "Failed to connect to '{}': No such file or directory",
            path.display()
        )
    );
}

#[test]
fn client_reconnects_after_the_server_goes_away() {
    let dir = TempDir::new("recon");
    let path = dir.join("s");
    let rec = Recorder::new(usize::MAX);
    // Started before the server exists: reconnect=1 keeps trying.
    let _running = Running::start(
        vec![unix_client("c", &path, 1)],
        vec![Attach::Recorder("c", rec.clone())],
        RunState::Running,
    );
    std::thread::sleep(Duration::from_millis(300));
    let listener = UnixListener::bind(&path).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    wait_for("Opened", || rec.events() == vec![ChardevEvent::Opened]);
    conn.write_all(b"one").unwrap();
    wait_for("input", || rec.received() == b"one");
    drop(conn);
    wait_for("Closed", || rec.events().len() == 2);
    let (mut conn, _) = listener.accept().unwrap();
    wait_for("Opened again", || rec.events().len() == 3);
    (&rec.writer()).write_all(b"two").unwrap();
    let mut buf = [0u8; 3];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two");
}

#[test]
fn attach_errors_are_qemus() {
    let dir = TempDir::new("att");
    let ml = MainLoop::new().unwrap();
    let configs = vec![
        unix_server("plain", &dir.join("a"), false, false),
        unix_server("mux", &dir.join("b"), false, true),
    ];
    let mut chardevs = Chardevs::open(&configs, &ml).unwrap();
    chardevs.attach("plain", Recorder::new(1)).unwrap();
    let err = chardevs.attach("plain", Recorder::new(1)).err().unwrap();
    assert_eq!(err.to_string(), "Device 'plain' is in use");
    for _ in 0..4 {
        chardevs.attach("mux", Recorder::new(1)).unwrap();
    }
    let err = chardevs.attach("mux", Recorder::new(1)).err().unwrap();
    assert_eq!(
        err.to_string(),
        "too many uses of multiplexed chardev 'mux' (maximum is 4)"
    );
    let err = chardevs.attach("nope", Recorder::new(1)).err().unwrap();
    assert_eq!(err.to_string(), "chardev \"nope\" not found");
    let err = chardevs
        .add(&unix_server("plain", &dir.join("c"), false, false), None)
        .unwrap_err();
    assert!(matches!(err, ChardevError::DuplicateId(_)));
    assert_eq!(err.to_string(), "Duplicate ID 'plain' for chardev");
}

#[test]
fn bind_errors_are_qemus() {
    let ml = MainLoop::new().unwrap();
    let err = Chardevs::open(
        &[unix_server(
            "m",
            std::path::Path::new("/nonexistdir/s"),
            false,
            false,
        )],
        &ml,
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "Failed to bind socket to /nonexistdir/s: No such file or directory"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Chardevs::open(&[tcp_server("t", port, false)], &ml)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "Failed to find an available port: Address already in use"
    );
}

#[test]
fn mux_on_a_socket_switches_focus_and_handles_escapes() {
    let dir = TempDir::new("mux");
    let path = dir.join("s");
    let first = Recorder::new(usize::MAX);
    let second = Recorder::new(usize::MAX);
    let running = Running::start(
        vec![unix_server("m", &path, false, true)],
        vec![
            Attach::Recorder("m", first.clone()),
            Attach::Recorder("m", second.clone()),
        ],
        RunState::Running,
    );
    let mut client = connect_unix(&path).short_timeout();
    use ChardevEvent::*;
    // The one attached last has the focus; both learn about the connection.
    wait_for("opened", || second.events() == vec![FocusIn, Opened]);
    assert_eq!(first.events(), vec![FocusIn, FocusOut, Opened]);
    client.write_all(b"to second\x01c").unwrap();
    wait_for("focus switch", || first.events().last() == Some(&FocusIn));
    assert_eq!(second.received(), b"to second");
    assert_eq!(second.events().last(), Some(&FocusOut));
    client.write_all(b"to first \x01\x01 \x01b\x01z.").unwrap();
    wait_for("first input", || first.received() == b"to first \x01 .");
    assert_eq!(first.events().last(), Some(&Break));
    client.write_all(b"\x01h").unwrap();
    let help = read_quiet(&mut client, QUIET, Duration::from_secs(5));
    assert!(
        help.starts_with(b"\n\rC-a h    print this help\n\r"),
        "{help:?}"
    );
    assert!(help.ends_with(b"C-a C-a  sends C-a\n\r"));
    client.write_all(b"\x01s").unwrap();
    let commit = read_quiet(&mut client, QUIET, Duration::from_secs(5));
    assert!(
        String::from_utf8_lossy(&commit).contains("not supported by vmscope"),
        "{commit:?}"
    );
    // Both front ends write to the one backend; Ctrl-a t stamps lines.
    client.write_all(b"\x01t").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    (&first.writer()).write_all(b"a\nb\n").unwrap();
    (&second.writer()).write_all(b"c\n").unwrap();
    let stamped =
        String::from_utf8(read_quiet(&mut client, QUIET, Duration::from_secs(5))).unwrap();
    let lines: Vec<&str> = stamped.split('\n').collect();
    assert_eq!(lines[0], "a");
    assert!(
        lines[1].starts_with("[00:00:0") && lines[1].ends_with("] b"),
        "{stamped:?}"
    );
    assert!(lines[2].ends_with("] c"), "{stamped:?}");
    client.write_all(b"\x01t\x01x").unwrap();
    let bye = read_quiet(&mut client, QUIET, Duration::from_secs(5));
    assert!(bye.ends_with(b"QEMU: Terminated\n\r"), "{bye:?}");
    assert_eq!(running.wait_exit(Duration::from_secs(5)), 0);
}

#[test]
fn hmp_survives_a_ten_megabyte_line() {
    let dir = TempDir::new("bigline");
    let path = dir.join("m");
    let _running = Running::start(
        vec![unix_server("mon", &path, false, false)],
        vec![Attach::Hmp("mon")],
        RunState::Prelaunch,
    );
    let client = connect_unix(&path);
    let mut reader = client.try_clone().unwrap().short_timeout();
    let drain = std::thread::spawn(move || {
        read_until(
            &mut reader,
            Duration::from_secs(5),
            Duration::from_secs(60),
            |b| b.ends_with(b"VM status: paused (prelaunch)\r\n(qemu) "),
        )
    });
    let mut writer = client;
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..10 {
        writer.write_all(&chunk).unwrap();
    }
    writer.write_all(b"\ninfo status\n").unwrap();
    let out = drain.join().unwrap();
    // QEMU's line limit: the command is cut at 4095 bytes.
    let unknown = format!("unknown command: '{}'\r\n", "a".repeat(4095));
    assert!(
        String::from_utf8_lossy(&out).contains(&unknown),
        "no unknown-command line"
    );
    assert!(out.ends_with(b"VM status: paused (prelaunch)\r\n(qemu) "));
}
