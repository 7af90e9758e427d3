//! Helpers for the QMP tests: masking what legitimately differs between QEMU 7.2 and
//! vmscope, and a scripted QMP conversation.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::chardev_common::{connect_unix, read_quiet, read_until, ShortTimeout};

pub const QUIET: Duration = Duration::from_millis(250);

/// Shuts down the write side of a connection.
pub trait HalfClose {
    fn half_close(&mut self);
}

impl HalfClose for UnixStream {
    fn half_close(&mut self) {
        self.shutdown(Shutdown::Write).unwrap();
    }
}

impl HalfClose for TcpStream {
    fn half_close(&mut self) {
        self.shutdown(Shutdown::Write).unwrap();
    }
}

/// Replaces the digits after each `key` (e.g. `"seconds": `) by `N`.
fn mask_number_after(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(key) {
        out.push_str(&rest[..pos + key.len()]);
        rest = &rest[pos + key.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push('N');
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks what legitimately differs: the micro version and package string, timestamps,
/// and the vCPU thread id (`"thread-id": N, "props"`; the topology `thread-id` is kept).
pub fn mask_qmp(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut text = mask_number_after(&text, "\"micro\": ");
    while let Some(pos) = text.find("\"package\": \"") {
        let start = pos + "\"package\": \"".len();
        let end = start + text[start..].find('"').expect("package string ends");
        text.replace_range(pos..end + 1, "\"package\": PKG");
    }
    let text = mask_number_after(&text, "\"seconds\": ");
    let text = mask_number_after(&text, "\"microseconds\": ");
    mask_vcpu_thread_ids(&text)
}

/// The vCPU thread ids of `query-cpus-fast`: each `"thread-id": N` directly followed by
/// `"props"`, the number (a host TID) replaced by `TID`. Returns the text and the ids.
pub fn vcpu_thread_ids(text: &str) -> (String, Vec<String>) {
    const KEY: &str = "\"thread-id\": ";
    let mut out = String::new();
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(KEY) {
        out.push_str(&rest[..pos + KEY.len()]);
        rest = &rest[pos + KEY.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let after = rest[end..].trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if end > 0 && after.starts_with("\"props\"") {
            ids.push(rest[..end].to_string());
            out.push_str("TID");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    (out, ids)
}

fn mask_vcpu_thread_ids(text: &str) -> String {
    vcpu_thread_ids(text).0
}

/// One QMP conversation: read the greeting, then send each chunk and read until quiet.
/// Markers between chunks make mismatches easy to locate. `half_close` shuts the write
/// side down after the last chunk and reads until the server closes or goes quiet.
pub fn converse_qmp(path: &Path, chunks: &[&[u8]], half_close: bool) -> Vec<u8> {
    let s = connect_unix(path).short_timeout();
    converse_qmp_stream(s, chunks, half_close)
}

/// [`converse_qmp`] on a connected stream.
pub fn converse_qmp_stream<S: Read + Write + HalfClose>(
    mut s: S,
    chunks: &[&[u8]],
    half_close: bool,
) -> Vec<u8> {
    // The greeting is complete when its braces balance (it may span lines: pretty=on).
    let mut out = read_until(&mut s, QUIET, Duration::from_secs(10), |b| {
        let count = |c: u8| b.iter().filter(|&&x| x == c).count();
        b.ends_with(b"\r\n") && count(b'{') == count(b'}')
    });
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend_from_slice(
            format!("<<{}>>", String::from_utf8_lossy(chunk).escape_debug()).as_bytes(),
        );
        s.write_all(chunk).unwrap();
        if half_close && i + 1 == chunks.len() {
            s.half_close();
        }
        out.extend(read_quiet(&mut s, QUIET, Duration::from_secs(10)));
    }
    out
}
