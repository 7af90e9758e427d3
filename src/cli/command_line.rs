//! The two passes over argv (QEMU's `qemu_init()` option loops): the first checks names and
//! argument counts for the whole command line, the second reads every option into
//! [`CommandLine`], reporting the errors QEMU reports while it reads.

use std::ffi::OsString;

use super::chardev::{self, CHARDEV_OPTS};
use super::display::{self, DisplayChoice, VNC_OPTS};
use super::error::{CliError, ErrorKind, Location, Warning};
use super::keyval::{self, Dict};
use super::machine::{self, ACCEL_OPTS, MEMORY_OPTS, SMP_OPTS_HELP};
use super::option_table::{self, OptionSpec, Support};
use super::other_options;
use super::qemu_opts::{desc, OptDesc, OptType, OptsList, OptsStore, Parsed};
use super::{device, drive, help, Console};

/// argv as text. QEMU works on bytes; vmscope needs text to parse and refuses the
/// (vanishingly rare) arguments that are not UTF-8.
pub struct Args {
    words: Vec<String>,
}

impl Args {
    pub fn new(argv: &[OsString]) -> Result<Self, CliError> {
        let mut words = Vec::with_capacity(argv.len());
        for word in argv {
            match word.to_str() {
                Some(w) => words.push(w.to_string()),
                None => {
                    return Err(CliError::at(
                        &Location::words([word]),
                        ErrorKind::Unsupported("arguments that are not valid UTF-8".into()),
                    ))
                }
            }
        }
        Ok(Args { words })
    }

