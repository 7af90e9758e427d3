//! Read-only commands: `info`, `check`, `map`, `compare`, `snapshot -l`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use vmscope::block::node::resolve_backing_path;
use vmscope::block::qcow2::{self, header::INCOMPAT_CORRUPT, header::INCOMPAT_DIRTY};
use vmscope::block::{BlockNode, ImageFormat, OpenOptions};

use super::args::{long, opt, parse, OptSpec};
use super::fmt::{hex_alt, size_to_str};
use super::{fail, open_image, pretty_json, CmdResult};

/// Everything `info` shows about one image file.
fn image_info(node: &BlockNode, filename: &str) -> Result<Map<String, Value>, String> {
    let chain = node.chain();
    let layer = &chain[0];
    let mut m = Map::new();
    let q = layer.qcow2();
    if let Some(q) = q {
        if !q.snapshots().is_empty() {
            let snaps: Vec<Value> = q
                .snapshots()
                .iter()
                .map(|s| {
                    let mut o = Map::new();
                    if let Some(ic) = s.icount {
                        if ic != u64::MAX {
                            o.insert("icount".into(), json!(ic));
                        }
                    }
                    o.insert(
                        "vm-clock-nsec".into(),
                        json!(s.vm_clock_nsec % 1_000_000_000),
                    );
                    o.insert("name".into(), json!(s.name));
                    o.insert("date-sec".into(), json!(s.date_sec));
                    o.insert("date-nsec".into(), json!(s.date_nsec));
                    o.insert(
                        "vm-clock-sec".into(),
                        json!(s.vm_clock_nsec / 1_000_000_000),
                    );
                    o.insert("id".into(), json!(s.id));
                    o.insert("vm-state-size".into(), json!(s.vm_state_size));
                    Value::Object(o)
                })
                .collect();
            m.insert("snapshots".into(), Value::Array(snaps));
        }
    }
    if let Some(f) = &layer.backing_format {
        if layer.backing_name.is_some() {
            m.insert("backing-filename-format".into(), json!(f));
        }
    }
    m.insert(
        "virtual-size".into(),
        json!(layer.virtual_size().map_err(|e| e.to_string())?),
    );
    m.insert("filename".into(), json!(filename));
    if let Some(q) = q {
        m.insert("cluster-size".into(), json!(q.cluster_size()));
    }
    m.insert("format".into(), json!(layer.format().name()));
    m.insert(
        "actual-size".into(),
        json!(layer.file().allocated_size().map_err(|e| e.to_string())?),
    );
    let mut dirty = false;
    if let Some(q) = q {
        let h = q.header();
        dirty = h.incompatible_features & INCOMPAT_DIRTY != 0;
        let mut d = Map::new();
        if h.version >= 3 {
            d.insert("compat".into(), json!("1.1"));
            d.insert("compression-type".into(), json!(h.compression_type.name()));
            d.insert("lazy-refcounts".into(), json!(h.lazy_refcounts()));
            d.insert("refcount-bits".into(), json!(h.refcount_bits()));
            d.insert(
                "corrupt".into(),
                json!(h.incompatible_features & INCOMPAT_CORRUPT != 0),
            );
            d.insert("extended-l2".into(), json!(false));
        } else {
            d.insert("compat".into(), json!("0.10"));
            d.insert("compression-type".into(), json!(h.compression_type.name()));
            d.insert("refcount-bits".into(), json!(h.refcount_bits()));
        }
        m.insert(
            "format-specific".into(),
            json!({"type": "qcow2", "data": Value::Object(d)}),
        );
    }
    if let Some(b) = &layer.backing_name {
        let full = resolve_backing_path(Path::new(filename), b);
        m.insert(
            "full-backing-filename".into(),
            json!(full.to_string_lossy()),
        );
        m.insert("backing-filename".into(), json!(b));
    }
    m.insert("dirty-flag".into(), json!(dirty));
    Ok(m)
}

