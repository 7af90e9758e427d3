//! `query-qmp-schema` and libguestfs's probe of its hypervisor, vmscope binary against QEMU
//! 7.2 with the same command lines:
//!
//! * every `SchemaInfo` entry vmscope reports appears byte for byte (key order included)
//!   in QEMU 7.2's reply, each command of `query-commands` has its entry, and every type
//!   reference resolves inside vmscope's reply;
//! * libguestfs's probe (`-display none -help`, `-display none -machine accel=kvm:tcg
//!   -device ?`, and the QMP `query-qmp-schema` / `query-kvm` conversations over
//!   `-qmp stdio`) succeeds as for QEMU, with the same reply sequence.
//!
//! Skips when /dev/kvm or QEMU 7.2 is missing.

mod chardev_common;
mod common;
mod monitor_qmp_common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chardev_common::qemu_available;
use monitor_qmp_common::mask_qmp;
use serde_json::Value;

/// libguestfs's QMP probe flags.
const PROBE_ARGS: &[&str] = &[
    "-display",
    "none",
    "-machine",
    "accel=kvm:tcg",
    "-qmp",
    "stdio",
];

fn programs() -> [&'static str; 2] {
    [env!("CARGO_BIN_EXE_vmscope"), "qemu-system-x86_64"]
}

/// Runs `program args` with `input` on stdin; returns (stdout, exit status).
fn run(program: &str, args: &[&str], input: &[u8]) -> (Vec<u8>, Option<i32>) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(output)) => (output.stdout, output.status.code()),
        _ => {
            // SAFETY: plain kill(2) of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{program} did not finish");
        }
    }
}

fn skip() -> bool {
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return true;
    }
    false
}

/// Prints a JSON value the way QEMU does (`", "` and `": "` separators), keeping the
/// order of object members as parsed.
fn qemu_style(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(qemu_style).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), qemu_style(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// The QMP reply lines of one `-qmp stdio` run.
fn qmp_lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn schema_is_qemus_for_the_commands_vmscope_has() {
    let name = "schema_is_qemus_for_the_commands_vmscope_has";
    if !common::kvm::require(name) || skip() {
        return;
    }
    let input = b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-qmp-schema\"}\n{\"execute\": \"query-commands\"}\n{\"execute\": \"quit\"}\n";
    let [ours, theirs] = programs().map(|program| {
        let (out, status) = run(program, PROBE_ARGS, input);
        assert_eq!(status, Some(0), "{program}");
        qmp_lines(&out)
    });
    let qemu_schema = &theirs[2];
    assert!(
        qemu_schema.starts_with("{\"return\": [{"),
        "QEMU: {qemu_schema:.200}"
    );
    let reply: Value = serde_json::from_str(&ours[2]).expect("vmscope's schema reply is JSON");
    let entries = reply["return"].as_array().expect("a list");
    let names: HashSet<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for entry in entries {
        let text = qemu_style(entry);
        assert!(
            qemu_schema.contains(&format!("{text}, ")) || qemu_schema.contains(&format!("{text}]")),
            "not in QEMU 7.2's schema: {text}"
        );
        for key in ["arg-type", "ret-type", "element-type"] {
            if let Some(reference) = entry.get(key).and_then(Value::as_str) {
                assert!(names.contains(reference), "{text}: {reference} missing");
            }
        }
        for list in ["members", "variants"] {
            for item in entry
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(reference) = item.get("type").and_then(Value::as_str) {
                    assert!(names.contains(reference), "{text}: {reference} missing");
                }
            }
        }
    }
    // Exactly the commands vmscope has, and the events it sends.
    let commands: Value = serde_json::from_str(&ours[3]).unwrap();
    let mut listed: Vec<&str> = commands["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let mut described: Vec<&str> = entries
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    listed.sort();
    described.sort();
    assert_eq!(described, listed);
    for event in ["SHUTDOWN", "RESET", "STOP", "RESUME"] {
        assert!(
            entries
                .iter()
                .any(|e| e["name"] == event && e["meta-type"] == "event"),
            "{event}"
        );
    }
    common::kvm::record_use(name);
}

#[test]
fn libguestfs_probe_succeeds_as_for_qemu() {
    let name = "libguestfs_probe_succeeds_as_for_qemu";
    if !common::kvm::require(name) || skip() {
        return;
    }
    // guestfs_int_test_qemu: `-help` (version from its first line) and `-device ?`.
    let [ours_help, qemu_help] = programs().map(|program| {
        let (out, status) = run(program, &["-display", "none", "-help"], b"");
        assert_eq!(status, Some(0), "{program} -help");
        String::from_utf8_lossy(&out).into_owned()
    });
    let version = |help: &str| {
        help.lines()
            .next()
            .unwrap_or("")
            .split(' ')
            .nth(3)
            .map(str::to_string)
    };
    assert_eq!(
        version(&ours_help).map(|v| v.split('.').take(2).collect::<Vec<_>>().join(".")),
        version(&qemu_help).map(|v| v.split('.').take(2).collect::<Vec<_>>().join("."))
    );
    let [ours_devices, qemu_devices] = programs().map(|program| {
        let (out, status) = run(
            program,
            &[
                "-display",
                "none",
                "-machine",
                "accel=kvm:tcg",
                "-device",
                "?",
            ],
            b"",
        );
        assert_eq!(status, Some(0), "{program} -device ?");
        String::from_utf8_lossy(&out).into_owned()
    });
    for line in ours_devices.lines().filter(|l| l.starts_with("name ")) {
        assert!(
            qemu_devices.contains(line),
            "not a QEMU 7.2 device line: {line}"
        );
    }
    // The QMP probes: one for the schema, one for KVM.
    for probe in ["query-qmp-schema", "query-kvm"] {
        let input = format!(
            "{{ \"execute\": \"qmp_capabilities\" }} {{ \"execute\": \"{probe}\" }} {{ \"execute\": \"quit\" }}\n"
        );
        let [ours, theirs] = programs().map(|program| {
            let (out, status) = run(program, PROBE_ARGS, input.as_bytes());
            assert_eq!(status, Some(0), "{program} {probe}");
            let lines = qmp_lines(&out);
            // Each reply is one JSON document per line, as libguestfs parses them.
            for line in &lines {
                serde_json::from_str::<Value>(line).expect("a JSON line");
            }
            lines
        });
        let shape = |lines: &[String]| {
            lines
                .iter()
                .map(|l| {
                    if l.starts_with("{\"return\": [") {
                        "{\"return\": [...]}".to_string()
                    } else {
                        mask_qmp(l.as_bytes())
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&ours), shape(&theirs), "{probe}");
    }
    common::kvm::record_use(name);
}
