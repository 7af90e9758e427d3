//! Whole command lines: every seed workflow's line parses, each option lands where it
//! belongs, and the informational options print what they should.

use std::ffi::OsString;
use std::path::PathBuf;

use super::*;
use crate::config::{
    Accelerator, ChardevBackend, ChardevConfig, CpuModel, CpuModelKind, KernelBoot, MemoryConfig,
    MonitorConfig, MonitorMode, SmpConfig, SocketAddress, SocketChardev,
};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn argv(args: &[&str]) -> Vec<OsString> {
    std::iter::once("qemu-system-x86_64")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

/// Parses `args` with output captured; returns the result and the console.
fn parsed(args: &[&str]) -> (Parsed, Console) {
    let mut console = Console::capture("qemu-system-x86_64");
    match parse_all(&argv(args), &mut console) {
        Ok(Built::Parsed(p)) => (*p, console),
        Ok(Built::Exit(code)) => panic!("{args:?} exited with {code}"),
        Err(e) => panic!("{args:?}: {}", e.report("qemu-system-x86_64".as_ref())),
    }
}

/// Runs `args` the way the binary does.
fn outcome(args: &[&str]) -> (Result<CliOutcome, CliError>, Console) {
    let mut console = Console::capture("qemu-system-x86_64");
    let r = parse_with(&argv(args), &mut console);
    (r, console)
}

fn refusal(p: &Parsed) -> String {
    p.refusals
        .first()
        .map(|e| e.report("qemu-system-x86_64".as_ref()))
        .unwrap_or_default()
}

/// A file that looks like a qcow2 image (its magic), removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("vmscope-cli-{tag}-{}.qcow2", std::process::id()));
        std::fs::write(&path, b"QFI\xfb\0\0\0\x03").unwrap();
        Image(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unix_server(id: &str, path: &str) -> ChardevConfig {
    ChardevConfig {
        id: id.into(),
        backend: ChardevBackend::Socket(SocketChardev {
            address: SocketAddress::Unix { path: path.into() },
            server: true,
            wait: false,
            telnet: false,
            reconnect_secs: 0,
        }),
        mux: false,
        logfile: None,
    }
}

fn monitor(chardev: &str, mode: MonitorMode) -> MonitorConfig {
    MonitorConfig {
        chardev: chardev.into(),
        mode,
        pretty: false,
    }
}

fn plain(id: &str, backend: ChardevBackend) -> ChardevConfig {
    ChardevConfig {
        id: id.into(),
        backend,
        mux: false,
        logfile: None,
    }
}

fn smp(cpus: u32, sockets: u32, cores: u32) -> SmpConfig {
    SmpConfig {
        cpus,
        sockets,
        dies: 1,
        cores,
        threads: 1,
        max_cpus: cpus,
    }
}

/// The QGA/HMP/QMP options every seed-000 launch line carries.
const SEED_000_CHANNELS: &[&str] = &[
    "-nic",
    "user,hostfwd=tcp::10022-:22",
    "-chardev",
    "socket,path=qemu-ga-socket,server,nowait,id=qga0",
    "-device",
    "virtio-serial",
    "-device",
    "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    "-monitor",
    "unix:qemu-monitor-socket,server,nowait",
    "-qmp",
    "unix:qemu-qmp-socket,server,nowait",
];

/// `-device help` for the devices vmscope implements, as QEMU 7.2 prints them.
const DEVICE_HELP: &str = "Misc devices:\nname \"isa-debugcon\", bus ISA\n";

#[test]
fn launch_vm_sh() {
    let img = Image::new("launch");
    let drive = format!("format=qcow2,file={},cache=none", img.path());
    let mut args = vec![
        "-smp",
        "4",
        "-m",
        "4G",
        "-drive",
        &drive,
        "--accel",
        "kvm",
        "-nographic",
    ];
    args.extend_from_slice(SEED_000_CHANNELS);
    let (p, console) = parsed(&args);
    let c = &p.config;
    assert_eq!(c.smp, smp(4, 1, 4));
    assert_eq!(c.memory, MemoryConfig { size: 4 * GIB });
    assert_eq!(c.accelerators, vec![Accelerator::Kvm]);
    assert_eq!(
        c.chardevs,
        vec![
            unix_server("qga0", "qemu-ga-socket"),
            unix_server("compat_monitor0", "qemu-monitor-socket"),
            unix_server("compat_monitor1", "qemu-qmp-socket"),
            // -nographic with a monitor elsewhere: the serial port alone on stdio.
            plain("serial0", ChardevBackend::Stdio { signal: true }),
        ]
    );
    assert_eq!(c.serial_ports, vec!["serial0".to_string()]);
    assert_eq!(
        c.monitors,
        vec![
            monitor("compat_monitor0", MonitorMode::Readline),
            monitor("compat_monitor1", MonitorMode::Control),
        ]
    );
    assert!(!c.display_requested);
    // The drive is QEMU's ide0-hd0 (no if=), O_DIRECT with write-back.
    assert_eq!(p.drives.len(), 1);
    let d = &p.drives[0];
    assert_eq!(d.id, "ide0-hd0");
    assert_eq!(d.format.as_deref(), Some("qcow2"));
    assert!(d.cache_direct && d.cache_writeback);
    // QEMU 7.2 warns about the short-form booleans of -chardev (not of -monitor/-qmp).
    let warnings = console.captured_warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("qemu-system-x86_64: -chardev socket,path=qemu-ga-socket,server,nowait,id=qga0: warning: short-form boolean option 'server' deprecated\nPlease use server=on instead\n"));
    // The drive goes to the IDE controller; refused today, first in argv order: the NIC.
    assert_eq!(
        p.config.drives[0].spec.slot,
        crate::block::drive::DriveSlot::Ide { bus: 0, unit: 0 }
    );
    let refused: Vec<String> = p.refusals.iter().map(|e| e.to_string()).collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused[0].starts_with("-nic user"));
    assert_eq!(
        refused[1],
        "-device virtio-serial: not supported yet by vmscope (device 'virtio-serial')"
    );
}

