//! `vmscope` / `qemu-system-x86_64` entry point: parse argv, build the machine, wire its
//! chardevs and monitors into the main loop, run until the guest or a monitor ends it.

use std::sync::{Arc, OnceLock};

use vmscope::block::drive::{Drive, DriveSet};
use vmscope::chardev::{ChardevFrontend, ChardevWriter, Chardevs, Interest, LoopHandle, MainLoop};
use vmscope::cli::{self, CliOutcome};
use vmscope::config::SmpConfig;
use vmscope::config::{Accelerator, Config, DriveConfig, MonitorMode};
use vmscope::hw::describe::{MemoryMap, QdevBus};
use vmscope::hw::serial::SerialPort;
use vmscope::machine::{GuestNotice, Machine, Next};
use vmscope::monitor::{
    Hmp, MonitorCommands, Qmp, RunState, SystemReset, VcpuInfo, VcpuRegisters, VmControl,
};
use vmscope::process::{daemonize, set_process_name, PidFile};

/// COM1 as a chardev front end. The UART is created with the machine, after the chardev
/// handed out its writer, hence the late binding.
struct SerialFrontend(OnceLock<Arc<SerialPort>>);

impl ChardevFrontend for SerialFrontend {
    fn can_receive(&self) -> usize {
        self.0.get().map_or(0, |port| port.input_space())
    }
    fn receive(&self, data: &[u8]) {
        if let Some(port) = self.0.get() {
            port.queue_input(data);
        }
    }
}

/// An output-only front end (isa-debugcon): input from the chardev is not taken.
struct OutputOnlyFrontend;

impl ChardevFrontend for OutputOnlyFrontend {
    fn can_receive(&self) -> usize {
        0
    }

    fn receive(&self, _data: &[u8]) {}
}

/// The monitors' view of the machine. Monitors are attached before the machine exists (the
/// serial port must be attached last to get the mux focus, and it needs the machine), but
/// they only run commands from the loop, once the machine is set.
struct MachineControl {
    machine: OnceLock<Arc<Machine>>,
    main_loop: LoopHandle,
    smp: SmpConfig,
    no_reboot: bool,
}

impl MachineControl {
    fn machine(&self) -> &Machine {
        self.machine
            .get()
            .expect("monitors run only after start-up")
    }
}

impl VmControl for MachineControl {
    fn run_state(&self) -> RunState {
        self.machine().run_state()
    }
    fn stop(&self) {
        self.machine().pause();
    }
    fn cont(&self) -> Result<(), String> {
        self.machine().resume()
    }
    fn quit(&self) {
        self.main_loop.request_exit(0);
    }
    fn system_reset(&self) -> Result<SystemReset, String> {
        if self.no_reboot {
            self.main_loop.request_exit(0);
            return Ok(SystemReset::Shutdown);
        }
        self.machine().reset_machine().map_err(|e| e.to_string())?;
        Ok(SystemReset::Reset)
    }
    fn cpu_registers(&self, index: u32) -> Result<VcpuRegisters, String> {
        self.machine()
            .vcpu_registers(index)
            .map_err(|e| e.to_string())
    }
    fn system_powerdown(&self) -> Result<(), String> {
        self.machine().press_power_button();
        Ok(())
    }
    fn qtree(&self) -> Result<QdevBus, String> {
        Ok(self.machine().qtree())
    }
    fn mtree(&self) -> Result<MemoryMap, String> {
        Ok(self.machine().mtree())
    }
    fn vcpus(&self) -> Vec<VcpuInfo> {
        // Threads fastest, then cores, dies, sockets: QEMU's numbering of cpu-index.
        let smp = &self.smp;
        let (threads, cores, dies) = (smp.threads.max(1), smp.cores.max(1), smp.dies.max(1));
        self.machine()
            .vcpu_thread_ids()
            .iter()
            .zip(0u32..)
            .map(|(&thread_id, index)| VcpuInfo {
                index,
                thread_id,
                socket_id: index / (threads * cores * dies),
                die_id: (dies > 1).then_some(index / (threads * cores) % dies),
                core_id: index / threads % cores,
                thread_in_core: index % threads,
            })
            .collect()
    }
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("{}: {message}", vmscope::program_name());
    std::process::exit(1);
}

/// Opens every drive (and its backing chain) as QEMU's `drive_new` does before the machine
/// exists; a failure ends the process with QEMU's message, prefixed by the option.
fn open_drives(drives: &[DriveConfig]) -> DriveSet {
    let opened = drives
        .iter()
        .map(|drive| match Drive::open(drive.spec.clone()) {
            Ok(opened) => Arc::new(opened),
            Err(e) => match &drive.origin {
                Some(origin) => fail(format_args!("{origin}: {e}")),
                None => fail(e),
            },
        })
        .collect();
    DriveSet::new(opened)
}

fn main() {
    let argv: Vec<_> = std::env::args_os().collect();
    let config = match cli::parse(&argv) {
        Ok(CliOutcome::Run(config)) => config,
        Ok(CliOutcome::Exit(status)) => std::process::exit(status),
        Err(e) => {
            // The report carries QEMU's program-name prefix already.
            eprint!("{}", e.report(&argv[0]));
            std::process::exit(1);
        }
    };
    if !config.accelerators.is_empty() && !config.accelerators.contains(&Accelerator::Kvm) {
        fail("-accel tcg: vmscope runs guests on KVM only; software emulation (TCG) is not supported, use -accel kvm");
    }
    std::process::exit(run(config));
}