fn human_info(m: &Map<String, Value>, node: &BlockNode) -> String {
    let mut s = String::new();
    let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    s += &format!("image: {}\n", get("filename").as_str().unwrap_or(""));
    s += &format!("file format: {}\n", get("format").as_str().unwrap_or(""));
    let vs = get("virtual-size").as_u64().unwrap_or(0);
    s += &format!("virtual size: {} ({} bytes)\n", size_to_str(vs), vs);
    s += &format!(
        "disk size: {}\n",
        size_to_str(get("actual-size").as_u64().unwrap_or(0))
    );
    if let Some(cs) = m.get("cluster-size") {
        s += &format!("cluster_size: {cs}\n");
    }
    if get("dirty-flag").as_bool() == Some(true) {
        s += "cleanly shut down: no\n";
    }
    if let Some(b) = m.get("backing-filename").and_then(|v| v.as_str()) {
        s += &format!("backing file: {b}");
        if let Some(full) = m.get("full-backing-filename").and_then(|v| v.as_str()) {
            if full != b {
                s += &format!(" (actual path: {full})");
            }
        }
        s += "\n";
    }
    if let Some(f) = m.get("backing-filename-format").and_then(|v| v.as_str()) {
        s += &format!("backing file format: {f}\n");
    }
    if let Some(q) = node.chain()[0].qcow2() {
        if !q.snapshots().is_empty() {
            s += "Snapshot list:\n";
            s += &snapshot_table(q.snapshots());
        }
    }
    if let Some(fs) = m.get("format-specific") {
        s += "Format specific information:\n";
        if let Some(Value::Object(d)) = fs.get("data") {
            for (k, v) in d {
                let val = match v {
                    Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                s += &format!("    {}: {}\n", k.replace('-', " "), val);
            }
        }
    }
    s
}

/// The snapshot table of `qemu-img snapshot -l` and `info`.
pub fn snapshot_table(snaps: &[qcow2::InternalSnapshot]) -> String {
    let mut s = format!(
        "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}\n",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
    );
    for sn in snaps {
        let date = format_local_time(sn.date_sec as i64);
        let ns = sn.vm_clock_nsec;
        let secs = ns / 1_000_000_000;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            (ns / 1_000_000) % 1000
        );
        let icount = match sn.icount {
            Some(i) if i != u64::MAX => i.to_string(),
            _ => String::new(),
        };
        s += &format!(
            "{:<9} {:<16} {:>8}{:>20}{:>13}{:>11}\n",
            sn.id,
            sn.name,
            size_to_str(sn.vm_state_size),
            date,
            clock,
            icount
        );
    }
    s
}

