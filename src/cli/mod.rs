//! QEMU's argv grammar into a typed [`crate::config::Config`].
//!
//! This is the subset needed to boot the test kernel and drive it from a monitor: `-kernel`,
//! `-initrd`, `-append`, `-m`, `-smp N`, `-nographic`, `-serial`, `-monitor`, `-S`,
//! `-no-reboot`, `-no-shutdown`, `-name`, `-accel`/`-enable-kvm`, `-display none`,
//! `-nodefaults`, `-no-user-config`, `-version`. Every other option is refused with a
//! message naming it: the complete nom-based QEMU grammar (issue 2, item 2) replaces this
//! module.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{
    Accelerator, ChardevBackend, ChardevConfig, Config, KernelBoot, MonitorConfig, MonitorMode,
    SmpConfig, SocketAddress, SocketChardev,
};

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum CliOutcome {
    Run(Box<Config>),
    /// Informational output was printed; exit with this status.
    Exit(i32),
}

/// A command-line error, worded like QEMU's (without the program-name prefix).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

fn err(option: &str, text: &str) -> CliError {
    CliError(format!("{option}: {text}"))
}

/// Parses `argv` (including argv[0]).
pub fn parse(argv: &[OsString]) -> Result<CliOutcome, CliError> {
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut config = Config::default();
    let mut nographic = false;
    let mut serial: Vec<String> = Vec::new();
    let mut monitors: Vec<String> = Vec::new();
    let mut kernel: Option<PathBuf> = None;
    let mut initrd: Option<PathBuf> = None;
    let mut append: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let raw = &args[i];
        let name = raw.strip_prefix("--").or_else(|| raw.strip_prefix('-'));
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Err(CliError(format!(
                "{raw}: drive images are not supported yet by vmscope"
            )));
        };
        let option = format!("-{name}");
        let mut value = || -> Result<String, CliError> {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| err(&option, "requires an argument"))
        };
        match name {
            "version" => {
                println!(
                    "QEMU emulator version 7.2.0 (vmscope {})\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers",
                    env!("CARGO_PKG_VERSION")
                );
                return Ok(CliOutcome::Exit(0));
            }
            "kernel" => kernel = Some(value()?.into()),
            "initrd" => initrd = Some(value()?.into()),
            "append" => append = Some(value()?),
            "m" => {
                let v = value()?;
                config.memory.size = parse_memory(&v).ok_or_else(|| {
                    err(
                        &format!("-m {v}"),
                        "Parameter 'size' expects a non-negative number below 2^64",
                    )
                })?;
            }
            "smp" => {
                let v = value()?;
                let cpus: u32 = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=255).contains(&n))
                    .ok_or_else(|| {
                        err(
                            &format!("-smp {v}"),
                            "only '-smp N' (1..255) is supported yet by vmscope",
                        )
                    })?;
                config.smp = SmpConfig {
                    cpus,
                    sockets: cpus,
                    max_cpus: cpus,
                    ..SmpConfig::default()
                };
            }
            "nographic" => nographic = true,
            "serial" => serial.push(value()?),
            "monitor" => monitors.push(value()?),
            "S" => config.start_paused = true,
            "no-reboot" => config.no_reboot = true,
            "no-shutdown" => config.no_shutdown = true,
            "nodefaults" => config.no_defaults = true,
            "no-user-config" => {}
            "name" => config.name = Some(value()?),
            "enable-kvm" => config.accelerators.push(Accelerator::Kvm),
            "accel" => match value()?.as_str() {
                "kvm" => config.accelerators.push(Accelerator::Kvm),
                other => {
                    return Err(err(
                        &format!("-accel {other}"),
                        "vmscope runs guests on KVM only; use -accel kvm",
                    ))
                }
            },
            "display" => {
                let v = value()?;
                if v != "none" {
                    config.display_requested = true;
                }
            }
            _ => return Err(err(
                &option,
                "option not supported yet by vmscope (the full QEMU command line is in progress)",
            )),
        }
        i += 1;
    }
    if let Some(kernel) = kernel {
        config.kernel_boot = Some(KernelBoot {
            kernel,
            initrd,
            cmdline: append.unwrap_or_default(),
        });
    } else if initrd.is_some() || append.is_some() {
        return Err(CliError(
            "-initrd and -append only allowed with -kernel option".into(),
        ));
    }

    // -nographic: serial and monitor share stdio through a mux, as in QEMU.
    if nographic && serial.is_empty() && monitors.is_empty() && !config.no_defaults {
        serial.push("mon:stdio".into());
    } else if nographic && serial.is_empty() && !config.no_defaults {
        serial.push("stdio".into());
    }
    for (index, spec) in serial.iter().enumerate() {
        let id = format!("serial{index}");
        add_chardev(&mut config, &id, spec, "-serial")?;
        config.serial_ports.push(id);
    }
    for (index, spec) in monitors.iter().enumerate() {
        let id = format!("compat_monitor{index}");
        add_chardev(&mut config, &id, spec, "-monitor")?;
        config.monitors.push(MonitorConfig {
            chardev: id,
            mode: MonitorMode::Readline,
            pretty: false,
        });
    }
    if config.display_requested {
        eprintln!(
            "{}: warning: vmscope emulates no display; display options are ignored",
            crate::program_name()
        );
    }
    Ok(CliOutcome::Run(Box::new(config)))
}

