//! QMP differential tests: the same bytes sent to QEMU 7.2 (`-accel tcg -S -nodefaults`,
//! `-qmp unix:…,server,nowait`) and to vmscope's QMP monitor (main loop + chardev + QMP
//! over a mock machine in `prelaunch`), the replies compared byte for byte with only the
//! version micro/package, event timestamps and vCPU thread ids masked.
//!
//! Each test skips with a message when QEMU 7.2 is not installed.

mod chardev_common;
mod common;
mod monitor_qmp_common;

use chardev_common::*;
use monitor_qmp_common::*;
use vmscope::monitor::RunState;

fn skip_without_qemu() -> bool {
    if qemu_available() {
        return false;
    }
    eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
    true
}

/// Runs the conversation against QEMU and vmscope (in parallel); returns masked
/// (qemu, vmscope) transcripts.
fn both(chunks: &'static [&'static [u8]], half_close: bool) -> (String, String) {
    let dir = TempDir::new("qmpdiff");
    let qemu_sock = dir.join("qemu.sock");
    let ours_sock = dir.join("ours.sock");
    let _qemu = Qemu::start(&[
        "-qmp",
        &format!("unix:{},server,nowait", qemu_sock.display()),
    ]);
    let _ours = Running::start(
        vec![unix_server("compat_monitor0", &ours_sock, false, false)],
        vec![Attach::Qmp("compat_monitor0")],
        RunState::Prelaunch,
    );
    let qemu_thread = std::thread::spawn(move || converse_qmp(&qemu_sock, chunks, half_close));
    let ours = converse_qmp(&ours_sock, chunks, half_close);
    let qemu = qemu_thread.join().unwrap();
    (mask_qmp(&qemu), mask_qmp(&ours))
}

fn assert_same(chunks: &'static [&'static [u8]]) {
    let (qemu, ours) = both(chunks, false);
    assert!(qemu.starts_with("{\"QMP\": "), "QEMU transcript: {qemu:?}");
    assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
}

const CAPS: &[u8] = b"{\"execute\": \"qmp_capabilities\"}\n";

#[test]
fn greeting_and_negotiation_errors() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        b"{\"execute\": \"query-status\"}\n",
        b"{\"execute\": \"nope\", \"id\": 7}\n",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"foo\"]}}\n",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [1]}}\n",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": \"oob\"}}\n",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"x\": 1}}\n",
        b"{\"arguments\": {}}\n",
        b"{\"execute\": \"qmp_capabilities\", \"id\": \"neg\"}\n",
        b"{\"execute\": \"qmp_capabilities\", \"id\": \"again\"}\n",
        b"{\"execute\": \"query-status\", \"id\": 1}\n",
    ]);
}

#[test]
fn commands_and_their_errors() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        CAPS,
        b"{\"execute\": \"query-version\"}\n",
        b"{\"execute\": \"query-status\"}\n",
        b"{\"execute\": \"query-name\"}\n",
        b"{\"execute\": \"query-cpus-fast\"}\n",
        b"{\"execute\": \"stop\"}\n",
        b"{\"execute\": \"query-status\"}\n",
        b"{\"execute\": \"cont\", \"id\": \"c1\"}\n",
        b"{\"execute\": \"query-status\"}\n",
        b"{\"execute\": \"cont\"}\n",
        b"{\"execute\": \"stop\"}\n",
        b"{\"execute\": \"stop\"}\n",
        b"{\"execute\": \"query-status\"}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info status\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"foo\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"cont\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"stop x\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"stop\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info status\", \"cpu-index\": 0}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info status\", \"cpu-index\": 5}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": 1}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"x\", \"cpu-index\": \"a\"}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"x\", \"cpu-index\": 1.5}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"x\", \"zz\": 1}}\n",
        b"{\"execute\": \"query-status\", \"arguments\": {\"a\": 1}}\n",
        b"{\"execute\": \"nope\", \"id\": \"x\"}\n",
        b"{\"execute\": \"query-status\", \"arguments\": {}, \"id\": {\"b\": 1, \"a\": [1, \"x\", null, true, 2.5]}}\n",
        b"{\"execute\": \"query-name\", \"id\": \"nop\xc3\xa9\\t\\u0000\\/\xf0\x9f\x98\x80\"}\n",
        b"{\"execute\": \"query-status\", \"id\": [1e300, 0.1, -0.0, 100000000000000000000, 18446744073709551615, -9223372036854775809, 1.0]}\n",
        b"{\"execute\": \"qmp_capabilities\"}\n",
    ]);
}

