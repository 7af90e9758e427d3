//! After the option loop: QEMU's remaining checks, in `qemu_init()`'s order, and the
//! typed [`Config`] they produce.
//!
//! Default devices follow QEMU 7.2 with `-display none`, which is what vmscope is (it has
//! no display): without `-nographic`/`-nodefaults` QEMU puts serial0 and the HMP monitor
//! on `vc` virtual consoles; with no display those go nowhere, and vmscope models them as
//! `null` chardevs keeping QEMU's names (`serial0`, `compat_monitor0`). Deviations: QEMU
//! without any `-display` would open a GTK window or a VNC server (vmscope opens neither),
//! and QEMU also creates a default parallel port, NIC, VGA card, floppy and CD-ROM drive,
//! which vmscope's pc machine does not have.

use std::path::PathBuf;

use super::chardev::{self, Created};
use super::command_line::{CommandLine, PortRequest};
use super::cpu::{self, CpuChoice};
use super::device::{self, VMSCOPE_DEVICES};
use super::display;
use super::drive::{self, DriveCheck, DriveOptions, DriveTable};
use super::error::{CliError, ErrorKind, Location, Warning};
use super::ide::{self, IdePlacement};
use super::machine::{self, MachineChoice};
use super::other_options;
use super::Console;
use crate::config::{Config, DebugconConfig, DriveConfig, KernelBoot, MonitorConfig, MonitorMode};

/// What the command line describes, before vmscope's refusals are applied.
#[derive(Debug)]
pub struct Parsed {
    /// Everything vmscope implements; refused parts are left at their defaults.
    pub config: Config,
    /// Every `-drive` (and `-hda`...), validated, for the block layer.
    pub drives: Vec<DriveOptions>,
    /// Valid options vmscope does not implement, in argv order.
    pub refusals: Vec<CliError>,
    /// vmscope's one warning about display options, printed when the line runs.
    pub display_warning: Option<Warning>,
}

/// The outcome of the post-loop phases.
#[derive(Debug)]
pub enum Built {
    Parsed(Box<Parsed>),
    /// Help output was printed.
    Exit(i32),
}

