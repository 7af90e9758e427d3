//! `vmscope` / `qemu-system-x86_64` entry point: parse argv, build the machine, wire its
//! chardevs and monitors into the main loop, run until the guest or a monitor ends it.

use std::sync::{Arc, OnceLock};

use vmm_sys_util::epoll::EventSet;
use vmscope::chardev::{stdio, Chardevs, Frontend, MainLoop};
use vmscope::cli::{self, CliOutcome};
use vmscope::config::{Accelerator, Config};
use vmscope::hw::serial::SerialPort;
use vmscope::machine::{Machine, Next, RunState};
use vmscope::monitor::hmp::Hmp;
use vmscope::monitor::VmControl;
use vmscope::process::{daemonize, PidFile};

/// COM1 as a chardev front end. The UART is created with the machine, after the chardev
/// handed out its writer, hence the late binding.
struct SerialFrontend(OnceLock<Arc<SerialPort>>);

impl Frontend for SerialFrontend {
    fn can_receive(&self) -> usize {
        self.0.get().map_or(0, |port| port.input_space())
    }
    fn receive(&self, data: &[u8]) {
        if let Some(port) = self.0.get() {
            port.queue_input(data);
        }
    }
}

/// The monitors' view of the machine.
struct MachineControl {
    machine: Arc<Machine>,
    name: Option<String>,
}

impl VmControl for MachineControl {
    fn run_state(&self) -> RunState {
        self.machine.run_state()
    }
    fn stop(&self) {
        self.machine.pause();
    }
    fn cont(&self) -> Result<(), String> {
        self.machine.resume()
    }
    fn name(&self) -> Option<String> {
        self.name.clone()
    }
}

fn fail(message: impl std::fmt::Display) -> ! {
    stdio::restore_terminal();
    eprintln!("{}: {message}", vmscope::program_name());
    std::process::exit(1);
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
    let status = run(config);
    stdio::restore_terminal();
    std::process::exit(status);
}

fn run(config: Config) -> i32 {
    let daemon = if config.daemonize {
        Some(daemonize().unwrap_or_else(|e| fail(e)))
    } else {
        None
    };
    let _pidfile = config
        .pidfile
        .as_deref()
        .map(|path| PidFile::create(path).unwrap_or_else(|e| fail(e)));

    let mut main_loop = MainLoop::new().unwrap_or_else(|e| fail(e));
    let chardevs = Chardevs::open(&config.chardevs, &mut main_loop).unwrap_or_else(|e| fail(e));

    let serial_frontend = Arc::new(SerialFrontend(OnceLock::new()));
    let serial_output: Box<dyn std::io::Write + Send> = match config.serial_ports.first() {
        Some(id) => {
            let dev = chardevs.get(id).unwrap_or_else(|e| fail(e));
            Box::new(
                dev.attach(serial_frontend.clone())
                    .unwrap_or_else(|e| fail(e)),
            )
        }
        None => Box::new(std::io::sink()),
    };
    let serial_chardev = config
        .serial_ports
        .first()
        .map(|id| chardevs.get(id).unwrap_or_else(|e| fail(e)));
    let loop_handle = main_loop.handle();
    let rx_space: Box<dyn Fn() + Send + Sync> = match serial_chardev.clone() {
        Some(dev) => Box::new(move || {
            let dev = dev.clone();
            loop_handle.post(move |_| dev.retry_input());
        }),
        None => Box::new(|| {}),
    };

    let mut machine = Machine::new(&config, serial_output, rx_space).unwrap_or_else(|e| fail(e));
    let _ = serial_frontend.0.set(machine.serial());
    if let Err(e) = machine.start(config.start_paused) {
        fail(e);
    }
    let machine = Arc::new(machine);

    let control: Arc<dyn VmControl> = Arc::new(MachineControl {
        machine: machine.clone(),
        name: config.name.clone(),
    });
    for monitor in &config.monitors {
        let dev = chardevs.get(&monitor.chardev).unwrap_or_else(|e| fail(e));
        // The writer exists only once the front end is attached: attach a slot, fill it after.
        let hmp = Arc::new(HmpSlot(OnceLock::new()));
        let writer = dev.attach(hmp.clone()).unwrap_or_else(|e| fail(e));
        let _ = hmp
            .0
            .set(Hmp::new(writer, control.clone(), main_loop.handle()));
    }
    chardevs.announce_open(&config.chardevs);

    let events_machine = machine.clone();
    main_loop
        .add(
            machine.event_fd(),
            EventSet::IN,
            Box::new(move |main_loop, _| {
                if let Next::Exit(status) = events_machine.handle_events() {
                    main_loop.exit(status);
                }
            }),
        )
        .unwrap_or_else(|e| fail(e));

    if let Some(daemon) = daemon {
        daemon.finish();
    }
    main_loop.run()
}

/// A monitor front end bound once its writer exists.
struct HmpSlot(OnceLock<Hmp>);

impl Frontend for HmpSlot {
    fn can_receive(&self) -> usize {
        self.0.get().map_or(0, |hmp| hmp.can_receive())
    }
    fn receive(&self, data: &[u8]) {
        if let Some(hmp) = self.0.get() {
            hmp.receive(data);
        }
    }
    fn opened(&self) {
        if let Some(hmp) = self.0.get() {
            hmp.opened();
        }
    }
}
