//! QEMU's argv grammar, parsed with nom into a typed [`crate::config::Config`].
//!
//! [`parse`] follows QEMU 7.2's `qemu_init()`: a first pass checks every option name and
//! argument count, a second pass reads each option (QemuOpts/keyval syntax and key
//! validation happen here, errors are located at the option), and then the remaining checks
//! run in QEMU's order (machine, chardevs, drives, machine properties, accelerators,
//! monitors, serial ports, CPU model, devices). Errors and warnings are worded as QEMU
//! words them. Options vmscope does not implement are validated like the rest and only then
//! refused with "not supported yet by vmscope (...)", so a malformed option always gets
//! QEMU's own message.
//!
//! Deliberate deviations from QEMU 7.2 (for the README's table):
//! - Without an accelerator option vmscope uses KVM (QEMU would pick TCG).
//! - vmscope has no display: `-display`/`-vga`/`-vnc` other than `none` are accepted with
//!   one warning; the default serial port and monitor, which QEMU puts on `vc` consoles,
//!   behave as QEMU's do with `-display none` (they go nowhere), and no GTK window or VNC
//!   server is opened. QEMU's other default devices (parallel port, NIC, VGA, floppy and
//!   CD-ROM drives) do not exist on vmscope's `pc` machine.
//! - `-machine help`, `-cpu help`, `-accel help`, `-device help`, `-chardev help` list
//!   what vmscope implements; `-help` lists only implemented options.
//! - Only `pc`/`pc-i440fx-7.2` is built; other machine types and versions are refused.
//! - `-drive` accepts the Freezing Time keys `hack=` and `itime=` (QEMU rejects them).
//! - Chardev files and sockets are opened by the chardev layer at start-up, not here, so
//!   errors such as an unwritable `logfile=` come from there.
//! - vmscope never reads `/etc/qemu/qemu.conf` (as if `-no-user-config` were always given).
//! - Arguments must be valid UTF-8.

mod build;
mod chardev;
mod command_line;
mod cpu;
mod device;
mod display;
mod drive;
mod error;
mod help;
mod ide;
mod keyval;
mod machine;
mod numbers;
mod option_table;
mod other_options;
mod qemu_catalog;
mod qemu_opts;

use std::ffi::OsString;
use std::io::Write;

pub use build::{Built, Parsed};
pub use device::VMSCOPE_DEVICES;
pub use drive::{DriveInterface, DriveMedia, DriveOptions};
pub use error::{program_name, CliError, ErrorKind, Location, Warning};
pub use help::{help_text, version_text};

use crate::config::Config;

/// What the command line asks for.
// Built once per process; boxing the configuration would only complicate the caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum CliOutcome {
    /// Build and run this machine.
    Run(Config),
    /// Informational output (`-help`, `-version`, `-machine help`, ...) has been printed;
    /// exit with this status.
    Exit(i32),
}

/// Parses `argv` (including `argv[0]`) as `qemu-system-x86_64` would. Warnings go to
/// stderr and help texts to stdout as they occur, like QEMU; a returned error has not been
/// printed yet: print [`CliError::report`] and exit with status 1.
pub fn parse(argv: &[OsString]) -> Result<CliOutcome, CliError> {
    let argv0 = argv.first().map(OsString::as_os_str).unwrap_or_default();
    let mut console = Console::real(&program_name(argv0));
    parse_with(argv, &mut console)
}

/// [`parse`] with the output captured or redirected (for tests and embedders).
pub fn parse_with(argv: &[OsString], console: &mut Console) -> Result<CliOutcome, CliError> {
    let parsed = match parse_all(argv, console)? {
        Built::Exit(code) => return Ok(CliOutcome::Exit(code)),
        Built::Parsed(parsed) => parsed,
    };
    if let Some(first) = parsed.refusals.first() {
        return Err(first.clone());
    }
    if let Some(warning) = parsed.display_warning {
        console.warn(warning);
    }
    Ok(CliOutcome::Run(parsed.config))
}

/// Every check QEMU makes, and the typed result including the parts vmscope refuses
/// (drives, ...), so subsystems can be switched on one at a time.
pub fn parse_all(argv: &[OsString], console: &mut Console) -> Result<Built, CliError> {
    let args = command_line::Args::new(argv)?;
    args.check_names()?;
    let read = match command_line::CommandLine::read(&args, console)? {
        command_line::Read::Exit(code) => return Ok(Built::Exit(code)),
        command_line::Read::Options(read) => read,
    };
    build::build(*read, console)
}

/// Where warnings and help texts go.
pub struct Console {
    program: String,
    capture: Option<Captured>,
}

#[derive(Default)]
struct Captured {
    warnings: Vec<String>,
    stdout: String,
}

impl Console {
    /// Writes to the process's stdout and stderr; `program` prefixes warnings.
    pub fn real(program: &str) -> Self {
        Console {
            program: program.to_string(),
            capture: None,
        }
    }

    /// Keeps everything in memory.
    pub fn capture(program: &str) -> Self {
        Console {
            program: program.to_string(),
            capture: Some(Captured::default()),
        }
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// Prints a warning to stderr in QEMU's format.
    pub fn warn(&mut self, warning: Warning) {
        let text = warning.report(&self.program);
        match &mut self.capture {
            Some(c) => c.warnings.push(text),
            None => {
                let mut err = std::io::stderr().lock();
                // Nothing sensible to do when stderr is gone.
                let _ = err.write_all(text.as_bytes());
            }
        }
    }

    /// Prints a non-fatal `error_report()` line (`PROG: MESSAGE`) to stderr.
    pub fn error_line(&mut self, message: &str) {
        let text = format!("{}: {message}\n", self.program);
        match &mut self.capture {
            Some(c) => c.warnings.push(text),
            None => {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
        }
    }

    /// Prints informational output to stdout.
    pub fn print(&mut self, text: &str) {
        match &mut self.capture {
            Some(c) => c.stdout.push_str(text),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    }

    /// Captured warnings, each as printed (with its trailing newline).
    pub fn captured_warnings(&self) -> Vec<String> {
        self.capture
            .as_ref()
            .map(|c| c.warnings.clone())
            .unwrap_or_default()
    }

    /// Captured stdout.
    pub fn captured_stdout(&self) -> String {
        self.capture
            .as_ref()
            .map(|c| c.stdout.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