/// Runs the post-loop phases and builds the configuration.
pub fn build(mut cl: CommandLine, console: &mut Console) -> Result<Built, CliError> {
    // qemu_validate_options
    if cl.machine.get_str("kernel").is_none() {
        if cl.machine.get_str("append").is_some() {
            return Err(CliError::new(ErrorKind::message(
                "-append only allowed with -kernel option",
            )));
        }
        if cl.machine.get_str("initrd").is_some() {
            return Err(CliError::new(ErrorKind::message(
                "-initrd only allowed with -kernel option",
            )));
        }
    }

    // qemu_process_early_options: -name
    if let Some(opts) = cl.names.entries.first() {
        if opts.get_bool("debug-threads", false) {
            let location = opts.location.clone();
            cl.unsupported_at(&location, "-name debug-threads=on");
        }
    }

    // qemu_process_help_options
    if let Some((option, _)) = &cl.cpu {
        if option == "help" || option == "?" {
            console.print(&cpu::cpu_help());
            return Ok(Built::Exit(0));
        }
    }
    if cl.devices.entries.iter().any(device::wants_help) {
        console.print(&device::device_help(VMSCOPE_DEVICES));
        return Ok(Built::Exit(0));
    }

    // configure_rtc
    let rtc = match other_options::configure_rtc(&cl.rtc)? {
        other_options::RtcRequest::Settings(rtc) => rtc,
        other_options::RtcRequest::Unsupported(what) => {
            let location = cl.rtc_location.clone();
            cl.unsupported_at(&location, &what);
            Default::default()
        }
    };

    // parse_memory_options, qemu_create_machine
    machine::parse_memory_options(&cl.memory, &mut cl.machine)?;
    if let MachineChoice::Unsupported(what) = machine::select_machine(&mut cl.machine)? {
        let location = cl.machine_type_location.clone();
        cl.unsupported_at(&location, &what);
    }

    // qemu_disable_default_devices, qemu_create_default_devices
    if !cl.has_defaults {
        cl.default_serial = false;
        cl.default_parallel = false;
        cl.default_monitor = false;
    }
    if cl.daemonize
        && cl.display.nographic
        && (cl.default_parallel || cl.default_serial || cl.default_monitor)
    {
        return Err(CliError::new(ErrorKind::message(
            "-nographic cannot be used with -daemonize",
        )));
    }
    create_default_devices(&mut cl, console)?;
    if let Some((model, _)) = cl.display.vga.clone() {
        if let Some(code) = display::select_vga(&model, console)? {
            return Ok(Built::Exit(code));
        }
    }

    // qemu_create_early_backends: display, chardevs, then drives.
    if cl.display.gl {
        return Err(CliError::new(ErrorKind::message(
            "OpenGL is not supported by the display",
        )));
    }
    let mut registry = chardev::Registry::default();
    for opts in &cl.chardevs.entries {
        if matches!(opts.get("backend"), Some("help") | Some("?")) {
            console.print(&chardev::backend_help());
            return Ok(Built::Exit(0));
        }
        match registry
            .create(opts, cl.daemonize, console)
            .map_err(|e| CliError::at(&opts.location, e))?
        {
            Created::Ok => {}
            Created::Unsupported(what) => {
                let location = opts.location.clone();
                cl.unsupported
                    .push(CliError::at(&location, ErrorKind::Unsupported(what)));
            }
        }
    }
    // configure_blockdev: -snapshot sets snapshot=on where a drive does not say.
    if cl.snapshot {
        for opts in &mut cl.drives.entries {
            if !opts.has("snapshot") {
                opts.set("snapshot", "on");
            }
        }
    }
    let mut drive_table = DriveTable::default();
    let mut drives = Vec::new();
    let mut drive_configs = Vec::new();
    for opts in &cl.drives.entries {
        match drive_table.check(opts, console)? {
            DriveCheck::Valid(d) => {
                match drive::to_spec(&d) {
                    Ok(spec) => {
                        drive_configs.push(DriveConfig {
                            spec,
                            origin: opts.location.text(),
                        });
                    }
                    Err(what) => {
                        let location = opts.location.clone();
                        cl.unsupported
                            .push(CliError::at(&location, ErrorKind::Unsupported(what)));
                    }
                }
                drives.push(*d);
            }
            // QEMU exits with status 0 after printing the format list.
            DriveCheck::HelpPrinted => return Ok(Built::Exit(0)),
        }
    }

    // qemu_apply_legacy_machine_options, qemu_apply_machine_options
    let legacy = machine::take_legacy_options(&mut cl.machine)?;
    for (key, what) in &legacy.unsupported {
        let location = cl.machine_key_location(key);
        cl.unsupported_at(&location, what);
    }
    let props = machine::apply_machine_options(&cl.machine, console)?;
    for (key, what) in &props.unsupported {
        let location = cl.machine_key_location(key);
        cl.unsupported_at(&location, what);
    }

    // configure_accelerators
    let accelerators = machine::configure_accelerators(&cl.accel, &legacy, console)?;
    for (mut location, what) in accelerators.unsupported {
        if location.is_none() {
            location = cl.machine_key_location("kernel-irqchip");
        }
        cl.unsupported
            .push(CliError::at(&location, ErrorKind::Unsupported(what)));
    }

    // qemu_create_late_backends: monitors, then serial and parallel ports.
    let mut monitors = Vec::new();
    for opts in &cl.monitors.entries {
        let at = |kind| CliError::at(&opts.location, kind);
        let Some(id) = opts.get("chardev") else {
            return Err(at(ErrorKind::MissingParameter("chardev".into())));
        };
        let mode = match opts.get("mode") {
            None | Some("readline") => MonitorMode::Readline,
            Some("control") => MonitorMode::Control,
            Some(other) => {
                return Err(at(ErrorKind::ValueNotAccepted {
                    name: "mode".into(),
                    value: other.to_string(),
                }))
            }
        };
        if registry.find(id).is_none() {
            return Err(at(ErrorKind::message(format!(
                "chardev \"{id}\" not found"
            ))));
        }
        let pretty = opts.get_bool("pretty", false);
        if mode == MonitorMode::Readline && pretty {
            return Err(at(ErrorKind::message(
                "'pretty' is not compatible with HMP monitors",
            )));
        }
        registry.attach(id).map_err(at)?;
        monitors.push(MonitorConfig {
            chardev: id.to_string(),
            mode,
            pretty,
        });
    }
    let mut serial_ports = Vec::new();
    let serials = std::mem::take(&mut cl.serials);
    for request in &serials {
        if request.text == "none" {
            continue;
        }
        let label = format!("serial{}", serial_ports.len());
        let id = connect_port(
            &mut cl,
            &mut registry,
            &mut monitors,
            &label,
            request,
            "serial",
            console,
        )?;
        if let Some(id) = id {
            serial_ports.push(id);
        }
    }
    // QEMU's debugcon_parse: the chardev is labelled "debugcon", the port is 0xE9.
    let mut debugcons = Vec::new();
    let debugcon_requests = std::mem::take(&mut cl.debugcons);
    for request in &debugcon_requests {
        if !debugcons.is_empty() {
            // QEMU fails creating a second chardev labelled "debugcon".
            return Err(CliError::at(
                &request.location,
                ErrorKind::message(
                    "attempt to add duplicate property 'debugcon' to object (type 'container')",
                ),
            )
            .then(ErrorKind::message(format!(
                "invalid character backend '{}'",
                request.text
            ))));
        }
        let id = connect_port(
            &mut cl,
            &mut registry,
            &mut monitors,
            "debugcon",
            request,
            "debugcon",
            console,
        )?;
        if let Some(chardev) = id {
            debugcons.push(DebugconConfig {
                chardev,
                iobase: crate::hw::pc::debugcon::DEBUGCON_DEFAULT_IOBASE,
            });
        }
    }
    for request in &cl.parallels.clone() {
        // vmscope's pc machine has no parallel port; "none" asks for exactly that.
        if request.text != "none" {
            cl.unsupported_at(&request.location, "parallel ports");
        }
    }

    // parse_cpu_option
    let cpu_model = match cl.cpu.clone() {
        None => Default::default(),
        Some((option, location)) => match cpu::parse_cpu(&option, console)? {
            CpuChoice::Model(m) => m,
            CpuChoice::Unsupported(what) => {
                cl.unsupported_at(&location, &what);
                Default::default()
            }
        },
    };

    // A host CPU needs KVM; QEMU would run the first accelerator listed.
    if cpu_model.kind == crate::config::CpuModelKind::Host
        && accelerators.list.first() == Some(&crate::config::Accelerator::Tcg)
    {
        return Err(CliError::new(ErrorKind::message(
            "CPU model 'host' requires KVM or HVF",
        )));
    }

    // configure_blockdev's default CD-ROM, then the board connects the if=ide drives.
    let mut ide = IdePlacement::default();
    let ide_cd_given = cl
        .devices
        .entries
        .iter()
        .any(|o| o.get("driver") == Some("ide-cd"));
    if cl.has_defaults {
        ide::add_default_cdrom(&mut drive_configs, ide_cd_given);
    }
    ide.place_board_drives(&mut drive_configs, props.smp.cpus, !cl.has_defaults);

    // qemu_create_cli_devices
    let mut anonymous_devices = 0;
    for opts in &cl.devices.entries {
        let anonymous_index = anonymous_devices;
        if opts.id.is_none() {
            anonymous_devices += 1;
        }
        if matches!(opts.get("driver"), Some("ide-hd" | "ide-cd")) {
            ide.attach_device(opts, &mut drive_configs, anonymous_index)?;
            continue;
        }
        if opts.get("driver") == Some("isa-debugcon") {
            let debugcon = device::isa_debugcon(opts)?;
            if registry.find(&debugcon.chardev).is_none() {
                return Err(CliError::at(
                    &opts.location,
                    ErrorKind::message(format!(
                        "Property 'isa-debugcon.chardev' can't find value '{}'",
                        debugcon.chardev
                    )),
                ));
            }
            registry
                .attach(&debugcon.chardev)
                .map_err(|e| CliError::at(&opts.location, e))?;
            debugcons.push(debugcon);
            continue;
        }
        let what = device::check_device(opts)?;
        let location = opts.location.clone();
        cl.unsupported
            .push(CliError::at(&location, ErrorKind::Unsupported(what)));
    }

    // Everything QEMU checks has passed; what vmscope lacks is refused by the caller.
    let mut refusals = std::mem::take(&mut cl.unsupported);
    refusals.sort_by_key(CliError::position);
    // One refusal per option: the first found (the option's own, before machine sugar).
    refusals.dedup_by(|later, first| {
        later.position() == first.position() && later.location() == first.location()
    });
    let display_warning = cl.display.requested.as_ref().map(|location| {
        Warning::new(
            location,
            "vmscope emulates no display; display options have no effect",
        )
    });
    let name_opts = cl.names.entries.first();
    let name = name_opts.and_then(|o| o.get("guest")).map(str::to_string);
    let process_name = name_opts.and_then(|o| o.get("process")).map(str::to_string);
    let kernel_boot = props.kernel.map(|kernel| KernelBoot {
        kernel: PathBuf::from(kernel),
        initrd: props.initrd.map(PathBuf::from),
        cmdline: props.append.unwrap_or_default(),
    });
    let config = Config {
        name,
        process_name,
        memory: props.memory,
        smp: props.smp,
        cpu: cpu_model,
        accelerators: accelerators.list,
        kernel_boot,
        chardevs: registry.created,
        serial_ports,
        monitors,
        no_reboot: cl.no_reboot,
        no_shutdown: cl.no_shutdown,
        start_paused: cl.start_paused,
        daemonize: cl.daemonize,
        pidfile: cl.pidfile.map(PathBuf::from),
        no_defaults: !cl.has_defaults,
        display_requested: cl.display.requested.is_some(),
        firmware: props.firmware.map(PathBuf::from),
        nographic: props.nographic,
        debugcons,
        boot: props.boot,
        data_dirs: cl.data_dirs.iter().map(PathBuf::from).collect(),
        drives: drive_configs,
        rtc,
    };
    Ok(Built::Parsed(Box::new(Parsed {
        config,
        drives,
        refusals,
        display_warning,
    })))
}

