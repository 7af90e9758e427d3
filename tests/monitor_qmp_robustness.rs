//! QMP under hostile or clumsy clients: a 10 MB request, binary garbage, many short
//! connections, a client that vanishes mid-reply. The monitor keeps serving and never
//! panics; per-connection state (negotiation, partial input) does not leak to the next
//! client.

mod chardev_common;
mod common;

use std::io::{Read, Write};
use std::time::Duration;

use chardev_common::*;
use vmscope::monitor::RunState;

fn start(tag: &str) -> (TempDir, std::path::PathBuf, Running) {
    let dir = TempDir::new(tag);
    let sock = dir.join("qmp.sock");
    let running = Running::start(
        vec![unix_server("qmp", &sock, false, false)],
        vec![Attach::Qmp("qmp")],
        RunState::Prelaunch,
    );
    (dir, sock, running)
}

/// Sends `request` and reads until a full reply line arrives.
fn ask(s: &mut std::os::unix::net::UnixStream, request: &[u8]) -> String {
    s.write_all(request).unwrap();
    let out = read_until(s, Duration::from_secs(5), Duration::from_secs(20), |b| {
        b.ends_with(b"\r\n")
    });
    String::from_utf8_lossy(&out).into_owned()
}

fn greeted(sock: &std::path::Path) -> std::os::unix::net::UnixStream {
    let mut s = connect_unix(sock).short_timeout();
    let greeting = read_until(
        &mut s,
        Duration::from_secs(5),
        Duration::from_secs(10),
        |b| b.ends_with(b"\r\n"),
    );
    assert!(greeting.starts_with(b"{\"QMP\": "), "{greeting:?}");
    s
}

#[test]
fn ten_megabyte_request_and_garbage_then_still_serving() {
    let (_dir, sock, _running) = start("qmprobust");
    let mut s = greeted(&sock);
    assert_eq!(
        ask(&mut s, b"{\"execute\": \"qmp_capabilities\"}\n"),
        "{\"return\": {}}\r\n"
    );
    // A 10 MB id is echoed whole.
    let big = "x".repeat(10 << 20);
    let reply = ask(
        &mut s,
        format!("{{\"execute\": \"query-name\", \"id\": \"{big}\"}}\n").as_bytes(),
    );
    assert_eq!(
        reply.len(),
        "{\"return\": {}, \"id\": \"\"}\r\n".len() + big.len()
    );
    // Binary garbage: every invalid byte is answered with an error, nothing else breaks.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i * 7919 % 251) as u8 | 0x80)
        .collect();
    s.write_all(&garbage).unwrap();
    s.write_all(b"\n{\"execute\": \"query-status\"}\n").unwrap();
    const STATUS: &[u8] =
        b"{\"return\": {\"status\": \"prelaunch\", \"singlestep\": false, \"running\": false}}\r\n";
    let out = read_until(
        &mut s,
        Duration::from_secs(5),
        Duration::from_secs(20),
        |b| b.ends_with(STATUS),
    );
    assert!(
        out.ends_with(STATUS),
        "{:?}",
        String::from_utf8_lossy(&out[out.len().saturating_sub(300)..])
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.lines().count() > 1,
        "garbage produced errors: {text:?}"
    );
    assert!(text.lines().rev().skip(1).all(
        |l| l.starts_with("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error")
    ));
}

#[test]
fn many_short_connections_each_start_afresh() {
    let (_dir, sock, _running) = start("qmpcycles");
    for i in 0..200 {
        let mut s = greeted(&sock);
        if i % 2 == 0 {
            // Negotiate and leave half a request behind.
            assert_eq!(
                ask(&mut s, b"{\"execute\": \"qmp_capabilities\"}\n"),
                "{\"return\": {}}\r\n"
            );
            s.write_all(b"{\"execute\": \"query-").unwrap();
        } else {
            // The previous client's negotiation and partial input are gone.
            assert_eq!(
                ask(&mut s, b"{\"execute\": \"query-status\"}\n"),
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
            );
        }
    }
}

#[test]
fn client_vanishing_mid_reply_does_not_disturb_the_next() {
    let (_dir, sock, _running) = start("qmpvanish");
    {
        let mut s = greeted(&sock);
        s.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
            .unwrap();
        // Ask for a large reply and leave without reading it.
        let big = "y".repeat(4 << 20);
        s.write_all(format!("{{\"execute\": \"query-name\", \"id\": \"{big}\"}}\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut s = greeted(&sock);
    assert_eq!(
        ask(&mut s, b"{\"execute\": \"qmp_capabilities\", \"id\": 2}\n"),
        "{\"return\": {}, \"id\": 2}\r\n"
    );
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing of the old reply: {} bytes",
        rest.len()
    );
}

#[test]
fn replies_held_for_a_slow_reader_all_arrive() {
    let (_dir, sock, _running) = start("qmpslow");
    let mut s = greeted(&sock);
    assert_eq!(
        ask(&mut s, b"{\"execute\": \"qmp_capabilities\"}\n"),
        "{\"return\": {}}\r\n"
    );
    // Three 2 MB replies asked for at once overflow the chardev's 1 MB queue while the
    // client does not read; all must arrive, in order, once it reads.
    let mut requests = Vec::new();
    for i in 0..3 {
        let id = format!("{i}").repeat(2 << 20);
        requests.extend_from_slice(
            format!("{{\"execute\": \"query-name\", \"id\": \"{id}\"}}\n").as_bytes(),
        );
    }
    requests.extend_from_slice(b"{\"execute\": \"query-name\", \"id\": \"end\"}\n");
    let writer = {
        let mut w = s.try_clone().unwrap();
        // A monitor that stopped reading for good makes this fail instead of hang.
        w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        std::thread::spawn(move || w.write_all(&requests))
    };
    std::thread::sleep(Duration::from_millis(500));
    let out = read_until(
        &mut s,
        Duration::from_secs(5),
        Duration::from_secs(30),
        |b| b.ends_with(b"\"id\": \"end\"}\r\n"),
    );
    writer
        .join()
        .unwrap()
        .expect("the monitor reads all requests");
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{} bytes", out.len());
    for (i, line) in lines[..3].iter().enumerate() {
        let id = format!("{i}").repeat(2 << 20);
        assert_eq!(*line, format!("{{\"return\": {{}}, \"id\": \"{id}\"}}"));
    }
}
