//! Commands that write: `create`, `convert`, `commit`, `rebase`, `resize`.

use std::io::Write;
use std::path::Path;

use vmscope::block::node::resolve_backing_path;
use vmscope::block::options::parse_size;
use vmscope::block::qcow2::{self, CompressionType, Preallocation, Qcow2CreateOptions};
use vmscope::block::{BlockNode, CacheMode, ImageFormat, LayerMapping, OpenOptions};

use super::args::{long, opt, parse, split_kv, OptSpec};
use super::{fail, open_image, CmdError, CmdResult};

const CREATE_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('b', "b", true),
    opt('F', "F", true),
    opt('o', "o", true),
    opt('u', "u", false),
    opt('q', "q", false),
    long("object", "object", true),
];

/// Options of a new image, from `-o` and the dedicated flags.
struct CreateSpec {
    format: ImageFormat,
    qcow2: Qcow2CreateOptions,
    raw_prealloc: Option<Preallocation>,
    /// (key, value) as printed in the `Formatting ...` line, QEMU's order.
    compat_given: Option<String>,
    prealloc_given: bool,
    /// Values QEMU only rejects after printing the `Formatting` line: (shown text, error).
    deferred_error: Option<String>,
    compression_shown: Option<String>,
    prealloc_shown: Option<String>,
}

fn bool_opt(k: &str, v: &str) -> Result<bool, CmdError> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(fail(format!("Parameter '{k}' expects 'on' or 'off'"))),
    }
}