/// QEMU's `qemu_create_default_devices` for serial port and monitor.
fn create_default_devices(cl: &mut CommandLine, console: &mut Console) -> Result<(), CliError> {
    let none = Location::none();
    if cl.display.nographic {
        if cl.default_serial && cl.default_monitor {
            cl.serials.push(PortRequest {
                text: "mon:stdio".into(),
                location: none,
            });
        } else {
            if cl.default_serial {
                cl.serials.push(PortRequest {
                    text: "stdio".into(),
                    location: none.clone(),
                });
            }
            if cl.default_monitor {
                cl.monitor_parse("stdio", "readline", false, &none, console)?;
            }
        }
    } else {
        if cl.default_serial {
            cl.serials.push(PortRequest {
                text: "vc:80Cx24C".into(),
                location: none.clone(),
            });
        }
        if cl.default_monitor {
            cl.monitor_parse("vc:80Cx24C", "readline", false, &none, console)?;
        }
    }
    Ok(())
}

/// QEMU's `qemu_chr_new_mux_mon` for a serial port: the chardev's id, or `None` when it
/// is one vmscope lacks (recorded as unsupported).
fn connect_port(
    cl: &mut CommandLine,
    registry: &mut chardev::Registry,
    monitors: &mut Vec<MonitorConfig>,
    label: &str,
    request: &PortRequest,
    kind: &str,
    console: &mut Console,
) -> Result<Option<String>, CliError> {
    let location = &request.location;
    let text = &request.text;
    let failed = || {
        ErrorKind::message(format!(
            "could not connect {kind} device to character backend '{text}'"
        ))
    };
    if let Some(id) = text.strip_prefix("chardev:") {
        if registry.find(id).is_none() {
            return Err(CliError::at(location, failed()));
        }
        registry.attach(id).map_err(|e| CliError::at(location, e))?;
        return Ok(Some(id.to_string()));
    }
    let index = match chardev::parse_compat(&mut cl.chardevs, label, text, true, location, console)
    {
        Ok(i) => i,
        Err(first) => {
            return Err(match first {
                Some(kind) => CliError::at(location, kind).then(failed()),
                None => CliError::at(location, failed()),
            })
        }
    };
    let opts = cl.chardevs.entries.remove(index);
    match registry.create(&opts, cl.daemonize, console) {
        Err(e) => Err(CliError::at(location, e).then(failed())),
        Ok(Created::Unsupported(what)) => {
            cl.unsupported_at(location, &what);
            Ok(None)
        }
        Ok(Created::Ok) => {
            registry
                .attach(label)
                .map_err(|e| CliError::at(location, e))?;
            if opts.get_bool("mux", false) {
                // `mon:` also puts an HMP monitor on the muxed chardev.
                registry
                    .attach(label)
                    .map_err(|e| CliError::at(location, e))?;
                monitors.push(MonitorConfig {
                    chardev: label.to_string(),
                    mode: MonitorMode::Readline,
                    pretty: false,
                });
            }
            Ok(Some(label.to_string()))
        }
    }
}