#[test]
fn seed_000_measurement_lines() {
    let img = Image::new("measure");
    // footprint_ssh.sh / throughput_ssh.sh
    for cache in ["1792K", "7M", "112000K"] {
        let drive = format!(
            "file={},format=qcow2,cache=none,l2-cache-size={cache},l2-cache-entry-size=512",
            img.path()
        );
        let mut args = vec![
            "--accel",
            "kvm",
            "-smp",
            "4",
            "-m",
            "4G",
            "-drive",
            &drive,
            "-nographic",
        ];
        args.extend_from_slice(SEED_000_CHANNELS);
        let (p, _) = parsed(&args);
        let expected = super::numbers::strtosz(cache).unwrap().bytes;
        assert_eq!(p.drives[0].l2_cache_size, Some(expected));
        assert_eq!(p.drives[0].l2_cache_entry_size, Some(512));
    }
    // memory_grid.sh passes an empty l2-cache-size=: QEMU refuses it.
    let drive = format!("file={},format=qcow2,cache=none,l2-cache-size=", img.path());
    let (r, _) = outcome(&["--accel", "kvm", "-m", "4G", "-drive", &drive]);
    assert_eq!(
        r.unwrap_err().report("qemu-system-x86_64".as_ref()),
        format!("qemu-system-x86_64: -drive {drive}: Parameter 'l2-cache-size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.\n")
    );
    // micro_bench_start.exp: -serial stdio without -nographic; the default monitor is a
    // virtual console, which without a display goes nowhere.
    let drive = format!("file={},format=qcow2,l2-cache-size=2M", img.path());
    let (p, _) = parsed(&[
        "-smp", "4", "-serial", "stdio", "--accel", "kvm", "-m", "4G", "-drive", &drive,
    ]);
    assert_eq!(
        p.config.chardevs,
        vec![
            plain("compat_monitor0", ChardevBackend::Null),
            plain("serial0", ChardevBackend::Stdio { signal: true }),
        ]
    );
    assert_eq!(
        p.config.monitors,
        vec![monitor("compat_monitor0", MonitorMode::Readline)]
    );
    assert_eq!(p.drives[0].l2_cache_size, Some(2 * MIB));
    // run_rocksdb.exp / write_data.exp: -nographic alone muxes serial and HMP on stdio.
    let drive = format!(
        "file={},format=qcow2,cache=none,l2-cache-size=1792K",
        img.path()
    );
    let (p, _) = parsed(&[
        "-smp",
        "4",
        "--accel",
        "kvm",
        "-m",
        "4G",
        "-drive",
        &drive,
        "-nographic",
    ]);
    assert_eq!(
        p.config.chardevs,
        vec![ChardevConfig {
            id: "serial0".into(),
            backend: ChardevBackend::Stdio { signal: false },
            mux: true,
            logfile: None,
        }]
    );
    assert_eq!(p.config.serial_ports, vec!["serial0".to_string()]);
    assert_eq!(
        p.config.monitors,
        vec![monitor("serial0", MonitorMode::Readline)]
    );
}