#[test]
fn malformed_requests() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        CAPS,
        b"[1]\n",
        b"\"x\"\n",
        b"42\n",
        b"{}\n",
        b"{\"execute\": 1}\n",
        b"{\"execute\": \"query-status\", \"arguments\": []}\n",
        b"{\"execute\": \"query-status\", \"foo\": 1}\n",
        b"{\"exec-oob\": \"query-status\"}\n",
        b"{\"execute\": \"query-status\", \"exec-oob\": \"stop\"}\n",
        b"{\"a\": 1, \"a\": 2}\n",
        b"}\n",
        b"]\n",
        b"{\"execute\": \n",
        b"}\n",
        b"\xff{\"execute\": \"query-status\"}\n",
        b"{\"execute\": \"query-status\"\x01}\n",
        b"{\"execute\": \"query-status\" x}\n",
        b"{\"execute\": \"query-status\" X}\n",
        b"{\"execute\": tru}\n",
        b"{\"execute\": \"\\x\"}\n",
        b"{\"execute\": \"\\uD800\"}\n",
        b"{\"execute\": \"\xc3\"}\n",
        b"{1: 2}\n",
        b"{\"execute\" \"stop\"}\n",
        b"[1 2]\n",
        b"@#$ garbage {\"execute\": \"query-name\"}\n",
        b"\x00\x00{\"execute\": \"query-name\"}\n",
        b"012\n",
        b"{\"execute\": \"query-name\", \"id\": 1e400}\n",
    ]);
}

#[test]
fn single_quotes_several_per_line_and_split_reads() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        b"{'execute':'qmp_capabilities'} {'execute': 'query-status', 'id': 'a\"b'}{\"execute\":\"query-name\"}\n",
        b"{'execute': 'query-stat",
        b"us', 'id'",
        b": 3}",
        b"\n{'execute': 'stop'} {'execute': 'cont'} {'execute': 'query-status'}\n",
    ]);
}

#[test]
fn oob_capability() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}\n",
        b"{\"exec-oob\": \"query-status\", \"id\": 1}\n",
        b"{\"exec-oob\": 1}\n",
        b"{\"execute\": \"query-status\", \"exec-oob\": \"stop\"}\n",
        b"{\"exec-oob\": \"nope\"}\n",
    ]);
}

#[test]
fn quit_sends_shutdown_before_its_reply() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[CAPS, b"{\"execute\": \"quit\", \"id\": 9}\n"]);
}

#[test]
fn half_closed_client_still_gets_every_reply() {
    if skip_without_qemu() {
        return;
    }
    let (qemu, ours) = both(
        &[b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"stop\"}\n{\"execute\": \"cont\"}\n{\"execute\": \"query-status\"}\n"],
        true,
    );
    assert!(qemu.contains("\"status\": \"running\""), "QEMU: {qemu}");
    assert_eq!(ours, qemu);
}

