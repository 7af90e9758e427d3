//! `query-chardev` and HMP `info chardev` through the vmscope binary, compared with QEMU
//! 7.2 given the same command line: every backend kind (null, file, pipe, stdio, unix and
//! tcp servers and clients, telnet, a mux shared by the serial port and a monitor), with
//! peers connecting and leaving, so the `filename` texts (`disconnected:` forms,
//! `<local> <-> <peer>`), `frontend-open` and QEMU's listing order are all compared.
//!
//! Only ephemeral TCP ports (the client side of each connection) are masked. Skips when
//! /dev/kvm or QEMU 7.2 is missing.

mod chardev_common;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chardev_common::*;

/// A line-oriented QMP client.
struct QmpLines {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QmpLines {
    fn connect(path: &Path) -> QmpLines {
        let stream = connect_unix(path);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut client = QmpLines {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = client.line();
        assert!(greeting.starts_with("{\"QMP\""), "greeting: {greeting}");
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("QMP reply");
        line
    }

    /// Sends one request and returns its reply line (events are skipped).
    fn execute(&mut self, request: &str) -> String {
        self.writer.write_all(request.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed after {request}");
            if !line.starts_with("{\"timestamp\"") {
                return line;
            }
        }
    }
}

/// Replaces every `127.0.0.1:<port>` whose port is not one of `fixed` by `127.0.0.1:EPH`.
fn mask_ephemeral_ports(text: &str, fixed: &[u16]) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(HOST) {
        out.push_str(&rest[..pos + HOST.len()]);
        rest = &rest[pos + HOST.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        match rest[..end].parse::<u16>() {
            Ok(port) if !fixed.contains(&port) => out.push_str("EPH"),
            _ => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

struct Ports {
    tcp_server: u16,
    telnet_server: u16,
    tcp_client_target: u16,
}

/// Runs the scenario against `program` and returns the masked transcript.
fn scenario(program: &str, accel: Option<&str>, dir: &TempDir, ports: &Ports) -> String {
    // The peers the two client chardevs connect to.
    let _ = std::fs::remove_file(dir.join("peer.sock"));
    let unix_peer = UnixListener::bind(dir.join("peer.sock")).unwrap();
    let tcp_peer = TcpListener::bind(("127.0.0.1", ports.tcp_client_target)).unwrap();
    let qmp_sock = dir.join("qmp.sock");
    let path = |name: &str| dir.join(name).display().to_string();
    let args: Vec<String> = [
        "-S",
        "-display",
        "none",
        "-nodefaults",
        "-m",
        "64",
        "-chardev",
        "null,id=c_null",
        "-chardev",
        &format!("file,id=c_file,path={}", path("out.txt")),
        "-chardev",
        &format!("pipe,id=c_pipe,path={}", path("pipe")),
        "-chardev",
        "stdio,id=c_stdio",
        "-chardev",
        &format!(
            "socket,id=c_unixs,path={},server=on,wait=off",
            path("server.sock")
        ),
        "-chardev",
        &format!(
            "socket,id=c_tcps,host=127.0.0.1,port={},server=on,wait=off",
            ports.tcp_server
        ),
        "-chardev",
        &format!(
            "socket,id=c_tel,host=127.0.0.1,port={},server=on,wait=off,telnet=on",
            ports.telnet_server
        ),
        "-chardev",
        &format!("socket,id=c_unixc,path={}", path("peer.sock")),
        "-chardev",
        &format!(
            "socket,id=c_tcpc,host=127.0.0.1,port={}",
            ports.tcp_client_target
        ),
        "-chardev",
        &format!(
            "socket,id=c_mux,path={},server=on,wait=off,mux=on",
            path("mux.sock")
        ),
        "-serial",
        "chardev:c_mux",
        "-monitor",
        "chardev:c_mux",
        "-mon",
        "chardev=c_tel,mode=readline",
        "-device",
        "isa-debugcon,chardev=c_file",
        "-qmp",
        &format!("unix:{},server,nowait", qmp_sock.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cmd = Command::new(program);
    if let Some(accel) = accel {
        cmd.args(["-accel", accel]);
    }
    let child = cmd
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut child = Background(child);
    let mut qmp = QmpLines::connect(&qmp_sock);
    let mut transcript = String::new();
    let mut run = |qmp: &mut QmpLines, request: &str| {
        transcript.push_str(&format!("<<{request}>>\n"));
        transcript.push_str(&qmp.execute(request));
    };
    run(&mut qmp, "{\"execute\": \"qmp_capabilities\"}");
    let query = "{\"execute\": \"query-chardev\"}";
    let info = "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info chardev\"}}";
    run(&mut qmp, query);

    // Peers arrive on the servers (c_unixs and c_tcps have no front end, so they never
    // read and never notice a peer leaving; that is QEMU's behaviour too).
    let _unix_client = connect_unix(&dir.join("server.sock"));
    let _tcp_client = TcpStream::connect(("127.0.0.1", ports.tcp_server)).unwrap();
    let mut telnet = TcpStream::connect(("127.0.0.1", ports.telnet_server)).unwrap();
    telnet
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The HMP monitor on c_tel greets the client once the connection is taken.
    let banner = read_until(
        &mut telnet,
        Duration::from_secs(5),
        Duration::from_secs(10),
        |b| b.ends_with(b"(qemu) "),
    );
    assert!(banner.ends_with(b"(qemu) "), "telnet banner: {banner:?}");
    wait_accepted(&mut qmp, "c_unixs");
    wait_accepted(&mut qmp, "c_tcps");
    run(&mut qmp, query);
    run(&mut qmp, info);

    // The telnet client leaves: its monitor reads end-of-file and the chardev shows its
    // disconnected form again.
    drop(telnet);
    let deadline = Instant::now() + Duration::from_secs(10);
    let disconnected = format!("disconnected:telnet:127.0.0.1:{}", ports.telnet_server);
    while !qmp.execute(query).contains(&disconnected) {
        assert!(Instant::now() < deadline, "telnet peer never left");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(&mut qmp, query);
    run(&mut qmp, info);
    run(&mut qmp, "{\"execute\": \"quit\"}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{program} did not quit");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(unix_peer);
    drop(tcp_peer);
    mask_ephemeral_ports(
        &transcript,
        &[
            ports.tcp_server,
            ports.telnet_server,
            ports.tcp_client_target,
        ],
    )
    .replace(&dir.0.display().to_string(), "DIR")
}

/// Waits until `label`'s server has taken its peer (the accept runs in the main loop).
fn wait_accepted(qmp: &mut QmpLines, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = qmp.execute("{\"execute\": \"query-chardev\"}");
        let entry_start = reply.find(&format!("\"label\": \"{label}\"")).unwrap();
        let entry = &reply[..entry_start];
        let entry = &entry[entry.rfind('{').unwrap()..];
        if !entry.contains("disconnected:") {
            return;
        }
        assert!(Instant::now() < deadline, "{label} never took its peer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a process when the test ends, however it ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn query_chardev_and_info_chardev_match_qemu() {
    let name = "query_chardev_and_info_chardev_match_qemu";
    if !common::kvm::require(name) {
        return;
    }
    if !qemu_available() {
        eprintln!("SKIPPED: qemu-system-x86_64 7.2 is not installed");
        return;
    }
    let dir = TempDir::new("chardevdiff");
    mkfifo(&dir.join("pipe.in"));
    mkfifo(&dir.join("pipe.out"));
    let ports = Ports {
        tcp_server: free_tcp_port(),
        telnet_server: free_tcp_port(),
        tcp_client_target: free_tcp_port(),
    };
    let qemu = scenario("qemu-system-x86_64", Some("tcg"), &dir, &ports);
    let ours = scenario(env!("CARGO_BIN_EXE_vmscope"), None, &dir, &ports);
    assert!(
        qemu.contains("\"filename\": \"mux\", \"label\": \"c_mux\""),
        "QEMU transcript: {qemu}"
    );
    assert_eq!(ours, qemu, "\nvmscope:\n{ours}\nQEMU 7.2:\n{qemu}");
    common::kvm::record_use(name);
}

#[test]
fn masking_keeps_fixed_ports() {
    assert_eq!(
        mask_ephemeral_ports("tcp:127.0.0.1:4444 <-> 127.0.0.1:51234.", &[4444]),
        "tcp:127.0.0.1:4444 <-> 127.0.0.1:EPH."
    );
}