fn build_spec(
    fmt: &str,
    opts: &[(String, String)],
    size: Option<u64>,
    backing: Option<&str>,
    backing_fmt: Option<&str>,
) -> Result<CreateSpec, CmdError> {
    let format = ImageFormat::parse(fmt).map_err(|e| fail(e.to_string()))?;
    let mut q = Qcow2CreateOptions {
        size: size.unwrap_or(0),
        backing_file: backing.map(str::to_string),
        backing_format: backing_fmt.map(str::to_string),
        ..Default::default()
    };
    let mut compat_given = None;
    let mut prealloc_given = false;
    let mut deferred_error = None;
    let mut compression_shown = None;
    let mut prealloc_shown = None;
    let mut raw_prealloc = None;
    for (k, v) in opts {
        let k = k.as_str();
        match (format, k) {
            (_, "size") => {
                q.size = parse_size(v).ok_or_else(|| {
                    fail("Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
                })?
            }
            (ImageFormat::Raw, "preallocation") => {
                prealloc_given = true;
                prealloc_shown = Some(v.clone());
                match Preallocation::parse(v) {
                    Ok(p) => raw_prealloc = Some(p),
                    Err(e) => deferred_error = Some(e.to_string()),
                }
            }
            (ImageFormat::Qcow2, "preallocation") => {
                prealloc_given = true;
                prealloc_shown = Some(v.clone());
                match Preallocation::parse(v) {
                    Ok(p) => q.preallocation = p,
                    Err(e) => deferred_error = Some(e.to_string()),
                }
            }
            (ImageFormat::Qcow2, "cluster_size") => {
                q.cluster_size = parse_size(v)
                    .ok_or_else(|| fail("Parameter 'cluster_size' expects a size"))?
            }
            (ImageFormat::Qcow2, "compat") => {
                q.version = match v.as_str() {
                    "0.10" | "v2" => 2,
                    "1.1" | "v3" => 3,
                    _ => return Err(fail(format!("Invalid parameter '{v}'"))),
                };
                compat_given = Some(v.clone());
            }
            (ImageFormat::Qcow2, "lazy_refcounts") => q.lazy_refcounts = bool_opt(k, v)?,
            (ImageFormat::Qcow2, "backing_file") => q.backing_file = Some(v.clone()),
            (ImageFormat::Qcow2, "backing_fmt") => q.backing_format = Some(v.clone()),
            (ImageFormat::Qcow2, "refcount_bits") => {
                q.refcount_bits = v
                    .parse()
                    .map_err(|_| fail("Parameter 'refcount_bits' expects a number"))?
            }
            (ImageFormat::Qcow2, "compression_type") => {
                compression_shown = Some(v.clone());
                match v.as_str() {
                    "zlib" => q.compression_type = CompressionType::Zlib,
                    "zstd" => q.compression_type = CompressionType::Zstd,
                    _ => {
                        deferred_error = Some(format!(
                            "Parameter 'compression-type' does not accept value '{v}'"
                        ))
                    }
                }
            }
            (ImageFormat::Qcow2, "extended_l2") => {
                if bool_opt(k, v)? {
                    return Err(fail(
                        "extended_l2=on is not supported yet by vmscope-img",
                    ));
                }
            }
            (ImageFormat::Qcow2, "encryption" | "encrypt.format" | "data_file" | "data_file_raw") => {
                return Err(fail(format!(
                    "qcow2 option '{k}' is not supported yet by vmscope-img"
                )))
            }
            _ => return Err(fail(format!("Invalid parameter '{k}'"))),
        }
    }
    Ok(CreateSpec {
        format,
        qcow2: q,
        raw_prealloc,
        compat_given,
        prealloc_given,
        deferred_error,
        compression_shown,
        prealloc_shown,
    })
}

fn formatting_line(filename: &str, s: &CreateSpec) -> String {
    let q = &s.qcow2;
    match s.format {
        ImageFormat::Raw => {
            let mut l = format!("Formatting '{filename}', fmt=raw size={}", q.size);
            if let Some(p) = &s.prealloc_shown {
                l += &format!(" preallocation={p}");
            }
            l
        }
        ImageFormat::Qcow2 => {
            let mut l = format!(
                "Formatting '{filename}', fmt=qcow2 cluster_size={} extended_l2=off",
                q.cluster_size
            );
            if s.prealloc_given {
                l += &format!(
                    " preallocation={}",
                    s.prealloc_shown
                        .as_deref()
                        .unwrap_or(q.preallocation.name())
                );
            }
            l += &format!(
                " compression_type={} size={}",
                s.compression_shown
                    .as_deref()
                    .unwrap_or(q.compression_type.name()),
                q.size
            );
            if let Some(c) = &s.compat_given {
                l += &format!(" compat={c}");
            }
            if let Some(b) = &q.backing_file {
                l += &format!(" backing_file={b}");
            }
            if let Some(b) = &q.backing_format {
                l += &format!(" backing_fmt={b}");
            }
            l += &format!(
                " lazy_refcounts={} refcount_bits={}",
                if q.lazy_refcounts { "on" } else { "off" },
                q.refcount_bits
            );
            l
        }
    }
}

/// Creates an image file per `spec` (no output).
fn create_image(filename: &str, spec: &CreateSpec) -> Result<(), CmdError> {
    if let Some(e) = &spec.deferred_error {
        return Err(fail(format!("{filename}: {e}")));
    }
    let path = Path::new(filename);
    let err = |e: vmscope::block::BlockError| fail(format!("{filename}: {e}"));
    match spec.format {
        ImageFormat::Raw => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(|e| fail(format!("{filename}: Could not create '{filename}': {e}")))?;
            // Whole 512-byte sectors, as qemu-img creates them.
            f.set_len(spec.qcow2.size.div_ceil(512).saturating_mul(512))
                .map_err(|e| fail(format!("{filename}: Could not resize file: {e}")))?;
            drop(f);
            match spec.raw_prealloc {
                Some(Preallocation::Falloc) | Some(Preallocation::Full) => {
                    let hf = vmscope::block::host_file::HostFile::open(
                        path,
                        false,
                        CacheMode::Writeback,
                    )
                    .map_err(err)?;
                    if spec.raw_prealloc == Some(Preallocation::Falloc) {
                        hf.fallocate(0, spec.qcow2.size).map_err(err)?;
                    } else {
                        hf.write_zeroes(0, spec.qcow2.size).map_err(err)?;
                    }
                    hf.flush().map_err(err)?;
                }
                Some(Preallocation::Metadata) => {
                    return Err(fail(format!(
                        "{filename}: Unsupported preallocation mode 'metadata'"
                    )))
                }
                _ => {}
            }
            Ok(())
        }
        ImageFormat::Qcow2 => qcow2::create(path, &spec.qcow2).map_err(err),
    }
}