#[test]
fn query_commands_lists_ours_in_qemus_order() {
    if skip_without_qemu() {
        return;
    }
    let (qemu, ours) = both(&[CAPS, b"{\"execute\": \"query-commands\"}\n"], false);
    let names = |text: &str| -> Vec<String> {
        text.split("{\"name\": \"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect()
    };
    let ours_names = names(&ours);
    assert!(ours_names.len() >= 11, "{ours}");
    let qemu_filtered: Vec<String> = names(&qemu)
        .into_iter()
        .filter(|n| ours_names.contains(n))
        .collect();
    assert_eq!(
        ours_names, qemu_filtered,
        "every command exists in QEMU, same order"
    );
}

/// One step of a multi-monitor scenario: which connection sends what.
enum Step {
    /// To QMP connection 0 or 1.
    Qmp(usize, &'static [u8]),
    Hmp(&'static [u8]),
}

/// Connects two QMP monitors and an HMP monitor, runs the steps, and returns the two QMP
/// transcripts (each step's output from both, after the step settled).
fn events_transcripts(socks: [std::path::PathBuf; 3], steps: &[Step]) -> [String; 2] {
    use std::io::Write;
    let mut qmp: Vec<_> = socks[..2]
        .iter()
        .map(|p| connect_unix(p).short_timeout())
        .collect();
    let mut hmp = connect_unix(&socks[2]).short_timeout();
    let mut out = [Vec::new(), Vec::new()];
    let settle = std::time::Duration::from_secs(5);
    let _ = read_until(&mut hmp, QUIET, settle, |b| b.ends_with(b"(qemu) "));
    for (i, s) in qmp.iter_mut().enumerate() {
        out[i].extend(read_quiet(s, QUIET, settle));
    }
    for step in steps {
        let marker = match step {
            Step::Qmp(i, bytes) => {
                qmp[*i].write_all(bytes).unwrap();
                format!("<<{i}: {}>>", String::from_utf8_lossy(bytes).escape_debug())
            }
            Step::Hmp(bytes) => {
                hmp.write_all(bytes).unwrap();
                let _ = read_quiet(&mut hmp, QUIET, settle);
                format!("<<hmp: {}>>", String::from_utf8_lossy(bytes).escape_debug())
            }
        };
        for (i, s) in qmp.iter_mut().enumerate() {
            out[i].extend_from_slice(marker.as_bytes());
            out[i].extend(read_quiet(s, QUIET, settle));
        }
    }
    [mask_qmp(&out[0]), mask_qmp(&out[1])]
}

#[test]
fn events_go_to_every_negotiated_qmp_monitor() {
    if skip_without_qemu() {
        return;
    }
    const STEPS: &[Step] = &[
        Step::Qmp(0, CAPS),
        Step::Qmp(0, b"{\"execute\": \"cont\"}\n"),
        Step::Qmp(1, CAPS),
        Step::Hmp(b"stop\n"),
        Step::Hmp(b"cont\n"),
        Step::Qmp(1, b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"stop\"}}\n"),
        Step::Qmp(1, b"{\"execute\": \"quit\"}\n"),
    ];
    let dir = TempDir::new("qmpevents");
    let qemu_socks = ["q0.sock", "q1.sock", "qh.sock"].map(|n| dir.join(n));
    let ours_socks = ["o0.sock", "o1.sock", "oh.sock"].map(|n| dir.join(n));
    let unix = |p: &std::path::Path| format!("unix:{},server,nowait", p.display());
    let _qemu = Qemu::start(&[
        "-qmp",
        &unix(&qemu_socks[0]),
        "-qmp",
        &unix(&qemu_socks[1]),
        "-monitor",
        &unix(&qemu_socks[2]),
    ]);
    let _ours = Running::start(
        vec![
            unix_server("q0", &ours_socks[0], false, false),
            unix_server("q1", &ours_socks[1], false, false),
            unix_server("h", &ours_socks[2], false, false),
        ],
        vec![Attach::Qmp("q0"), Attach::Qmp("q1"), Attach::Hmp("h")],
        RunState::Prelaunch,
    );
    let qemu = std::thread::spawn(move || events_transcripts(qemu_socks, STEPS));
    let ours = events_transcripts(ours_socks, STEPS);
    let qemu = qemu.join().unwrap();
    assert!(qemu[1].contains("\"event\": \"STOP\""), "QEMU: {qemu:?}");
    for i in 0..2 {
        assert_eq!(
            ours[i], qemu[i],
            "\nmonitor {i}, vmscope:\n{}\nQEMU 7.2:\n{}",
            ours[i], qemu[i]
        );
    }
}

#[test]
fn system_reset_sends_reset_before_its_reply() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        CAPS,
        b"{\"execute\": \"system_reset\", \"id\": 1}\n",
        b"{\"execute\": \"query-status\"}\n",
        // (Not after `cont`: QEMU's firmware then resets the guest itself, adding guest
        // RESET events that depend on the guest, not the monitor.)
        b"{\"execute\": \"system_reset\", \"arguments\": {\"x\": 1}}\n",
    ]);
}

#[test]
fn system_powerdown_sends_powerdown_before_its_reply() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        CAPS,
        b"{\"execute\": \"system_powerdown\", \"id\": 1}\n",
        b"{\"execute\": \"system_powerdown\", \"arguments\": {\"x\": 1}}\n",
        b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"system_powerdown\"}}\n",
        b"{\"execute\": \"query-status\"}\n",
    ]);
}

#[test]
fn nothing_runs_after_quit_even_on_the_same_line() {
    if skip_without_qemu() {
        return;
    }
    assert_same(&[
        b"{'execute': 'qmp_capabilities'} {'execute': 'human-monitor-command', 'arguments': {'command-line': 'quit'}} {'execute': 'query-status'} {'execute': 'query-name'}\n",
    ]);
}
