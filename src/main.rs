//! `vmscope` / `qemu-system-x86_64` entry point.

use std::ffi::OsString;

use vmscope::cli::{self, CliOutcome};

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match cli::parse(&argv) {
        Ok(CliOutcome::Exit(code)) => std::process::exit(code),
        Ok(CliOutcome::Run(_config)) => {
            // The lead replaces this with the machine once it is merged.
            eprintln!("vmscope: machine not built yet");
            std::process::exit(1);
        }
        Err(error) => {
            let argv0 = argv.first().cloned().unwrap_or_default();
            eprint!("{}", error.report(&argv0));
            std::process::exit(1);
        }
    }
}