pub fn create(args: &[String]) -> CmdResult {
    let p = parse(args, CREATE_SPEC).map_err(fail)?;
    if p.has("object") {
        return Err(fail("--object is not supported yet by vmscope-img"));
    }
    let fmt = p.get("f").unwrap_or("raw");
    let (filename, size_arg) = match p.positional.as_slice() {
        [f] => (f.clone(), None),
        [f, s] => (f.clone(), Some(s.clone())),
        _ => return Err(fail("Expecting image file name")),
    };
    let mut kv = Vec::new();
    for o in p.all("o") {
        if o == "help" || o == "?" {
            println!("Supported options:\n  backing_file=<str>\n  backing_fmt=<str>\n  cluster_size=<size>\n  compat=<str>\n  compression_type=<str>\n  lazy_refcounts=<bool>\n  preallocation=<str>\n  refcount_bits=<num>\n  size=<size>");
            return Ok(0);
        }
        kv.extend(split_kv(o));
    }
    let size = match &size_arg {
        Some(s) => Some(parse_size(s).ok_or_else(|| {
            fail("Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nqemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
        })?),
        None => None,
    };
    let backing = p.get("b");
    let backing_fmt = p.get("F");
    let mut spec = build_spec(fmt, &kv, size, backing, backing_fmt)?;
    let quiet = p.has("q");
    let unsafe_backing = p.has("u");
    let has_size = size.is_some() || kv.iter().any(|(k, _)| k == "size");
    if let Some(b) = spec.qcow2.backing_file.clone() {
        let bpath = resolve_backing_path(Path::new(&filename), &b);
        if spec.qcow2.backing_format.is_none() {
            let mut msg = format!("{filename}: Backing file specified without backing format");
            if let Ok(node) = vmscope::block::open_node(
                &bpath,
                &OpenOptions {
                    read_only: true,
                    no_backing: true,
                    ..Default::default()
                },
            ) {
                msg += &format!("\nDetected format of {}.", node.chain()[0].format().name());
            }
            return Err(fail(msg));
        }
        if !unsafe_backing || !has_size {
            let opened = vmscope::block::open_node(
                &bpath,
                &OpenOptions {
                    read_only: true,
                    format: spec.qcow2.backing_format.clone(),
                    ..Default::default()
                },
            );
            match opened {
                Ok(node) => {
                    if !has_size {
                        spec.qcow2.size = node.virtual_size().map_err(|e| fail(e.to_string()))?;
                    }
                }
                Err(e) => {
                    return Err(fail(format!(
                        "{filename}: {e}\nCould not open backing image."
                    )));
                }
            }
        }
    } else if !has_size {
        return Err(fail("Image creation needs a size parameter"));
    }
    if !quiet {
        println!("{}", formatting_line(&filename, &spec));
    }
    create_image(&filename, &spec)?;
    Ok(0)
}

const CONVERT_SPEC: &[OptSpec] = &[
    opt('c', "c", false),
    opt('p', "p", false),
    opt('q', "q", false),
    opt('n', "n", false),
    opt('f', "f", true),
    opt('t', "t", true),
    opt('T', "T", true),
    opt('O', "O", true),
    opt('B', "B", true),
    opt('F', "F", true),
    opt('o', "o", true),
    opt('S', "S", true),
    opt('W', "W", false),
    opt('m', "m", true),
    opt('U', "U", false),
    long("force-share", "U", false),
    long("object", "object", true),
    long("image-opts", "image-opts", false),
    long("target-image-opts", "target-image-opts", false),
];

/// qemu-img's progress line.
struct Progress {
    enabled: bool,
    last: f64,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        let p = Progress {
            enabled,
            last: -1.0,
        };
        p.print(0.0);
        p
    }
    fn print(&self, v: f64) {
        if self.enabled {
            print!("    ({v:.2}/100%)\r");
            let _ = std::io::stdout().flush();
        }
    }
    fn update(&mut self, done: u64, total: u64) {
        let v = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        if v - self.last >= 1.0 || (v >= 100.0 && self.last < 100.0) {
            self.last = v;
            self.print(v);
        }
    }
    fn finish(&self) {
        if self.enabled {
            self.print(100.0);
            println!();
        }
    }
}

