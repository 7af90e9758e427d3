//! The typed configuration of one virtual machine, produced by [`crate::cli`] from a QEMU
//! command line and consumed by [`crate::machine`], [`crate::chardev`] and [`crate::monitor`].
//!
//! Plain data only: every field has already been validated by the parser, so consumers never
//! re-parse strings. Options that belong to subsystems not built yet are rejected by the parser
//! with a "not supported yet" error instead of being stored here and ignored.

use std::path::PathBuf;

/// Everything one `qemu-system-x86_64` invocation asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// `-name NAME` / `-name guest=NAME,...`.
    pub name: Option<String>,
    /// `-name ...,process=NAME`: the process (thread) name to set, as shown by `ps`/`top`.
    pub process_name: Option<String>,
    /// `-m`.
    pub memory: MemoryConfig,
    /// `-smp`.
    pub smp: SmpConfig,
    /// `-cpu`.
    pub cpu: CpuModel,
    /// `-accel`, `-enable-kvm`, `-machine accel=`; in the order given (QEMU tries them in order).
    pub accelerators: Vec<Accelerator>,
    /// `-kernel`, `-initrd`, `-append`.
    pub kernel_boot: Option<KernelBoot>,
    /// Every chardev, named: `-chardev` ones and the implicit ones that `-serial`, `-monitor`,
    /// `-qmp` and `-nographic` create (QEMU names them `serial0`, `compat_monitor0`, ...).
    pub chardevs: Vec<ChardevConfig>,
    /// Chardev ids wired to COM1, COM2, ... in order (`-serial`, `-nographic`).
    pub serial_ports: Vec<String>,
    /// Monitors (`-monitor`, `-qmp`, `-mon`, the muxed one of `-nographic`).
    pub monitors: Vec<MonitorConfig>,
    /// `-no-reboot`: a guest reset ends the process instead.
    pub no_reboot: bool,
    /// `-no-shutdown`: a guest poweroff stops the VM instead of ending the process.
    pub no_shutdown: bool,
    /// `-S`: do not start the vCPUs until `cont`.
    pub start_paused: bool,
    /// `-daemonize`.
    pub daemonize: bool,
    /// `-pidfile FILE`.
    pub pidfile: Option<PathBuf>,
    /// `-nodefaults`: no default serial/monitor/devices.
    pub no_defaults: bool,
    /// Display options given (`-vga`, `-vnc`, `-display`, `-nographic`); vmscope emulates no
    /// display and warns once when any non-`none` display was asked for.
    pub display_requested: bool,
    /// `-bios FILE` / `-machine firmware=FILE`: the firmware run when there is no `-kernel`
    /// (default: SeaBIOS's `bios-256k.bin`).
    pub firmware: Option<PathBuf>,
    /// `-nographic` / `-machine graphics=off`: QEMU then tells SeaBIOS to use COM1 as its
    /// console (fw_cfg `etc/sercon-port`).
    pub nographic: bool,
    /// `isa-debugcon` ports (`-debugcon`, `-device isa-debugcon`).
    pub debugcons: Vec<DebugconConfig>,
    /// `-boot` / `-machine boot.*=`.
    pub boot: BootConfig,
    /// `-L DIR`: where firmware files are looked for first.
    pub data_dirs: Vec<PathBuf>,
    /// Drives (`-drive`, `-hda`, `-cdrom`...), in command-line order.
    pub drives: Vec<DriveConfig>,
    /// `-rtc base=...,clock=...`.
    pub rtc: RtcConfig,
}

/// `-rtc base=`: what the CMOS clock starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RtcBase {
    /// The host's time, in UTC (QEMU's default).
    #[default]
    Utc,
    /// The host's time, in the host's time zone.
    LocalTime,
    /// A given date and time (UTC), as seconds since the epoch.
    Date(i64),
}

/// `-rtc clock=`: which clock the CMOS time advances with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RtcClock {
    /// The host's real-time clock (QEMU's default).
    #[default]
    Host,
    /// The host's monotonic clock (`rt`).
    Realtime,
    /// The VM's virtual clock, stopped while the VM is (`vm`).
    Virtual,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcConfig {
    pub base: RtcBase,
    pub clock: RtcClock,
}

/// One drive to open, and the option it came from (QEMU prefixes open errors with it).
#[derive(Clone, Debug, PartialEq)]
pub struct DriveConfig {
    pub spec: crate::block::drive::DriveSpec,
    /// The argv text of the option (`-drive file=...`), `None` for drives made up by default.
    pub origin: Option<String>,
}