fn format_local_time(t: i64) -> String {
    let mut tm: libc::tm = unsafe_zeroed_tm();
    let tt: libc::time_t = t as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own; both pointers are valid.
    unsafe {
        libc::localtime_r(&tt, &mut tm);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn unsafe_zeroed_tm() -> libc::tm {
    // SAFETY: libc::tm is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

const INFO_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('U', "U", false),
    long("force-share", "U", false),
    long("output", "output", true),
    long("backing-chain", "backing-chain", false),
    long("image-opts", "image-opts", false),
    opt('h', "h", false),
];

pub fn info(args: &[String]) -> CmdResult {
    let p = parse(args, INFO_SPEC).map_err(fail)?;
    if p.has("image-opts") {
        return Err(fail("--image-opts is not supported yet by vmscope-img"));
    }
    let json_out = output_format(p.get("output"))?;
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let chain_mode = p.has("backing-chain");
    let mut infos = Vec::new();
    let mut human = Vec::new();
    let mut name = filename.clone();
    let mut fmt = p.get("f").map(str::to_string);
    loop {
        let node = open_image(&name, fmt.as_deref(), true, true, &OpenOptions::default())?;
        let m = image_info(&node, &name).map_err(fail)?;
        human.push(human_info(&m, &node));
        let next = m
            .get("full-backing-filename")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let next_fmt = m
            .get("backing-filename-format")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        infos.push(Value::Object(m));
        if !chain_mode {
            break;
        }
        match next {
            Some(n) => {
                if infos.len() > 100_000 {
                    return Err(fail("Backing chain too long or looping"));
                }
                name = n;
                fmt = next_fmt;
            }
            None => break,
        }
    }
    if json_out {
        let v = if chain_mode {
            Value::Array(infos)
        } else {
            infos.pop().expect("one image")
        };
        println!("{}", pretty_json(&v));
    } else {
        print!("{}", human.join("\n"));
    }
    Ok(0)
}

fn output_format(o: Option<&str>) -> Result<bool, super::CmdError> {
    match o {
        None | Some("human") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(fail(format!(
            "--output must be used with human or json as argument.\n(got '{other}')"
        ))),
    }
}

const CHECK_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('r', "r", true),
    opt('T', "T", true),
    opt('U', "U", false),
    opt('q', "q", false),
    long("force-share", "U", false),
    long("output", "output", true),
    long("image-opts", "image-opts", false),
];

fn check_json(r: &qcow2::CheckReport, filename: &str, total: u64) -> Value {
    // QEMU's (hash) order of the keys, reproduced for byte-identical output.
    let mut m = Map::new();
    m.insert("image-end-offset".into(), json!(r.image_end_offset));
    if r.compressed_clusters > 0 {
        m.insert("compressed-clusters".into(), json!(r.compressed_clusters));
    }
    m.insert("total-clusters".into(), json!(total));
    if r.corruptions_after > 0 {
        m.insert("corruptions".into(), json!(r.corruptions_after));
    }
    if r.corruptions_fixed > 0 {
        m.insert("corruptions-fixed".into(), json!(r.corruptions_fixed));
    }
    m.insert("check-errors".into(), json!(r.check_errors));
    if r.leaks_after > 0 {
        m.insert("leaks".into(), json!(r.leaks_after));
    }
    if r.leaks_fixed > 0 {
        m.insert("leaks-fixed".into(), json!(r.leaks_fixed));
    }
    if r.allocated_clusters > 0 {
        m.insert("allocated-clusters".into(), json!(r.allocated_clusters));
    }
    m.insert("filename".into(), json!(filename));
    m.insert("format".into(), json!("qcow2"));
    if r.fragmented_clusters > 0 {
        m.insert("fragmented-clusters".into(), json!(r.fragmented_clusters));
    }
    Value::Object(m)
}

fn check_human(r: &qcow2::CheckReport, total: u64) -> String {
    let mut s = String::new();
    let (c, l, e) = (r.corruptions_after, r.leaks_after, r.check_errors);
    if c == 0 && l == 0 && e == 0 {
        s += "No errors were found on the image.\n";
    } else {
        if c > 0 {
            s += &format!("\n{c} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
        }
        if l > 0 {
            s += &format!("\n{l} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
        }
        if e > 0 {
            s += &format!("\n{e} internal errors have occurred during the check.\n");
        }
    }
    if total != 0 && r.allocated_clusters != 0 {
        let a = r.allocated_clusters as f64;
        s += &format!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
            r.allocated_clusters,
            total,
            a * 100.0 / total as f64,
            r.fragmented_clusters as f64 * 100.0 / a,
            r.compressed_clusters as f64 * 100.0 / a
        );
    }
    if r.image_end_offset > 0 {
        s += &format!("Image end offset: {}\n", r.image_end_offset);
    }
    s
}

pub fn check(args: &[String]) -> CmdResult {
    let p = parse(args, CHECK_SPEC).map_err(fail)?;
    let json_out = output_format(p.get("output"))?;
    let quiet = p.has("q");
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let (fix_leaks, fix_errors) = match p.get("r") {
        None => (false, false),
        Some("leaks") => (true, false),
        Some("all") => (true, true),
        Some(_) => {
            return Err(fail(
                "Invalid option for -r. Use -r leaks or -r all (got an unknown value)",
            ))
        }
    };
    let fix = fix_leaks || fix_errors;
    let opts = OpenOptions {
        auto_read_only: !fix,
        ..Default::default()
    };
    let node = match open_image(filename, p.get("f"), !fix, true, &opts) {
        Ok(n) => n,
        Err(e) => return Err(e.with_code(1)),
    };
    let chain = node.chain();
    let Some(q) = chain[0].qcow2() else {
        eprintln!(
            "{}: This image format does not support checks",
            super::prog()
        );
        return Ok(63);
    };
    let total = q.virtual_size().div_ceil(q.cluster_size());
    let mut r = match qcow2::check(q, fix_leaks, fix_errors) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: Check failed: {e}", super::prog());
            return Ok(1);
        }
    };
    for m in &r.messages {
        eprintln!("{m}");
    }
    if fix && (r.leaks_fixed > 0 || r.corruptions_fixed > 0) {
        if !quiet && !json_out {
            print!(
                "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...\n",
                r.leaks_fixed, r.corruptions_fixed
            );
        }
        let fixed = (r.leaks_fixed, r.corruptions_fixed);
        r = qcow2::check(q, false, false).map_err(|e| fail(format!("Check failed: {e}")))?;
        for m in &r.messages {
            eprintln!("{m}");
        }
        r.leaks_fixed = fixed.0;
        r.corruptions_fixed = fixed.1;
    }
    if !quiet {
        if json_out {
            println!("{}", pretty_json(&check_json(&r, filename, total)));
        } else {
            print!("{}", check_human(&r, total));
        }
    }
    Ok(if r.check_errors > 0 {
        1
    } else if r.corruptions_after > 0 {
        2
    } else if r.leaks_after > 0 {
        3
    } else {
        0
    })
}