/// `-m` sizes: a number of MiB, or a number with a K/M/G/T suffix.
fn parse_memory(text: &str) -> Option<u64> {
    let (digits, shift) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 10),
        'm' | 'M' => (&text[..text.len() - 1], 20),
        'g' | 'G' => (&text[..text.len() - 1], 30),
        't' | 'T' => (&text[..text.len() - 1], 40),
        _ => (text, 20),
    };
    let value: u64 = digits.parse().ok()?;
    value.checked_mul(1 << shift).filter(|&v| v > 0)
}

/// Adds the chardev a `-serial`/`-monitor` value describes (and the monitor that a
/// `mon:` prefix puts on it).
fn add_chardev(config: &mut Config, id: &str, spec: &str, option: &str) -> Result<(), CliError> {
    let (mux, spec) = match spec.strip_prefix("mon:") {
        Some(rest) => (true, rest),
        None => (false, spec),
    };
    let backend = match spec {
        "stdio" => ChardevBackend::Stdio { signal: true },
        "null" | "none" => ChardevBackend::Null,
        _ => {
            if let Some(rest) = spec.strip_prefix("unix:") {
                let mut parts = rest.split(',');
                let path = parts.next().unwrap_or_default();
                let mut socket = SocketChardev {
                    address: SocketAddress::Unix { path: path.into() },
                    server: false,
                    wait: true,
                    telnet: false,
                    reconnect_secs: 0,
                };
                for flag in parts {
                    match flag {
                        "server" | "server=on" => socket.server = true,
                        "nowait" | "wait=off" => socket.wait = false,
                        _ => {
                            return Err(err(
                                &format!("{option} {spec}"),
                                &format!("'{flag}' is not supported yet by vmscope"),
                            ))
                        }
                    }
                }
                ChardevBackend::Socket(socket)
            } else {
                return Err(err(
                    &format!("{option} {spec}"),
                    "this chardev is not supported yet by vmscope (stdio, null, mon:stdio, unix:PATH,server,nowait are)",
                ));
            }
        }
    };
    config.chardevs.push(ChardevConfig {
        id: id.to_string(),
        backend,
        mux,
        logfile: None,
    });
    if mux {
        config.monitors.push(MonitorConfig {
            chardev: id.to_string(),
            mode: MonitorMode::Readline,
            pretty: false,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<CliOutcome, CliError> {
        let argv: Vec<OsString> = std::iter::once("qemu-system-x86_64")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse(&argv)
    }

    #[test]
    fn nographic_muxes_serial_and_monitor_on_stdio() {
        let Ok(CliOutcome::Run(config)) = run(&[
            "-nographic",
            "-kernel",
            "k.elf",
            "-append",
            "smp",
            "-smp",
            "4",
            "-m",
            "1G",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(config.smp.cpus, 4);
        assert_eq!(config.memory.size, 1 << 30);
        assert_eq!(config.serial_ports, ["serial0"]);
        assert!(config.chardevs[0].mux);
        assert_eq!(config.monitors[0].chardev, "serial0");
        assert_eq!(config.kernel_boot.unwrap().cmdline, "smp");
    }

    #[test]
    fn unsupported_options_are_named() {
        let e = run(&["-drive", "file=x"]).unwrap_err();
        assert!(e.0.starts_with("-drive: option not supported yet"), "{e}");
        assert_eq!(
            run(&["-kernel"]).unwrap_err().0,
            "-kernel: requires an argument"
        );
    }

    #[test]
    fn monitor_on_a_unix_socket() {
        let Ok(CliOutcome::Run(config)) = run(&[
            "-S",
            "-monitor",
            "unix:/tmp/m.sock,server,nowait",
            "-m",
            "512",
        ]) else {
            panic!("parse failed");
        };
        assert!(config.start_paused);
        assert_eq!(config.memory.size, 512 << 20);
        assert_eq!(
            config.chardevs[0].backend,
            ChardevBackend::Socket(SocketChardev {
                address: SocketAddress::Unix {
                    path: "/tmp/m.sock".into()
                },
                server: true,
                wait: false,
                telnet: false,
                reconnect_secs: 0
            })
        );
    }
}