    /// The first pass: every `-option` must exist and have its argument.
    pub fn check_names(&self) -> Result<(), CliError> {
        let mut i = 1;
        while i < self.words.len() {
            if self.words[i].starts_with('-') {
                let (_, next) = self.lookup(i)?;
                i = next;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// QEMU's `lookup_opt` at word `i`: the option and the index after it.
    fn lookup(&self, i: usize) -> Result<(&'static OptionSpec, usize), CliError> {
        let word = &self.words[i];
        let here = Location::words([word]);
        let spec = option_table::lookup(word)
            .ok_or_else(|| CliError::at(&here, ErrorKind::InvalidOption))?;
        if spec.takes_arg {
            if i + 1 >= self.words.len() {
                return Err(CliError::at(&here, ErrorKind::RequiresArgument));
            }
            Ok((spec, i + 2))
        } else {
            Ok((spec, i + 1))
        }
    }
}

/// A `-serial`/`-parallel` request, resolved after the chardevs exist.
#[derive(Clone, Debug)]
pub struct PortRequest {
    pub text: String,
    pub location: Location,
}

/// The display options given.
#[derive(Clone, Debug, Default)]
pub struct DisplayState {
    /// The first non-`none` display option: vmscope warns about it once the command line
    /// is known to be valid (QEMU prints nothing for it, so errors stay identical).
    pub requested: Option<Location>,
    pub nographic: bool,
    /// OpenGL was asked for (`-display ...,gl=on`): vmscope, like QEMU's `none` display,
    /// has none.
    pub gl: bool,
    /// `-vga MODEL`, checked after the loop like QEMU's `select_vgahw`.
    pub vga: Option<(String, Location)>,
}

/// Everything the second pass read, in QEMU's terms.
pub struct CommandLine {
    /// `machine_opts_dict`: `-machine`, `-smp`, `-kernel`, `-append`, `-initrd`,
    /// `-enable-kvm`, `-nographic` (graphics=off), `-boot`.
    pub machine: Dict,
    /// Location of the `-machine`/`-M` that named the machine type.
    pub machine_type_location: Location,
    /// Which option last set each top-level machine property (for refusals).
    pub machine_key_locations: Vec<(String, Location)>,
    pub memory: OptsStore,
    pub accel: OptsStore,
    pub chardevs: OptsStore,
    pub monitors: OptsStore,
    pub names: OptsStore,
    pub drives: OptsStore,
    pub devices: OptsStore,
    /// QEMU's `monitor_device_index`: numbers the implicit `compat_monitorN` chardevs.
    pub compat_monitor_index: usize,
    pub cpu: Option<(String, Location)>,
    pub serials: Vec<PortRequest>,
    pub parallels: Vec<PortRequest>,
    /// `-debugcon` requests.
    pub debugcons: Vec<PortRequest>,
    /// `-L DIR`, in order.
    pub data_dirs: Vec<String>,
    pub has_defaults: bool,
    pub default_serial: bool,
    pub default_parallel: bool,
    pub default_monitor: bool,
    pub display: DisplayState,
    pub daemonize: bool,
    pub pidfile: Option<String>,
    pub start_paused: bool,
    pub no_reboot: bool,
    /// `-snapshot`: every drive without its own `snapshot=` writes to a temporary overlay.
    pub snapshot: bool,
    /// The keys of every `-rtc`, in order (later ones override earlier ones).
    pub rtc: Vec<(String, String)>,
    /// The last `-rtc`, which a refusal of the merged settings names.
    pub rtc_location: Location,
    pub no_shutdown: bool,
    /// Valid options vmscope refuses, reported (the first in argv order) after every
    /// QEMU check passed.
    pub unsupported: Vec<CliError>,
}

/// The outcome of the second pass.
pub enum Read {
    Options(Box<CommandLine>),
    /// Help or version output was printed.
    Exit(i32),
}

/// What one option handler decided.
enum Step {
    Continue,
    Exit(i32),
}

impl CommandLine {
    fn new() -> Self {
        CommandLine {
            machine: Dict::default(),
            machine_type_location: Location::none(),
            machine_key_locations: Vec::new(),
            memory: OptsStore::new(&MEMORY_OPTS),
            accel: OptsStore::new(&ACCEL_OPTS),
            chardevs: OptsStore::new(&CHARDEV_OPTS),
            monitors: OptsStore::new(&MON_OPTS),
            names: OptsStore::new(&NAME_OPTS),
            drives: OptsStore::new(&drive::DRIVE_OPTS),
            devices: OptsStore::new(&device::DEVICE_OPTS),
            compat_monitor_index: 0,
            cpu: None,
            serials: Vec::new(),
            parallels: Vec::new(),
            debugcons: Vec::new(),
            data_dirs: Vec::new(),
            has_defaults: true,
            default_serial: true,
            default_parallel: true,
            default_monitor: true,
            display: DisplayState::default(),
            daemonize: false,
            pidfile: None,
            start_paused: false,
            no_reboot: false,
            snapshot: false,
            rtc: Vec::new(),
            rtc_location: Location::none(),
            no_shutdown: false,
            unsupported: Vec::new(),
        }
    }

    /// The second pass over argv.
    pub fn read(args: &Args, console: &mut Console) -> Result<Read, CliError> {
        let mut cl = CommandLine::new();
        let words = &args.words;
        let mut i = 1;
        while i < words.len() {
            if !words[i].starts_with('-') {
                // A bare argument is a disk image for IDE hard disk 0, like -hda.
                let location = Location::words([&words[i]]).at(i);
                drive::drive_add(&mut cl.drives, "hda", &words[i], &location, console)?;
                i += 1;
                continue;
            }
            let (spec, next) = args.lookup(i)?;
            let arg = if spec.takes_arg {
                Some(words[i + 1].as_str())
            } else {
                None
            };
            let location = Location::words(&words[i..next]).at(i);
            if spec.support == Support::NotForTarget {
                return Err(CliError::at(&location, ErrorKind::NotForTarget));
            }
            let step = cl
                .option(spec, arg.unwrap_or(""), &location, console)
                .map_err(|e| e.located(&location))?;
            if let Step::Exit(code) = step {
                return Ok(Read::Exit(code));
            }
            // Drives and devices are refused after their own checks, naming what they lack.
            const REFUSED_LATER: &[&str] = &[
                "drive", "hda", "hdb", "hdc", "hdd", "cdrom", "fda", "fdb", "sd", "pflash",
                "mtdblock", "device",
            ];
            if let Support::NotYet(what) = spec.support {
                if !REFUSED_LATER.contains(&spec.name) {
                    cl.unsupported_at(&location, what);
                }
            }
            i = next;
        }
        Ok(Read::Options(Box::new(cl)))
    }

    pub fn unsupported_at(&mut self, location: &Location, what: &str) {
        self.unsupported.push(CliError::at(
            location,
            ErrorKind::Unsupported(what.to_string()),
        ));
    }

    /// Parses a QemuOpts group the way `qemu_opts_parse_noisily` does; a `help` item
    /// prints the group's keys and exits with status 1, as QEMU does.
    fn parse_group(
        store: &mut OptsStore,
        arg: &str,
        permit_abbrev: bool,
        location: &Location,
        console: &mut Console,
    ) -> Result<Option<usize>, CliError> {
        match store.parse_noisily(arg, permit_abbrev, location, console) {
            Ok(Parsed::Opts(index)) => Ok(Some(index)),
            Ok(Parsed::HelpWanted) => {
                console.print(&store.list.help_text());
                Ok(None)
            }
            Err(kind) => Err(CliError::at(location, kind)),
        }
    }

    /// One option of the second pass.
    fn option(
        &mut self,
        spec: &OptionSpec,
        arg: &str,
        location: &Location,
        console: &mut Console,
    ) -> Result<Step, CliError> {
        let exit_1 = |parsed: Option<usize>| {
            if parsed.is_none() {
                Step::Exit(1)
            } else {
                Step::Continue
            }
        };
        match spec.name {
            "h" | "help" => {
                console.print(&help::help_text(console.program()));
                return Ok(Step::Exit(0));
            }
            "version" => {
                console.print(&help::version_text());
                return Ok(Step::Exit(0));
            }
            "cpu" => self.cpu = Some((arg.to_string(), location.clone())),
            "m" => {
                self.machine_key(location, "memory");
                let parsed = Self::parse_group(&mut self.memory, arg, true, location, console)?;
                return Ok(exit_1(parsed));
            }
            "smp" => {
                let (dict, help) =
                    keyval::parse(arg, Some("cpus")).map_err(|e| CliError::at(location, e))?;
                if help {
                    console.print(SMP_OPTS_HELP);
                    return Ok(Step::Exit(0));
                }
                self.merge_machine_property("smp", dict)?;
                self.machine_key(location, "smp");
            }
            "machine" | "M" => {
                let help = keyval::parse_into(&mut self.machine, arg, Some("type"))
                    .map_err(|e| CliError::at(location, e))?;
                if help {
                    console.print(&machine::machine_help(self.machine.get_str("type")));
                    return Ok(Step::Exit(0));
                }
                if let Ok((dict, _)) = keyval::parse(arg, Some("type")) {
                    if dict.get("type").is_some() {
                        self.machine_type_location = location.clone();
                    }
                    for (key, _) in dict.iter() {
                        self.machine_key(location, key);
                    }
                }
            }
            "accel" => {
                let Some(i) = Self::parse_group(&mut self.accel, arg, true, location, console)?
                else {
                    return Ok(Step::Exit(1));
                };
                let name = self.accel.entries[i].get("accel");
                if name.is_none_or(|n| n == "help" || n == "?") {
                    console.print(machine::ACCEL_HELP);
                    return Ok(Step::Exit(0));
                }
            }
            "enable-kvm" => self.machine_str(location, "accel", "kvm"),
            "kernel" => self.machine_str(location, "kernel", arg),
            "initrd" => self.machine_str(location, "initrd", arg),
            "append" => self.machine_str(location, "append", arg),
            "dtb" => self.machine_str(location, "dtb", arg),
            "bios" => self.machine_str(location, "firmware", arg),
            "boot" => {
                let (dict, help) =
                    keyval::parse(arg, Some("order")).map_err(|e| CliError::at(location, e))?;
                if help {
                    console.print(&other_options::BOOT_OPTS.help_text());
                    return Ok(Step::Exit(0));
                }
                self.merge_machine_property("boot", dict)?;
                self.machine_key(location, "boot");
            }
            "name" => {
                let parsed = Self::parse_group(&mut self.names, arg, true, location, console)?;
                return Ok(exit_1(parsed));
            }
            "chardev" => {
                let parsed = Self::parse_group(&mut self.chardevs, arg, true, location, console)?;
                return Ok(exit_1(parsed));
            }
            "mon" => {
                let parsed = Self::parse_group(&mut self.monitors, arg, true, location, console)?;
                self.default_monitor = false;
                return Ok(exit_1(parsed));
            }
            "monitor" => {
                self.default_monitor = false;
                // QEMU compares only the first four characters.
                if !arg.starts_with("none") {
                    self.monitor_parse(arg, "readline", false, location, console)?;
                }
            }
            "qmp" => {
                self.monitor_parse(arg, "control", false, location, console)?;
                self.default_monitor = false;
            }
            "qmp-pretty" => {
                self.monitor_parse(arg, "control", true, location, console)?;
                self.default_monitor = false;
            }
            "serial" => {
                self.serials.push(PortRequest {
                    text: arg.to_string(),
                    location: location.clone(),
                });
                self.default_serial = false;
                if arg.starts_with("mon:") {
                    self.default_monitor = false;
                }
            }
            "L" if arg == "help" => self.unsupported_at(location, "-L help"),
            "L" => self.data_dirs.push(arg.to_string()),
            "debugcon" => self.debugcons.push(PortRequest {
                text: arg.to_string(),
                location: location.clone(),
            }),
            "parallel" => {
                self.parallels.push(PortRequest {
                    text: arg.to_string(),
                    location: location.clone(),
                });
                self.default_parallel = false;
                if arg.starts_with("mon:") {
                    self.default_monitor = false;
                }
            }
            "nographic" => {
                self.machine_str(location, "graphics", "off");
                self.display.nographic = true;
            }
            "display" => {
                match display::parse_display(arg, location, console)? {
                    DisplayChoice::Exit(code) => return Ok(Step::Exit(code)),
                    DisplayChoice::None => {}
                    DisplayChoice::Other => self.display_requested(location),
                }
                // The last -display wins, as in QEMU.
                self.display.gl = display::wants_gl(arg);
            }
            "vga" => {
                if arg != "none" {
                    self.display_requested(location);
                }
                self.display.vga = Some((arg.to_string(), location.clone()));
            }
            "vnc" => {
                let mut store = OptsStore::new(&VNC_OPTS);
                let permit_abbrev = !(arg == "help" || arg == "?");
                let parsed = Self::parse_group(&mut store, arg, permit_abbrev, location, console)?;
                if parsed.is_none() {
                    return Ok(Step::Exit(1));
                }
                if store.entries[0].get("vnc") != Some("none") {
                    self.display_requested(location);
                }
            }
            "no-hpet" => {
                // vmscope's pc machine has no HPET, so this asks for what it is.
                console.warn(Warning::new(
                    location,
                    "-no-hpet is deprecated, use '-machine hpet=off' instead",
                ));
                self.machine_str(location, "hpet", "off");
            }
            "no-reboot" => self.no_reboot = true,
            "snapshot" => self.snapshot = true,
            "no-shutdown" => self.no_shutdown = true,
            "S" => self.start_paused = true,
            "daemonize" => self.daemonize = true,
            "pidfile" => self.pidfile = Some(arg.to_string()),
            "nodefaults" => self.has_defaults = false,
            "no-user-config" => {
                // vmscope never reads QEMU's default configuration file, which is what
                // this option asks for.
            }
            "drive" => {
                let parsed = Self::parse_group(&mut self.drives, arg, false, location, console)?;
                return Ok(exit_1(parsed));
            }
            "hda" | "hdb" | "hdc" | "hdd" | "cdrom" | "fda" | "fdb" | "sd" | "pflash"
            | "mtdblock" => {
                drive::drive_add(&mut self.drives, spec.name, arg, location, console)?;
            }
            "rtc" => match other_options::read_rtc(arg, location, console)? {
                None => return Ok(Step::Exit(1)),
                Some(items) => {
                    self.rtc.extend(items);
                    self.rtc_location = location.clone();
                }
            },
            "device" => {
                if arg.starts_with('{') {
                    self.unsupported_at(location, "devices in JSON syntax");
                } else {
                    let parsed =
                        Self::parse_group(&mut self.devices, arg, true, location, console)?;
                    return Ok(exit_1(parsed));
                }
            }
            _ => {
                if let Some(code) = other_options::read(spec.name, arg, location, console)? {
                    return Ok(Step::Exit(code));
                }
            }
        }
        Ok(Step::Continue)
    }

    /// Sets a machine property from a sugar option (`-kernel`, `-enable-kvm`, ...).
    fn machine_str(&mut self, location: &Location, key: &str, value: &str) {
        self.machine.put_str(key, value);
        self.machine_key(location, key);
    }

    fn machine_key(&mut self, location: &Location, key: &str) {
        self.machine_key_locations.retain(|(k, _)| k != key);
        self.machine_key_locations
            .push((key.to_string(), location.clone()));
    }

    /// The option that last set machine property `key`.
    pub fn machine_key_location(&self, key: &str) -> Location {
        self.machine_key_locations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }

    /// `machine_merge_property`: `-smp`/`-boot` become `smp.*`/`boot.*` of the machine.
    fn merge_machine_property(&mut self, name: &str, dict: Dict) -> Result<(), CliError> {
        let mut wrapper = Dict::default();
        wrapper.put_dict(name, dict);
        self.machine.merge(&wrapper, "").map_err(CliError::new)
    }

    /// Notes the first display option for vmscope's one display warning.
    fn display_requested(&mut self, location: &Location) {
        if self.display.requested.is_none() {
            self.display.requested = Some(location.clone());
        }
    }

    /// QEMU's `monitor_parse`: a monitor on an implicit `compat_monitorN` chardev made from
    /// the shorthand, or on an existing chardev (`chardev:ID`).
    pub fn monitor_parse(
        &mut self,
        text: &str,
        mode: &str,
        pretty: bool,
        location: &Location,
        console: &mut Console,
    ) -> Result<(), CliError> {
        let label = match text.strip_prefix("chardev:") {
            Some(id) => id.chars().take(31).collect::<String>(),
            None => {
                let label = format!("compat_monitor{}", self.compat_monitor_index);
                if let Err(first) =
                    chardev::parse_compat(&mut self.chardevs, &label, text, true, location, console)
                {
                    let follow = ErrorKind::message(format!("parse error: {text}"));
                    return Err(match first {
                        Some(kind) => CliError::at(location, kind).then(follow),
                        None => CliError::at(location, follow),
                    });
                }
                label
            }
        };
        let index = self
            .monitors
            .create(Some(label.clone()), location)
            .map_err(|e| CliError::at(location, e))?;
        let opts = &mut self.monitors.entries[index];
        opts.set("mode", mode);
        opts.set("chardev", &label);
        if mode == "control" {
            opts.set("pretty", if pretty { "on" } else { "off" });
        }
        self.compat_monitor_index += 1;
        Ok(())
    }
}

/// `-mon` keys (`qemu_mon_opts`).
pub static MON_OPTS: OptsList = OptsList {
    name: "mon",
    implied: Some("chardev"),
    merge: false,
    descs: &[
        desc("mode", OptType::Str),
        desc("chardev", OptType::Str),
        desc("pretty", OptType::Bool),
    ],
};

/// `-name` keys (`qemu_name_opts`), with QEMU's help texts.
pub static NAME_OPTS: OptsList = OptsList {
    name: "name",
    implied: Some("guest"),
    merge: true,
    descs: &[
        OptDesc {
            name: "guest",
            ty: OptType::Str,
            help: Some(
                "Sets the name of the guest.\nThis name will be displayed in the SDL window caption.\nThe name will also be used for the VNC server",
            ),
        },
        OptDesc {
            name: "process",
            ty: OptType::Str,
            help: Some("Sets the name of the QEMU process, as shown in top etc"),
        },
        OptDesc {
            name: "debug-threads",
            ty: OptType::Bool,
            help: Some(
                "When enabled, name the individual threads; defaults off.\nNOTE: The thread names are for debugging and not a\nstable API.",
            ),
        },
    ],
};