fn cache_mode(s: Option<&str>, default: CacheMode) -> Result<CacheMode, CmdError> {
    match s {
        None => Ok(default),
        Some(m) => CacheMode::parse(m).map_err(|_| fail(format!("Invalid cache option: {m}"))),
    }
}

pub fn convert(args: &[String]) -> CmdResult {
    let p = parse(args, CONVERT_SPEC).map_err(fail)?;
    for k in ["object", "image-opts", "target-image-opts", "m", "W"] {
        if p.has(k) {
            return Err(fail(format!(
                "convert option -{k} is not supported yet by vmscope-img"
            )));
        }
    }
    if p.positional.len() < 2 {
        return Err(fail("Expecting image file name"));
    }
    let (sources, out) = p.positional.split_at(p.positional.len() - 1);
    let out = &out[0];
    let out_fmt = p.get("O").unwrap_or("raw");
    let compress = p.has("c");
    let skip_create = p.has("n");
    let quiet = p.has("q");
    let src_cache = cache_mode(p.get("T"), CacheMode::Writeback)?;
    let dst_cache = cache_mode(p.get("t"), CacheMode::Unsafe)?;
    let min_sparse = match p.get("S") {
        Some(s) => parse_size(s).ok_or_else(|| fail("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16M. Optional suffixes k, M, G, T, P or E mean kilo-, mega-, giga-, tera-, peta- and exabytes, respectively."))?,
        None => 4096,
    };
    let mut srcs = Vec::new();
    let mut total = 0u64;
    for s in sources {
        let node = open_image(
            s,
            p.get("f"),
            true,
            false,
            &OpenOptions {
                cache: src_cache,
                ..Default::default()
            },
        )?;
        total += node.virtual_size().map_err(|e| fail(e.to_string()))?;
        srcs.push(node);
    }
    let mut kv = Vec::new();
    for o in p.all("o") {
        kv.extend(split_kv(o));
    }
    let out_backing = p.get("B");
    if !skip_create {
        let spec = build_spec(out_fmt, &kv, Some(total), out_backing, p.get("F"))?;
        if compress && spec.format != ImageFormat::Qcow2 {
            return Err(fail("Compression not supported for this file format"));
        }
        create_image(out, &spec)?;
    }
    let target = open_image(
        out,
        Some(out_fmt),
        false,
        false,
        &OpenOptions {
            cache: dst_cache,
            ..Default::default()
        },
    )?;
    let target_size = target.virtual_size().map_err(|e| fail(e.to_string()))?;
    if target_size < total {
        return Err(fail(
            "Error: Source image size is larger than the target image size",
        ));
    }
    let has_backing = target.chain_len() > 1;
    let chunk: u64 = match target.chain()[0].qcow2() {
        Some(q) => q.cluster_size().max(if compress { 0 } else { 1 << 20 }),
        None => 1 << 20,
    };
    let cluster = target.chain()[0]
        .qcow2()
        .map(|q| q.cluster_size())
        .unwrap_or(chunk);
    let mut progress = Progress::new(p.has("p") && !quiet);
    let mut buf = vec![0u8; chunk as usize];
    let mut back = vec![0u8; chunk as usize];
    let mut base = 0u64;
    let mut done = 0u64;
    for src in &srcs {
        let size = src.virtual_size().map_err(|e| fail(e.to_string()))?;
        let mut pos = 0u64;
        while pos < size {
            let n = (size - pos)
                .min(chunk - (pos % chunk).min(chunk - 1))
                .min(chunk);
            let st = src.block_status(pos, n).map_err(|e| fail(e.to_string()))?;
            let n = if st.zero && !skip_create && !has_backing {
                st.len.min(n)
            } else {
                n
            };
            let b = &mut buf[..n as usize];
            if st.zero && !skip_create && !has_backing {
                // Nothing to write: the new image reads zeros there.
            } else {
                src.read_at(pos, b).map_err(|e| fail(e.to_string()))?;
                write_chunk(
                    &target,
                    base + pos,
                    b,
                    &mut back[..n as usize],
                    compress,
                    cluster,
                    min_sparse,
                    skip_create,
                    has_backing,
                )?;
            }
            pos += n;
            done += n;
            progress.update(done, total);
        }
        base += size;
    }
    target.flush().map_err(|e| fail(e.to_string()))?;
    progress.finish();
    Ok(0)
}