#[test]
fn readme_telnet_monitor_variant() {
    let (r, _) = outcome(&[
        "-enable-kvm",
        "-nographic",
        "-monitor",
        "telnet:127.0.0.1:55555,server,nowait",
        "-chardev",
        "socket,path=/tmp/qga.sock,server=on,wait=off,id=qga0",
    ]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        c.chardevs[0].backend,
        ChardevBackend::Socket(SocketChardev {
            address: SocketAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 55555
            },
            server: true,
            wait: false,
            telnet: true,
            reconnect_secs: 0,
        })
    );
    assert_eq!(c.chardevs[0].id, "compat_monitor0");
    assert_eq!(c.chardevs[1].id, "qga0");
}

#[test]
fn freezing_time_line() {
    let loop_dev = Image::new("loop0");
    let hda = Image::new("freezingtime");
    let drive = format!(
        "file={},format=raw,if=none,id=drive0,cache=none,aio=native,hack=on,itime=on",
        loop_dev.path()
    );
    let args = [
        "-name",
        "test",
        "-m",
        "2G",
        "-cpu",
        "host",
        "-enable-kvm",
        "-smp",
        "sockets=1,cores=4",
        "-rtc",
        "base=localtime,clock=host",
        "-drive",
        &drive,
        "-object",
        "iothread,id=iothread0",
        "-device",
        "virtio-blk-pci,iothread=iothread0,drive=drive0",
        "-hda",
        hda.path(),
        "-kernel",
        "/boot/bzImage",
        "-append",
        "root=/dev/hda",
        "-vga",
        "cirrus",
        "-boot",
        "c",
        "-monitor",
        "stdio",
        "-vnc",
        "localhost:1",
        "-nographic",
        "-nodefaults",
    ];
    let (p, _) = parsed(&args);
    let c = &p.config;
    assert_eq!(c.name.as_deref(), Some("test"));
    assert_eq!(c.memory.size, 2 * GIB);
    assert_eq!(
        c.cpu,
        CpuModel {
            kind: CpuModelKind::Host,
            feature_overrides: vec![]
        }
    );
    assert_eq!(c.accelerators, vec![Accelerator::Kvm]);
    assert_eq!(c.smp, smp(4, 1, 4));
    assert_eq!(
        c.kernel_boot,
        Some(KernelBoot {
            kernel: "/boot/bzImage".into(),
            initrd: None,
            cmdline: "root=/dev/hda".into()
        })
    );
    assert_eq!(
        c.chardevs,
        vec![plain(
            "compat_monitor0",
            ChardevBackend::Stdio { signal: true }
        )]
    );
    assert_eq!(
        c.monitors,
        vec![monitor("compat_monitor0", MonitorMode::Readline)]
    );
    assert!(c.serial_ports.is_empty());
    assert!(c.no_defaults);
    assert!(c.display_requested);
    let d = &p.drives[0];
    assert_eq!(d.id, "drive0");
    assert_eq!(d.interface, DriveInterface::None);
    assert!(d.freezing_time_hack && d.freezing_time_itime);
    assert_eq!(d.aio.as_deref(), Some("native"));
    assert_eq!(p.drives[1].id, "ide0-hd0");
    assert_eq!(p.drives[1].media, DriveMedia::Disk);
    assert_eq!(c.rtc.base, crate::config::RtcBase::LocalTime);
    // The first refusal is the Freezing Time drive.
    assert!(refusal(&p).contains("-drive") && refusal(&p).contains("Freezing Time"));
    let warning = p
        .display_warning
        .as_ref()
        .unwrap()
        .report("qemu-system-x86_64");
    assert_eq!(
        warning,
        "qemu-system-x86_64: -vga cirrus: warning: vmscope emulates no display; display options have no effect\n"
    );
}

