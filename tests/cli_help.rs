//! The informational options of the binary (`-version`, `-help`, `-machine help`,
//! `-cpu help`, `-device help`/`-device ?`), checked on their own and, where vmscope
//! offers the same thing, against QEMU 7.2's output.

mod common_cli;

use std::time::Duration;

use common_cli::{real_qemu, run, Run, Workspace};

const LIMIT: Duration = Duration::from_secs(20);

fn both(ws: &Workspace, args: &[&str]) -> (Run, Run) {
    let ours = run(&ws.vmscope(), args, &ws.dir, LIMIT);
    let theirs = run(&real_qemu(), args, &ws.dir, LIMIT);
    assert!(
        !ours.stderr.contains("panicked"),
        "{args:?}: {}",
        ours.stderr
    );
    (ours, theirs)
}

#[test]
fn version() {
    let ws = Workspace::new("cli-version");
    let (ours, theirs) = both(&ws, &["-version"]);
    assert_eq!(ours.status, Some(0));
    assert_eq!(ours.stderr, "");
    let lines: Vec<&str> = ours.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "QEMU emulator version 7.2.0 (vmscope {})",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The copyright line is QEMU 7.2's own.
    assert_eq!(lines[1], theirs.stdout.lines().nth(1).unwrap());
    assert_eq!(lines.len(), 2);
}

#[test]
fn help_has_qemu_layout_and_vmscope_options() {
    let ws = Workspace::new("cli-help");
    for flag in ["-help", "-h", "--help"] {
        let (ours, theirs) = both(&ws, &["-display", "none", flag]);
        assert_eq!(ours.status, Some(0), "{flag}");
        let ours_lines: Vec<&str> = ours.stdout.lines().collect();
        let theirs_lines: Vec<&str> = theirs.stdout.lines().collect();
        assert!(ours_lines[0].starts_with("QEMU emulator version 7.2.0 (vmscope "));
        // Same layout as QEMU: version, copyright, usage, the disk_image note.
        assert_eq!(ours_lines[1], theirs_lines[1]);
        assert_eq!(ours_lines[2], theirs_lines[2]);
        assert_eq!(
            ours_lines[2],
            "usage: qemu-system-x86_64 [options] [disk_image]"
        );
        assert_eq!(ours_lines[3], "");
        assert!(ours_lines[4].starts_with(theirs_lines[4]));
        assert!(ours
            .stdout
            .contains("\nStandard options:\n-h or -help     display this help and exit\n"));
        // libguestfs 1.48 parses the version from the first X.Y and looks for these.
        for option in ["-nodefaults", "-no-user-config", "-no-hpet"] {
            assert!(ours.stdout.contains(option), "{option}");
        }
        // Options vmscope refuses are not advertised.
        for option in ["\n-fda", "\n-netdev ", "\n-usb ", "\n-spice "] {
            assert!(!ours.stdout.contains(option), "{option}");
        }
        // Drives are, with QEMU's lines where vmscope takes every value QEMU does.
        for line in [
            "\n-hda/-hdb file  use 'file' as hard disk 0/1 image\n",
            "\n-cdrom file     use 'file' as CD-ROM image\n",
            "\n-snapshot       write to temporary files instead of disk image files\n",
        ] {
            assert!(ours.stdout.contains(line), "{line}");
            assert!(theirs.stdout.contains(line), "{line}");
        }
    }
}

#[test]
fn machine_help_lists_qemus_pc_lines() {
    let ws = Workspace::new("cli-machine-help");
    for args in [&["-machine", "help"][..], &["-M", "?"][..]] {
        let (ours, theirs) = both(&ws, args);
        assert_eq!(ours.status, Some(0));
        assert_eq!(theirs.status, Some(0));
        let ours_lines: Vec<&str> = ours.stdout.lines().collect();
        assert_eq!(ours_lines[0], "Supported machines are:");
        // Each machine vmscope lists is printed exactly as QEMU prints it.
        for line in &ours_lines[1..] {
            assert!(theirs.stdout.lines().any(|l| l == *line), "{line:?}");
        }
        assert_eq!(ours_lines.len(), 3);
    }
}

#[test]
fn cpu_help_lists_vmscope_models_and_qemus_flags() {
    let ws = Workspace::new("cli-cpu-help");
    let (ours, theirs) = both(&ws, &["-cpu", "help"]);
    assert_eq!(ours.status, Some(0));
    let models: Vec<&str> = ours
        .stdout
        .lines()
        .filter(|l| l.starts_with("x86 "))
        .collect();
    assert_eq!(models.len(), 4);
    for line in &models {
        assert!(theirs.stdout.lines().any(|l| l == *line), "{line:?}");
    }
    let flags = |text: &str| {
        text.split("Recognized CPUID flags:")
            .nth(1)
            .map(str::to_string)
    };
    assert_eq!(flags(&ours.stdout), flags(&theirs.stdout));
    assert!(flags(&ours.stdout).is_some());
}

#[test]
fn device_help_lists_only_what_vmscope_has() {
    let ws = Workspace::new("cli-device-help");
    for q in ["help", "?"] {
        let args = [
            "-display",
            "none",
            "-machine",
            "accel=kvm:tcg",
            "-device",
            q,
        ];
        let ours = run(&ws.vmscope(), &args, &ws.dir, LIMIT);
        assert_eq!(ours.status, Some(0));
        assert_eq!(ours.stderr, "");
        let expected = vmscope::cli::VMSCOPE_DEVICES
            .iter()
            .map(|d| format!("name \"{}\"", d.name))
            .collect::<Vec<_>>();
        let listed: Vec<&str> = ours
            .stdout
            .lines()
            .filter(|l| l.starts_with("name "))
            .collect();
        assert_eq!(listed.len(), expected.len());
    }
}