#[allow(clippy::too_many_arguments)] // one call site; the parameters are the convert options
fn write_chunk(
    target: &BlockNode,
    off: u64,
    data: &[u8],
    backing_buf: &mut [u8],
    compress: bool,
    cluster: u64,
    min_sparse: u64,
    must_write_zeroes: bool,
    has_backing: bool,
) -> Result<(), CmdError> {
    let e = |x: vmscope::block::BlockError| fail(format!("error while writing at byte {off}: {x}"));
    if has_backing {
        // Only what differs from the new backing file needs to be in the target.
        target.read_below(1, off, backing_buf).map_err(e)?;
        if backing_buf == data {
            return Ok(());
        }
    }
    if compress {
        let target_size = target.virtual_size().ok();
        let mut pos = 0usize;
        while pos < data.len() {
            let n = (cluster as usize).min(data.len() - pos);
            let part = &data[pos..pos + n];
            if part.iter().all(|&b| b == 0) && !has_backing {
                pos += n;
                continue;
            }
            let at = off + pos as u64;
            // A whole cluster, or the image's last, partial one (compressed padded, as QEMU).
            let whole = n as u64 == cluster || Some(at + n as u64) == target_size;
            if whole && at.is_multiple_of(cluster) {
                target.write_compressed(off + pos as u64, part).map_err(e)?;
            } else {
                target.write_at(off + pos as u64, part).map_err(e)?;
            }
            pos += n;
        }
        return Ok(());
    }
    let grain = min_sparse.max(512) as usize;
    let mut pos = 0usize;
    while pos < data.len() {
        let n = grain.min(data.len() - pos);
        let zero = data[pos..pos + n].iter().all(|&b| b == 0);
        // Coalesce runs of the same kind.
        let mut end = pos + n;
        while end < data.len() {
            let m = grain.min(data.len() - end);
            if data[end..end + m].iter().all(|&b| b == 0) != zero {
                break;
            }
            end += m;
        }
        if !zero || has_backing {
            target
                .write_at(off + pos as u64, &data[pos..end])
                .map_err(e)?;
        } else if must_write_zeroes {
            target
                .write_zeroes(off + pos as u64, (end - pos) as u64, true)
                .map_err(e)?;
        }
        pos = end;
    }
    Ok(())
}

const COMMIT_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('t', "t", true),
    opt('b', "b", true),
    opt('d', "d", false),
    opt('p', "p", false),
    opt('q', "q", false),
    opt('r', "r", true),
    long("object", "object", true),
    long("image-opts", "image-opts", false),
];