#[test]
fn bitmap_trace_line_runs() {
    let (r, _) = outcome(&["-enable-kvm", "-qmp", "tcp:localhost:4444,server,nowait"]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(c.accelerators, vec![Accelerator::Kvm]);
    assert_eq!(
        c.chardevs,
        vec![
            ChardevConfig {
                id: "compat_monitor0".into(),
                backend: ChardevBackend::Socket(SocketChardev {
                    address: SocketAddress::Tcp {
                        host: "localhost".into(),
                        port: 4444
                    },
                    server: true,
                    wait: false,
                    telnet: false,
                    reconnect_secs: 0,
                }),
                mux: false,
                logfile: None,
            },
            plain("serial0", ChardevBackend::Null),
        ]
    );
    assert_eq!(
        c.monitors,
        vec![monitor("compat_monitor0", MonitorMode::Control)]
    );
    assert_eq!(c.serial_ports, vec!["serial0".to_string()]);
}

#[test]
fn dpt_line() {
    let img = Image::new("dpt");
    let (p, _) = parsed(&[
        "-m",
        "4g",
        "-machine",
        "accel=kvm",
        "-hda",
        img.path(),
        "-monitor",
        "stdio",
    ]);
    assert_eq!(p.config.memory.size, 4 * GIB);
    assert_eq!(p.config.accelerators, vec![Accelerator::Kvm]);
    assert_eq!(
        p.config.monitors,
        vec![monitor("compat_monitor0", MonitorMode::Readline)]
    );
    assert_eq!(p.drives[0].id, "ide0-hd0");
    // The disk goes to the PIIX3 IDE controller's primary master.
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    assert_eq!(
        p.config.drives[0].spec.slot,
        crate::block::drive::DriveSlot::Ide { bus: 0, unit: 0 }
    );
}

#[test]
fn libguestfs_appliance_line_and_probes() {
    let root = Image::new("appliance");
    let disk = Image::new("guestdisk");
    let drive_user = format!("file={},cache=writeback,id=hd0,if=none", disk.path());
    let drive_root = format!(
        "file={},snapshot=on,id=appliance,cache=unsafe,if=none,format=raw",
        root.path()
    );
    let append = "panic=1 console=ttyS0 edd=off udevtimeout=6000 udev.event-timeout=6000 no_timer_check printk.time=1 cgroup_disable=memory usbcore.nousb cryptomgr.notests tsc=reliable 8250.nr_uarts=1 root=UUID=0 selinux=0 quiet TERM=xterm";
    let args = [
        "-global",
        "virtio-blk-pci.scsi=off",
        "-no-user-config",
        "-nodefaults",
        "-display",
        "none",
        "-machine",
        "accel=kvm:tcg",
        "-cpu",
        "max,la57=off",
        "-m",
        "1280",
        "-no-reboot",
        "-rtc",
        "driftfix=slew",
        "-no-hpet",
        "-global",
        "kvm-pit.lost_tick_policy=discard",
        "-kernel",
        "/var/tmp/appliance/kernel",
        "-initrd",
        "/var/tmp/appliance/initrd",
        "-object",
        "rng-random,filename=/dev/urandom,id=rng0",
        "-device",
        "virtio-rng-pci,rng=rng0",
        "-device",
        "virtio-scsi-pci,id=scsi",
        "-drive",
        &drive_user,
        "-device",
        "scsi-hd,drive=hd0",
        "-drive",
        &drive_root,
        "-device",
        "scsi-hd,drive=appliance",
        "-device",
        "virtio-serial-pci",
        "-serial",
        "stdio",
        "-chardev",
        "socket,path=/tmp/libguestfsXXXXXX/guestfsd.sock,id=channel0",
        "-device",
        "virtserialport,chardev=channel0,name=org.libguestfs.channel.0",
        "-append",
        append,
    ];
    let (p, console) = parsed(&args);
    let c = &p.config;
    assert_eq!(c.accelerators, vec![Accelerator::Kvm, Accelerator::Tcg]);
    assert_eq!(
        c.cpu,
        CpuModel {
            kind: CpuModelKind::Max,
            feature_overrides: vec![("la57".into(), false)]
        }
    );
    assert_eq!(c.memory.size, 1280 * MIB);
    assert!(c.no_reboot && c.no_defaults && !c.display_requested);
    assert_eq!(
        c.kernel_boot,
        Some(KernelBoot {
            kernel: "/var/tmp/appliance/kernel".into(),
            initrd: Some("/var/tmp/appliance/initrd".into()),
            cmdline: append.into(),
        })
    );
    // The appliance socket: vmscope connects as a client.
    assert_eq!(
        c.chardevs[0],
        ChardevConfig {
            id: "channel0".into(),
            backend: ChardevBackend::Socket(SocketChardev {
                address: SocketAddress::Unix {
                    path: "/tmp/libguestfsXXXXXX/guestfsd.sock".into()
                },
                server: false,
                wait: true,
                telnet: false,
                reconnect_secs: 0,
            }),
            mux: false,
            logfile: None,
        }
    );
    assert_eq!(
        c.chardevs[1],
        plain("serial0", ChardevBackend::Stdio { signal: true })
    );
    assert_eq!(c.serial_ports, vec!["serial0".to_string()]);
    assert!(c.monitors.is_empty());
    assert_eq!(
        p.drives.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["hd0", "appliance"]
    );
    assert!(p.drives[1].snapshot);
    assert_eq!(
        console.captured_warnings(),
        vec!["qemu-system-x86_64: -no-hpet: warning: -no-hpet is deprecated, use '-machine hpet=off' instead\n"]
    );
    assert!(refusal(&p)
        .starts_with("qemu-system-x86_64: -global virtio-blk-pci.scsi=off: not supported yet"));

    // Probe 1: -help names the options libguestfs looks for.
    let (r, console) = outcome(&["-display", "none", "-help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    let help = console.captured_stdout();
    assert!(help.starts_with("QEMU emulator version 7.2.0 (vmscope "));
    for name in ["-nodefaults", "-no-user-config", "-no-hpet"] {
        assert!(help.contains(name), "{name}");
    }
    // Probe 2: the device list (vmscope has no virtio-rng-pci yet).
    let (r, console) = outcome(&[
        "-display",
        "none",
        "-machine",
        "accel=kvm:tcg",
        "-device",
        "?",
    ]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert_eq!(console.captured_stdout(), DEVICE_HELP);
    // Probes 3 and 4: QMP on stdio.
    let (r, _) = outcome(&[
        "-display",
        "none",
        "-machine",
        "accel=kvm:tcg",
        "-qmp",
        "stdio",
    ]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        c.chardevs[0],
        plain("compat_monitor0", ChardevBackend::Stdio { signal: true })
    );
    assert_eq!(
        c.monitors,
        vec![monitor("compat_monitor0", MonitorMode::Control)]
    );
}

#[test]
fn a_fully_supported_line_gives_the_whole_config() {
    let (r, console) = outcome(&[
        "-name",
        "guest=vm1,process=vm1",
        "-machine",
        "pc,accel=kvm",
        "-m",
        "512",
        "-smp",
        "2,sockets=2",
        "-cpu",
        "kvm64,+x2apic",
        "-nographic",
        "-parallel",
        "none",
        "-no-reboot",
        "-no-shutdown",
        "-S",
        "-pidfile",
        "vm.pid",
        "-daemonize",
        "-serial",
        "file:serial.log",
        "-chardev",
        "socket,id=mon0,path=mon.sock,server=on,wait=off",
        "-mon",
        "chardev=mon0,mode=control,pretty=on",
        "-kernel",
        "k",
        "-initrd",
        "i",
        "-append",
        "console=ttyS0",
    ]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    let expected = Config {
        name: Some("vm1".into()),
        process_name: Some("vm1".into()),
        memory: MemoryConfig { size: 512 * MIB },
        smp: smp(2, 2, 1),
        cpu: CpuModel {
            kind: CpuModelKind::Kvm64,
            feature_overrides: vec![("x2apic".into(), true)],
        },
        accelerators: vec![Accelerator::Kvm],
        kernel_boot: Some(KernelBoot {
            kernel: "k".into(),
            initrd: Some("i".into()),
            cmdline: "console=ttyS0".into(),
        }),
        chardevs: vec![
            unix_server("mon0", "mon.sock"),
            plain(
                "serial0",
                ChardevBackend::File {
                    path: "serial.log".into(),
                    input_path: None,
                    append: false,
                },
            ),
        ],
        serial_ports: vec!["serial0".into()],
        monitors: vec![MonitorConfig {
            chardev: "mon0".into(),
            mode: MonitorMode::Control,
            pretty: true,
        }],
        no_reboot: true,
        no_shutdown: true,
        start_paused: true,
        daemonize: true,
        pidfile: Some("vm.pid".into()),
        no_defaults: false,
        display_requested: false,
        firmware: None,
        nographic: true,
        debugcons: Vec::new(),
        boot: Default::default(),
        data_dirs: Vec::new(),
        drives: Vec::new(),
        rtc: Default::default(),
    };
    assert_eq!(c, expected);
    assert!(console.captured_warnings().is_empty());
}

#[test]
fn defaults_without_options() {
    let (r, _) = outcome(&[]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(c.memory.size, 128 * MIB);
    assert_eq!(c.smp, SmpConfig::default());
    assert_eq!(c.accelerators, vec![Accelerator::Kvm]);
    // QEMU with -display none: serial and HMP on (displayless) virtual consoles.
    assert_eq!(
        c.chardevs,
        vec![
            plain("compat_monitor0", ChardevBackend::Null),
            plain("serial0", ChardevBackend::Null)
        ]
    );
    assert_eq!(
        c.monitors,
        vec![monitor("compat_monitor0", MonitorMode::Readline)]
    );
    // -nodefaults: nothing.
    let (r, _) = outcome(&["-nodefaults"]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert!(c.chardevs.is_empty() && c.monitors.is_empty() && c.serial_ports.is_empty());
}

#[test]
fn serial_mon_prefix_muxes_a_monitor() {
    let (r, _) = outcome(&[
        "-serial",
        "mon:stdio",
        "-serial",
        "null",
        "-serial",
        "none",
        "-serial",
        "pipe:/tmp/p",
    ]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(c.serial_ports, vec!["serial0", "serial1", "serial2"]);
    assert!(c.chardevs[0].mux);
    assert_eq!(
        c.chardevs[2].backend,
        ChardevBackend::Pipe {
            path: "/tmp/p".into()
        }
    );
    assert_eq!(c.monitors, vec![monitor("serial0", MonitorMode::Readline)]);
}

#[test]
fn display_warning_is_printed_once_when_the_line_runs() {
    let (r, console) = outcome(&[
        "-nodefaults",
        "-vga",
        "std",
        "-vnc",
        ":1",
        "-display",
        "gtk",
    ]);
    assert!(matches!(r, Ok(CliOutcome::Run(ref c)) if c.display_requested));
    assert_eq!(
        console.captured_warnings(),
        vec!["qemu-system-x86_64: -vga std: warning: vmscope emulates no display; display options have no effect\n"]
    );
    let (_, console) = outcome(&[
        "-nodefaults",
        "-display",
        "none",
        "-vga",
        "none",
        "-vnc",
        "none",
    ]);
    assert!(console.captured_warnings().is_empty());
}

#[test]
fn informational_options() {
    let (r, console) = outcome(&["-version"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert_eq!(
        console.captured_stdout(),
        format!(
            "QEMU emulator version 7.2.0 (vmscope {})\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let (r, console) = outcome(&["-machine", "help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert!(console
        .captured_stdout()
        .starts_with("Supported machines are:\npc "));
    let (r, console) = outcome(&["-cpu", "help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert!(console.captured_stdout().contains("x86 max "));
    for q in ["help", "?"] {
        let (r, console) = outcome(&["-device", q]);
        assert_eq!(r, Ok(CliOutcome::Exit(0)));
        assert_eq!(console.captured_stdout(), DEVICE_HELP);
    }
    let (r, console) = outcome(&["-accel", "help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert_eq!(
        console.captured_stdout(),
        "Accelerators supported in QEMU binary:\nkvm\n"
    );
    let (r, console) = outcome(&["-chardev", "help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert!(console
        .captured_stdout()
        .starts_with("Available chardev backend types: \n  stdio\n"));
    // A group's "help" flag prints its keys and exits 1, as QEMU does.
    let (r, console) = outcome(&["-m", "1G,help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(1)));
    assert_eq!(
        console.captured_stdout(),
        "memory options:\n  maxmem=<size>\n  size=<size>\n  slots=<num>\n"
    );
    let (r, console) = outcome(&["-smp", "help"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    assert!(console.captured_stdout().starts_with("smp-opts options:\n"));
    // -version wins only if it comes before an error.
    let (r, _) = outcome(&["-version", "-m", "foo"]);
    assert_eq!(r, Ok(CliOutcome::Exit(0)));
    let (r, _) = outcome(&["-m", "foo", "-version"]);
    assert!(r.is_err());
}

#[test]
fn memory_sizes_follow_qemu() {
    for (arg, bytes) in [
        ("512", 512 * MIB),
        ("4G", 4 * GIB),
        ("1.5G", 3 * GIB / 2),
        ("0", 128 * MIB),
        ("size=2g", 2 * GIB),
        ("0x100", 256 * MIB),
    ] {
        let (r, _) = outcome(&["-nodefaults", "-m", arg]);
        let Ok(CliOutcome::Run(c)) = r else {
            panic!("{arg}: {r:?}")
        };
        assert_eq!(c.memory.size, bytes, "{arg}");
    }
    // A hex size with a suffix is deprecated (QEMU warns twice: -m, then machine memory).
    let (_, console) = outcome(&["-nodefaults", "-m", "0x10M"]);
    assert_eq!(
        console.captured_warnings(),
        vec![
            "qemu-system-x86_64: -m 0x10M: warning: Using a multiplier suffix on hex numbers is deprecated: 0x10M\n",
            "qemu-system-x86_64: warning: Using a multiplier suffix on hex numbers is deprecated: 0x10M\n",
        ]
    );
}

#[test]
fn accelerator_lists() {
    let accel = |args: &[&str]| match outcome(args).0 {
        Ok(CliOutcome::Run(c)) => c.accelerators,
        other => panic!("{args:?}: {other:?}"),
    };
    assert_eq!(accel(&["-accel", "kvm"]), vec![Accelerator::Kvm]);
    assert_eq!(accel(&["-accel", "accel=tcg"]), vec![Accelerator::Tcg]);
    assert_eq!(
        accel(&["-machine", "accel=tcg:kvm"]),
        vec![Accelerator::Tcg, Accelerator::Kvm]
    );
    // An invalid name in a list is reported and skipped, as QEMU does.
    let (r, console) = outcome(&["-machine", "accel=foo:kvm"]);
    assert!(matches!(r, Ok(CliOutcome::Run(_))));
    assert_eq!(
        console.captured_warnings(),
        vec![
            "qemu-system-x86_64: invalid accelerator foo\n",
            "qemu-system-x86_64: falling back to kvm\n"
        ]
    );
}

/// Random command lines from a pool of options and awkward arguments: parsing must never
/// panic, whatever the combination.
#[test]
fn random_command_lines_never_panic() {
    const OPTIONS: &[&str] = &[
        "-m",
        "-smp",
        "-cpu",
        "-machine",
        "-accel",
        "-chardev",
        "-serial",
        "-monitor",
        "-qmp",
        "-mon",
        "-drive",
        "-device",
        "-display",
        "-vga",
        "-vnc",
        "-name",
        "-netdev",
        "-nic",
        "-object",
        "-rtc",
        "-boot",
        "-global",
        "-kernel",
        "-append",
        "-initrd",
        "-nographic",
        "-nodefaults",
        "-S",
        "-daemonize",
        "-hda",
        "-blockdev",
        "-set",
        "-parallel",
        "--accel",
    ];
    const ARGS: &[&str] = &[
        "",
        ",",
        ",,",
        "=",
        "==,",
        "help",
        "?",
        "none",
        "stdio",
        "mon:stdio",
        "4G",
        "0x10M",
        "1.5",
        "-1",
        "18446744073709551616",
        "4,sockets=2",
        "max,+la57,-x2apic,la57=off",
        "socket,id=a,path=p,server,nowait",
        "tcp::4444,server,nowait",
        "unix:",
        "tcp:",
        "telnet:h:1,server",
        "chardev:a",
        "pc,accel=kvm:tcg",
        "q35",
        "file=img,if=none",
        "é",
        "ééééééééééééééééééééééééééééééééééééé:1",
        "tcp::aééééééééééééééééééééééééééééééé",
        "a.b.c=1,a=2",
        "vc:80Cx24C",
        "vc:99999999x1",
        "file:",
        "pipe:",
        "gtk,gl=on",
        "kvm,kernel-irqchip=split",
        "null,id=a,mux=on",
        "id=é",
        "user,id=n",
        "iothread,id=i",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..3000 {
        let mut args: Vec<&str> = Vec::new();
        for _ in 0..next(6) {
            args.push(OPTIONS[next(OPTIONS.len())]);
            if next(8) != 0 {
                args.push(ARGS[next(ARGS.len())]);
            }
        }
        let mut console = Console::capture("q");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = parse_all(&argv(&args), &mut console);
        }));
        assert!(result.is_ok(), "panicked on {args:?}");
    }
}

#[test]
fn snapshot_option_applies_to_drives_without_their_own_setting() {
    let (r, _) = outcome(&[
        "-snapshot",
        "-drive",
        "if=none,id=a,file=/dev/null,format=raw",
        "-drive",
        "if=none,id=b,file=/dev/null,format=raw,snapshot=off",
    ]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert!(c.drives[0].spec.snapshot);
    assert!(!c.drives[1].spec.snapshot);
    let (r, _) = outcome(&["-drive", "if=none,id=a,file=/dev/null,format=raw"]);
    let Ok(CliOutcome::Run(c)) = r else {
        panic!("{r:?}")
    };
    assert!(!c.drives[0].spec.snapshot);
}
