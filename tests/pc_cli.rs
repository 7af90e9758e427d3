//! The command line of firmware boot: `-bios`, `-L`, `-nographic`, `-boot`, `-rtc`,
//! `-debugcon` and `-device isa-debugcon` reach the configuration the `pc` machine is built
//! from (their refusals and QEMU's error texts are checked in the unit tests and in
//! `pc_seabios`).

use std::ffi::OsString;
use std::path::PathBuf;

use vmscope::cli::{parse, CliOutcome};
use vmscope::config::{BootConfig, Config, DebugconConfig};

fn config(args: &[&str]) -> Config {
    let argv: Vec<OsString> = std::iter::once("qemu-system-x86_64")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    match parse(&argv) {
        Ok(CliOutcome::Run(config)) => config,
        other => panic!("{args:?}: {other:?}"),
    }
}

#[test]
fn defaults_are_qemus() {
    let c = config(&["-display", "none", "-nodefaults"]);
    assert_eq!(c.firmware, None);
    assert!(c.data_dirs.is_empty());
    assert!(!c.nographic);
    assert!(c.debugcons.is_empty());
    assert_eq!(
        c.boot,
        BootConfig {
            order: "cad".into(),
            reboot_timeout: -1,
            menu: false,
            splash_time: None,
        }
    );
}

#[test]
fn firmware_options_reach_the_config() {
    let c = config(&[
        "-nographic",
        "-nodefaults",
        "-bios",
        "my-bios.bin",
        "-L",
        "/opt/fw",
        "-L",
        "/opt/fw2",
        "-boot",
        "order=dc,reboot-timeout=2000,menu=on,splash-time=1500",
        "-rtc",
        "base=utc,clock=host",
        "-chardev",
        "null,id=dbg",
        "-device",
        "isa-debugcon,iobase=0x402,chardev=dbg",
    ]);
    assert_eq!(c.firmware, Some(PathBuf::from("my-bios.bin")));
    assert_eq!(
        c.data_dirs,
        vec![PathBuf::from("/opt/fw"), PathBuf::from("/opt/fw2")]
    );
    assert!(c.nographic);
    assert_eq!(
        c.boot,
        BootConfig {
            order: "dc".into(),
            reboot_timeout: 2000,
            menu: true,
            splash_time: Some(1500),
        }
    );
    assert_eq!(
        c.debugcons,
        vec![DebugconConfig {
            chardev: "dbg".into(),
            iobase: 0x402
        }]
    );
}

#[test]
fn debugcon_shorthand_makes_a_debugcon_chardev_on_port_e9() {
    let c = config(&[
        "-display",
        "none",
        "-nodefaults",
        "-debugcon",
        "file:/tmp/vmscope-debugcon-test.txt",
        "-machine",
        "graphics=off,firmware=other.bin",
    ]);
    assert_eq!(
        c.debugcons,
        vec![DebugconConfig {
            chardev: "debugcon".into(),
            iobase: 0xe9
        }]
    );
    assert!(c.chardevs.iter().any(|d| d.id == "debugcon"));
    assert!(c.nographic);
    assert_eq!(c.firmware, Some(PathBuf::from("other.bin")));
}