pub fn commit(args: &[String]) -> CmdResult {
    let p = parse(args, COMMIT_SPEC).map_err(fail)?;
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let cache = cache_mode(p.get("t"), CacheMode::Unsafe)?;
    let top = open_image(
        filename,
        p.get("f"),
        false,
        false,
        &OpenOptions {
            cache,
            ..Default::default()
        },
    )?;
    let chain = top.chain();
    if chain.len() < 2 {
        return Err(fail("Image does not have a backing file"));
    }
    let base_idx = match p.get("b") {
        None => 1,
        Some(b) => {
            let want = std::fs::canonicalize(b).map_err(|e| {
                fail(format!(
                    "Did not find '{b}' in the backing chain of '{filename}': {e}"
                ))
            })?;
            chain
                .iter()
                .position(|l| std::fs::canonicalize(&l.filename).ok().as_ref() == Some(&want))
                .filter(|&i| i > 0)
                .ok_or_else(|| {
                    fail(format!(
                        "Did not find '{b}' in the backing chain of '{filename}'"
                    ))
                })?
        }
    };
    let drop_top = !p.has("d") && !p.has("b");
    let base_path = chain[base_idx].filename.to_string_lossy().into_owned();
    let base_fmt = chain[base_idx].format().name();
    drop(chain);
    let base = open_image(
        &base_path,
        Some(base_fmt),
        false,
        false,
        &OpenOptions {
            cache,
            ..Default::default()
        },
    )?;
    let size = top.virtual_size().map_err(|e| fail(e.to_string()))?;
    let base_size = base.virtual_size().map_err(|e| fail(e.to_string()))?;
    if base_size < size {
        base.resize(size).map_err(|e| fail(e.to_string()))?;
    }
    let mut progress = Progress::new(p.has("p") && !p.has("q"));
    let mut pos = 0;
    let mut buf = Vec::new();
    while pos < size {
        let (alloc, n) = top
            .is_allocated_above(base_idx - 1, pos, (size - pos).min(1 << 20))
            .map_err(|e| fail(e.to_string()))?;
        let mut n = n;
        if alloc {
            let st = top.block_status(pos, n).map_err(|e| fail(e.to_string()))?;
            n = n.min(st.len);
            if st.zero {
                // Zero clusters stay zero clusters, as QEMU commits them.
                base.write_zeroes(pos, n, false)
                    .map_err(|e| fail(e.to_string()))?;
            } else {
                buf.resize(n as usize, 0);
                top.read_at(pos, &mut buf)
                    .map_err(|e| fail(e.to_string()))?;
                base.write_at(pos, &buf).map_err(|e| fail(e.to_string()))?;
            }
        }
        pos += n;
        progress.update(pos, size);
    }
    base.flush().map_err(|e| fail(e.to_string()))?;
    if drop_top {
        if let Some(q) = top.chain()[0].qcow2() {
            q.make_empty().map_err(|e| fail(e.to_string()))?;
        }
    }
    top.flush().map_err(|e| fail(e.to_string()))?;
    progress.finish();
    if !p.has("q") {
        println!("Image committed.");
    }
    Ok(0)
}

const REBASE_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('t', "t", true),
    opt('T', "T", true),
    opt('b', "b", true),
    opt('F', "F", true),
    opt('p', "p", false),
    opt('q', "q", false),
    opt('u', "u", false),
    opt('U', "U", false),
    long("force-share", "U", false),
    long("object", "object", true),
    long("image-opts", "image-opts", false),
];