/// What the firmware is told about booting (`-boot order=,reboot-timeout=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// Drive letters in priority order: `a`/`b` floppy, `c` disk, `d` CD-ROM, `n` network.
    pub order: String,
    /// Milliseconds SeaBIOS waits before rebooting when nothing boots; -1 never.
    pub reboot_timeout: i32,
    /// `menu=on`: the firmware offers its boot menu.
    pub menu: bool,
    /// `splash-time=`: how long (ms) the firmware shows the menu prompt.
    pub splash_time: Option<u16>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            order: "cad".into(),
            reboot_timeout: -1,
            menu: false,
            splash_time: None,
        }
    }
}

/// One `isa-debugcon` port: bytes written to `iobase` go to the chardev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugconConfig {
    pub chardev: String,
    pub iobase: u16,
}

/// Guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes of RAM (`-m 4G`); QEMU's default is 128 MiB.
    pub size: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { size: 128 << 20 }
    }
}

/// vCPU topology (`-smp N,sockets=,dies=,cores=,threads=,maxcpus=`), fully resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmpConfig {
    pub cpus: u32,
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
    pub max_cpus: u32,
}

impl Default for SmpConfig {
    fn default() -> Self {
        SmpConfig {
            cpus: 1,
            sockets: 1,
            dies: 1,
            cores: 1,
            threads: 1,
            max_cpus: 1,
        }
    }
}

/// `-cpu MODEL[,+feat,-feat,feat=on]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuModel {
    pub kind: CpuModelKind,
    /// Feature flags turned on (`+x`, `x=on`) or off (`-x`, `x=off`), in order.
    pub feature_overrides: Vec<(String, bool)>,
}

/// The CPU models vmscope implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuModelKind {
    /// QEMU's default for the `pc` machine.
    #[default]
    Qemu64,
    Kvm64,
    Host,
    Max,
}

/// An accelerator named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accelerator {
    Kvm,
    /// Accepted for compatibility; vmscope only runs on KVM and says so when TCG alone is asked.
    Tcg,
}

/// Direct kernel boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// `-append`; empty when not given.
    pub cmdline: String,
}

/// One character device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChardevConfig {
    pub id: String,
    pub backend: ChardevBackend,
    /// `mux=on` (or the `mon:` prefix): several front ends share it, switched with Ctrl-a c.
    pub mux: bool,
    /// `logfile=`: a copy of everything the front end writes.
    pub logfile: Option<PathBuf>,
}

/// Where a chardev's bytes go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChardevBackend {
    /// `null`: output discarded, no input.
    Null,
    /// `stdio`; `signal=off` turns Ctrl-C into an ordinary byte.
    Stdio { signal: bool },
    /// `file:PATH` / `file,path=`: output only (input from `input-path=` if given).
    File {
        path: PathBuf,
        input_path: Option<PathBuf>,
        append: bool,
    },
    /// `pipe:PATH`: `PATH.in`/`PATH.out`, or `PATH` itself for both.
    Pipe { path: PathBuf },
    /// `unix:PATH`, `tcp:HOST:PORT`, `telnet:HOST:PORT`, `socket,...`.
    Socket(SocketChardev),
}

/// A stream socket chardev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketChardev {
    pub address: SocketAddress,
    /// `server`: listen instead of connecting.
    pub server: bool,
    /// `wait`: a server blocks start-up until the first client connects (QEMU's default for
    /// `server` is `wait=on`; scripts pass `nowait`).
    pub wait: bool,
    /// `telnet`: speak the telnet protocol (IAC negotiation on connect).
    pub telnet: bool,
    /// `reconnect=SECONDS` for clients; 0 means never.
    pub reconnect_secs: u64,
}

/// Address of a socket chardev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketAddress {
    Unix {
        path: PathBuf,
    },
    /// `host` may be empty (all interfaces), as in `tcp::4444,server`.
    Tcp {
        host: String,
        port: u16,
    },
}

/// One monitor instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The chardev it reads and writes.
    pub chardev: String,
    pub mode: MonitorMode,
    /// `pretty=on` for QMP.
    pub pretty: bool,
}

/// Monitor protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorMode {
    /// HMP (`-monitor`, `mode=readline`).
    Readline,
    /// QMP (`-qmp`, `mode=control`).
    Control,
}
