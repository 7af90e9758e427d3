//! `vmscope-img`: qemu-img's command line and output over vmscope's block layer. Installed
//! as `qemu-img` by `scripts/install.sh`.

#[path = "vmscope_img/args.rs"]
mod args;
#[path = "vmscope_img/bench.rs"]
mod bench;
#[path = "vmscope_img/fmt.rs"]
mod fmt;
#[path = "vmscope_img/modify.rs"]
mod modify;
#[path = "vmscope_img/report.rs"]
mod report;

use std::path::Path;

use vmscope::block::{open_node, BlockError, BlockNode, OpenOptions};

/// A failed command: the message (printed with the program-name prefix) and exit code.
pub struct CmdError {
    msg: String,
    code: i32,
}

impl CmdError {
    fn with_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
}

pub type CmdResult = Result<i32, CmdError>;

pub fn fail(msg: impl Into<String>) -> CmdError {
    CmdError {
        msg: msg.into(),
        code: 1,
    }
}

/// The name errors are prefixed with, like QEMU's `error_report` (basename of argv[0]).
pub fn prog() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "vmscope-img".into())
}

/// JSON as QEMU prints it: four-space indentation. (serde_json indents by two; strings
/// never contain raw newlines, so doubling the leading spaces of each line is exact.)
pub fn pretty_json(v: &serde_json::Value) -> String {
    let two = serde_json::to_string_pretty(v).expect("serialising a Value cannot fail");
    two.lines()
        .map(|l| {
            let n = l.len() - l.trim_start_matches(' ').len();
            format!("{}{}", " ".repeat(n * 2), &l[n..])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Opens an image the way qemu-img does, with its error wording.
pub fn open_image(
    filename: &str,
    format: Option<&str>,
    read_only: bool,
    no_backing: bool,
    base: &OpenOptions,
) -> Result<BlockNode, CmdError> {
    let opts = OpenOptions {
        read_only,
        format: format.map(str::to_string),
        no_backing,
        ..base.clone()
    };
    let node = open_node(Path::new(filename), &opts).map_err(|e| match e {
        BlockError::Open { .. } => fail(format!("Could not open '{filename}': {e}")),
        other => fail(format!("Could not open '{filename}': {other}")),
    })?;
    for w in node.warnings() {
        eprintln!("{}: {w}", prog());
    }
    if !read_only
        && format.is_none()
        && node.chain()[0].format() == vmscope::block::ImageFormat::Raw
    {
        eprintln!("WARNING: Image format was not specified for '{filename}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions.");
    }
    Ok(node)
}

const HELP: &str = "usage: vmscope-img [standard options] command [command options]
vmscope's qemu-img: disk image utility

Command syntax:
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-U] [-w] [--random[=seed]] filename
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
  commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename
  compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
  convert [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-W] filename [filename2 [...]] output_filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  map [-f fmt] [--output=ofmt] [--start-offset=offset] [--max-length=len] [-U] filename
  snapshot [-q] -l [-U] filename
  rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] [-U] -b backing_file [-F backing_fmt] filename
  resize [-f fmt] [--shrink] [-q] filename [+ | -]size

Supported formats: qcow2 raw
";

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let Some(cmd) = argv.get(1) else {
        eprintln!(
            "{}: Not enough arguments\nTry '{} --help' for more information",
            prog(),
            prog()
        );
        std::process::exit(1);
    };
    let rest = &argv[2..];
    let r = match cmd.as_str() {
        "-h" | "--help" => {
            print!("{HELP}");
            Ok(0)
        }
        "-V" | "--version" => {
            println!(
                "vmscope-img version 7.2.0 (vmscope {})",
                env!("CARGO_PKG_VERSION")
            );
            Ok(0)
        }
        "create" => modify::create(rest),
        "info" => report::info(rest),
        "check" => report::check(rest),
        "map" => report::map(rest),
        "compare" => report::compare(rest),
        "snapshot" => report::snapshot(rest),
        "convert" => modify::convert(rest),
        "commit" => modify::commit(rest),
        "rebase" => modify::rebase(rest),
        "resize" => modify::resize(rest),
        "bench" => bench::bench(rest),
        other => Err(fail(format!("Command not found: {other}"))),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{}: {}", prog(), e.msg);
            std::process::exit(e.code);
        }
    }
}