const MAP_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('U', "U", false),
    long("force-share", "U", false),
    long("output", "output", true),
    long("start-offset", "start-offset", true),
    long("max-length", "max-length", true),
    long("image-opts", "image-opts", false),
];

#[derive(Clone, Debug, PartialEq)]
struct MapEntry {
    start: u64,
    length: u64,
    depth: usize,
    present: bool,
    zero: bool,
    data: bool,
    offset: Option<u64>,
    file: PathBuf,
}

impl MapEntry {
    fn continues(&self, next: &MapEntry) -> bool {
        self.depth == next.depth
            && self.present == next.present
            && self.zero == next.zero
            && self.data == next.data
            && self.file == next.file
            && self.start + self.length == next.start
            && match (self.offset, next.offset) {
                (None, None) => true,
                (Some(a), Some(b)) => a + self.length == b,
                _ => false,
            }
    }
}

pub fn map(args: &[String]) -> CmdResult {
    let p = parse(args, MAP_SPEC).map_err(fail)?;
    let json_out = output_format(p.get("output"))?;
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let node = open_image(filename, p.get("f"), true, false, &OpenOptions::default())?;
    let size = node.virtual_size().map_err(|e| fail(e.to_string()))?;
    let start = match p.get("start-offset") {
        Some(s) => vmscope::block::options::parse_size(s).ok_or_else(|| {
            fail("Invalid start offset specified! You may use k, M, G, T, P or E suffixes for")
        })?,
        None => 0,
    };
    let end = match p.get("max-length") {
        Some(s) => {
            start.saturating_add(vmscope::block::options::parse_size(s).ok_or_else(|| {
                fail("Invalid max length specified! You may use k, M, G, T, P or E suffixes for")
            })?)
        }
        None => size,
    }
    .min(size);
    let chain = node.chain();
    let mut entries: Vec<MapEntry> = Vec::new();
    let mut pos = start;
    while pos < end {
        let st = node
            .block_status(pos, (end - pos).min(1 << 30))
            .map_err(|e| fail(e.to_string()))?;
        let depth = st.depth.unwrap_or(chain.len() - 1);
        let e = MapEntry {
            start: pos,
            length: st.len,
            depth,
            present: st.depth.is_some(),
            zero: st.zero,
            data: st.data,
            offset: st.host_offset,
            file: chain[depth].filename.clone(),
        };
        match entries.last_mut() {
            Some(last) if last.continues(&e) => last.length += e.length,
            _ => entries.push(e),
        }
        pos += st.len;
    }
    if json_out {
        let lines: Vec<String> = entries
            .iter()
            .map(|e| {
                let mut s = format!(
                    "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}",
                    e.start, e.length, e.depth, e.present, e.zero, e.data
                );
                if let Some(o) = e.offset {
                    s += &format!(", \"offset\": {o}");
                }
                s += "}";
                s
            })
            .collect();
        println!("[{}]", lines.join(",\n"));
    } else {
        println!("{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to");
        for e in entries.iter().filter(|e| e.data) {
            if e.offset.is_none() {
                return Err(fail(
                    "File contains external, encrypted or compressed clusters.",
                ));
            }
            println!(
                "{:<16}{:<16}{:<16}{}",
                hex_alt(e.start),
                hex_alt(e.length),
                hex_alt(e.offset.unwrap_or(0)),
                e.file.display()
            );
        }
    }
    Ok(0)
}