pub fn rebase(args: &[String]) -> CmdResult {
    let p = parse(args, REBASE_SPEC).map_err(fail)?;
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let Some(new_backing) = p.get("b") else {
        return Err(fail(
            "Must specify backing file (-b) or use unsafe mode (-u)",
        ));
    };
    let new_backing = (!new_backing.is_empty()).then_some(new_backing);
    let cache = cache_mode(p.get("t"), CacheMode::Writeback)?;
    let unsafe_mode = p.has("u");
    let top = open_image(
        filename,
        p.get("f"),
        false,
        unsafe_mode,
        &OpenOptions {
            cache,
            ..Default::default()
        },
    )?;
    let chain = top.chain();
    let Some(q) = chain[0].qcow2() else {
        return Err(fail(
            "Could not change the backing file: Operation not supported",
        ));
    };
    let mut fmt = p.get("F").map(str::to_string);
    if !unsafe_mode {
        let new_node = match new_backing {
            Some(b) => {
                let path = resolve_backing_path(Path::new(filename), b);
                let n = vmscope::block::open_node(
                    &path,
                    &OpenOptions {
                        read_only: true,
                        format: fmt.clone(),
                        ..Default::default()
                    },
                )
                .map_err(|e| {
                    fail(format!(
                        "Could not open new backing file '{}': {e}",
                        path.display()
                    ))
                })?;
                if fmt.is_none() {
                    fmt = Some(n.chain()[0].format().name().to_string());
                }
                Some(n)
            }
            None => None,
        };
        let size = top.virtual_size().map_err(|e| fail(e.to_string()))?;
        let new_size = match &new_node {
            Some(n) => n.virtual_size().map_err(|e| fail(e.to_string()))?,
            None => 0,
        };
        let cs = q.cluster_size();
        let mut old = vec![0u8; cs as usize];
        let mut new = vec![0u8; cs as usize];
        let mut progress = Progress::new(p.has("p") && !p.has("q"));
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(cs);
            let ext = chain[0].map(pos, n).map_err(|e| fail(e.to_string()))?;
            if ext.mapping == LayerMapping::Unallocated {
                let len = ext.len.min(n) as usize;
                top.read_below(1, pos, &mut old[..len])
                    .map_err(|e| fail(e.to_string()))?;
                new[..len].fill(0);
                if let Some(nn) = &new_node {
                    if pos < new_size {
                        let m = (new_size - pos).min(len as u64) as usize;
                        nn.read_at(pos, &mut new[..m])
                            .map_err(|e| fail(e.to_string()))?;
                    }
                }
                if old[..len] != new[..len] {
                    top.write_at(pos, &old[..len])
                        .map_err(|e| fail(e.to_string()))?;
                }
                pos += len as u64;
            } else {
                pos += ext.len.min(n);
            }
            progress.update(pos, size);
        }
        top.flush().map_err(|e| fail(e.to_string()))?;
        progress.finish();
    }
    q.set_backing(new_backing, fmt.as_deref()).map_err(|e| {
        fail(format!(
            "Could not change the backing file to '{}': {e}",
            new_backing.unwrap_or("")
        ))
    })?;
    Ok(0)
}

const RESIZE_SPEC: &[OptSpec] = &[
    opt('f', "f", true),
    opt('q', "q", false),
    long("shrink", "shrink", false),
    long("preallocation", "preallocation", true),
    long("object", "object", true),
    long("image-opts", "image-opts", false),
];

pub fn resize(args: &[String]) -> CmdResult {
    // A leading '-' in the size would look like an option: QEMU accepts "resize f -1G".
    let mut args = args.to_vec();
    let mut neg_size = None;
    if let Some(last) = args.last() {
        if last.starts_with('-')
            && last.len() > 1
            && last[1..].starts_with(|c: char| c.is_ascii_digit())
        {
            neg_size = args.pop();
        }
    }
    let p = parse(&args, RESIZE_SPEC).map_err(fail)?;
    if p.has("preallocation") {
        return Err(fail(
            "resize --preallocation is not supported yet by vmscope-img",
        ));
    }
    let (filename, size_s) = match (p.positional.as_slice(), &neg_size) {
        ([f], Some(s)) => (f.clone(), s.clone()),
        ([f, s], None) => (f.clone(), s.clone()),
        _ => return Err(fail("Expecting image file name and size")),
    };
    let node = open_image(&filename, p.get("f"), false, true, &OpenOptions::default())?;
    let cur = node.virtual_size().map_err(|e| fail(e.to_string()))?;
    let bad = || {
        fail("Invalid size specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
    };
    let new = if let Some(s) = size_s.strip_prefix('+') {
        cur.checked_add(parse_size(s).ok_or_else(bad)?)
            .ok_or_else(bad)?
    } else if let Some(s) = size_s.strip_prefix('-') {
        cur.checked_sub(parse_size(s).ok_or_else(bad)?)
            .ok_or_else(|| fail("New image size must be positive"))?
    } else {
        parse_size(&size_s).ok_or_else(bad)?
    };
    if new < cur && !p.has("shrink") {
        return Err(fail(format!(
            "Use the --shrink option to perform a shrink operation.\n{}: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.",
            super::prog()
        )));
    }
    node.resize(new)
        .map_err(|e| fail(format!("Error resizing image: {e}")))?;
    node.flush().map_err(|e| fail(e.to_string()))?;
    if !p.has("q") {
        println!("Image resized.");
    }
    Ok(0)
}