fn run(config: Config) -> i32 {
    let daemon = config
        .daemonize
        .then(|| daemonize().unwrap_or_else(|e| fail(e)));
    let _pidfile = config
        .pidfile
        .as_deref()
        .map(|path| PidFile::create(path).unwrap_or_else(|e| fail(e)));

    if let Some(name) = &config.process_name {
        // Threads started later inherit the main thread's name unless they set their own.
        set_process_name(name);
    }
    let main_loop = MainLoop::new().unwrap_or_else(|e| fail(e));
    // Before any thread exists, so every thread inherits the blocked signals. QMP clients
    // get QEMU's SHUTDOWN event (cause host-signal) once the monitors exist.
    let signal_commands: Arc<OnceLock<Arc<MonitorCommands>>> = Arc::new(OnceLock::new());
    let for_signals = signal_commands.clone();
    main_loop
        .handle_termination_signals(move |main_loop, _| {
            if let Some(commands) = for_signals.get() {
                commands.events().shutdown(false, "host-signal");
            }
            main_loop.request_exit(0)
        })
        .unwrap_or_else(|e| fail(e));
    let mut chardevs = Chardevs::open(&config.chardevs, &main_loop).unwrap_or_else(|e| fail(e));

    let drives = Arc::new(open_drives(&config.drives));
    let control = Arc::new(MachineControl {
        machine: OnceLock::new(),
        main_loop: main_loop.handle(),
        smp: config.smp,
        no_reboot: config.no_reboot,
    });
    let commands = Arc::new(
        MonitorCommands::new(control.clone())
            .with_vm_name(config.name.clone())
            .with_drives(drives.clone())
            .with_chardevs(chardevs.info_source()),
    );
    let _ = signal_commands.set(commands.clone());
    for monitor in &config.monitors {
        if monitor.mode == MonitorMode::Control {
            Qmp::attach(
                &mut chardevs,
                &monitor.chardev,
                commands.clone(),
                monitor.pretty,
            )
            .unwrap_or_else(|e| fail(e));
        } else {
            Hmp::attach(&mut chardevs, &monitor.chardev, commands.clone())
                .unwrap_or_else(|e| fail(e));
        }
    }

    // COM1 is attached last so that, on a mux, it has the focus as in QEMU.
    let serial_frontend = Arc::new(SerialFrontend(OnceLock::new()));
    let serial_writer: Option<ChardevWriter> = config.serial_ports.first().map(|id| {
        chardevs
            .attach(id, serial_frontend.clone())
            .unwrap_or_else(|e| fail(e))
    });
    if config.serial_ports.len() > 1 {
        fail("-serial: only one serial port (COM1) is supported yet by vmscope");
    }
    let (serial_output, rx_space): (Box<dyn std::io::Write + Send>, Box<dyn Fn() + Send + Sync>) =
        match serial_writer {
            Some(writer) => {
                let accept = writer.clone();
                (Box::new(writer), Box::new(move || accept.accept_input()))
            }
            None => (Box::new(std::io::sink()), Box::new(|| {})),
        };

    let debugcon_outputs: Vec<Box<dyn std::io::Write + Send>> = config
        .debugcons
        .iter()
        .map(|debugcon| {
            let writer = chardevs
                .attach(&debugcon.chardev, Arc::new(OutputOnlyFrontend))
                .unwrap_or_else(|e| fail(e));
            Box::new(writer) as Box<dyn std::io::Write + Send>
        })
        .collect();
    let mut machine = Machine::with_debugcons(
        &config,
        serial_output,
        rx_space,
        debugcon_outputs,
        drives.clone(),
    )
    .unwrap_or_else(|e| fail(e));
    let _ = serial_frontend.0.set(machine.serial());
    machine
        .start(config.start_paused)
        .unwrap_or_else(|e| fail(e));
    let machine = Arc::new(machine);
    let _ = control.machine.set(machine.clone());

    let events_machine = machine.clone();
    let event_commands = commands.clone();
    main_loop
        .add_fd(machine.event_fd(), Interest::READ, move |main_loop, _| {
            let events = event_commands.events();
            let next = events_machine.handle_events(&mut |notice| match notice {
                GuestNotice::Shutdown { reason } => events.shutdown(true, reason),
                GuestNotice::Reset => events.reset(true, "guest-reset"),
                GuestNotice::SuspendDisk => events.emit("SUSPEND_DISK", None),
                GuestNotice::Stopped => events.emit("STOP", None),
            });
            if let Next::Exit(status) = next {
                main_loop.request_exit(status);
            }
        })
        .unwrap_or_else(|e| fail(e));

    if let Some(daemon) = daemon {
        daemon.finish();
    }
    let status = main_loop.run().unwrap_or_else(|e| fail(e));
    // Flushes chardev output, removes socket files and restores the terminal.
    drop(chardevs);
    status
}