const COMPARE_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('F', "F", true),
    opt('T', "T", true),
    opt('U', "U", false),
    opt('p', "p", false),
    opt('q', "q", false),
    opt('s', "s", false),
    long("force-share", "U", false),
    long("image-opts", "image-opts", false),
];

pub fn compare(args: &[String]) -> CmdResult {
    let p = parse(args, COMPARE_SPEC).map_err(fail)?;
    let quiet = p.has("q");
    let strict = p.has("s");
    let [f1, f2] = p.positional.as_slice() else {
        return Err(fail("Expecting two image file names").with_code(2));
    };
    let a = open_image(f1, p.get("f"), true, false, &OpenOptions::default())
        .map_err(|e| e.with_code(2))?;
    let b = open_image(f2, p.get("F"), true, false, &OpenOptions::default())
        .map_err(|e| e.with_code(2))?;
    let sa = a
        .virtual_size()
        .map_err(|e| fail(e.to_string()).with_code(2))?;
    let sb = b
        .virtual_size()
        .map_err(|e| fail(e.to_string()).with_code(2))?;
    if sa != sb && strict {
        if !quiet {
            println!("Strict mode: Image size mismatch!");
        }
        return Ok(1);
    }
    let common = sa.min(sb);
    let chunk = 1u64 << 20;
    let mut ba = vec![0u8; chunk as usize];
    let mut bb = vec![0u8; chunk as usize];
    let mut pos = 0;
    let report = |off: u64| {
        if !quiet {
            println!("Content mismatch at offset {off}!");
        }
        Ok(1)
    };
    while pos < common {
        let n = (common - pos).min(chunk) as usize;
        // Skip ranges both sides know to be zero without reading them.
        let za = a
            .block_status(pos, n as u64)
            .map_err(|e| fail(e.to_string()).with_code(2))?;
        let zb = b
            .block_status(pos, n as u64)
            .map_err(|e| fail(e.to_string()).with_code(2))?;
        if za.zero && zb.zero {
            pos += za.len.min(zb.len);
            continue;
        }
        a.read_at(pos, &mut ba[..n])
            .map_err(|e| fail(e.to_string()).with_code(2))?;
        b.read_at(pos, &mut bb[..n])
            .map_err(|e| fail(e.to_string()).with_code(2))?;
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0) as u64;
            return report((pos + i) & !511);
        }
        pos += n as u64;
    }
    if sa != sb {
        if !quiet {
            println!("Warning: Image size mismatch!");
        }
        let (longer, size) = if sa > sb { (&a, sa) } else { (&b, sb) };
        let mut pos = common;
        while pos < size {
            let n = (size - pos).min(chunk) as usize;
            longer
                .read_at(pos, &mut ba[..n])
                .map_err(|e| fail(e.to_string()).with_code(2))?;
            if let Some(i) = ba[..n].iter().position(|&x| x != 0) {
                return report((pos + i as u64) & !511);
            }
            pos += n as u64;
        }
    }
    if !quiet {
        println!("Images are identical.");
    }
    Ok(0)
}

const SNAPSHOT_SPEC: &[OptSpec] = &[
    opt('l', "l", false),
    opt('c', "c", true),
    opt('a', "a", true),
    opt('d', "d", true),
    opt('f', "f", true),
    opt('q', "q", false),
    opt('U', "U", false),
    long("force-share", "U", false),
    long("image-opts", "image-opts", false),
];

pub fn snapshot(args: &[String]) -> CmdResult {
    let p = parse(args, SNAPSHOT_SPEC).map_err(fail)?;
    for k in ["c", "a", "d"] {
        if p.has(k) {
            return Err(fail(format!(
                "snapshot -{k} is not supported yet by vmscope-img (only -l)"
            )));
        }
    }
    if !p.has("l") {
        return Err(fail("snapshot: one of -l, -c, -a, -d is required"));
    }
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let node = open_image(filename, p.get("f"), true, true, &OpenOptions::default())?;
    let chain = node.chain();
    match chain[0].qcow2() {
        Some(q) => {
            if !q.snapshots().is_empty() {
                print!("Snapshot list:\n{}", snapshot_table(q.snapshots()));
            }
        }
        None => {
            if chain[0].format() == ImageFormat::Raw {
                return Err(fail("Failed to list snapshots: Operation not supported"));
            }
        }
    }
    Ok(0)
}
