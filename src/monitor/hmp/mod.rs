//! The human monitor (HMP) as a chardev front end: QEMU 7.2's banner, `(qemu) ` prompt,
//! readline echo, command texts, and its behaviour on a mux (output held while another
//! front end has the focus, a fresh prompt when it comes back).
//!
//! Input is handled byte by byte as it arrives, so a command runs as soon as its newline
//! is read: `echo info status | socat - UNIX-CONNECT:sock` gets its answer even though
//! socat shuts its side down right after sending (the chardev delivers everything before
//! reporting the disconnect and sends the replies before closing).

mod args;
mod readline;
mod table;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use self::readline::Readline;
use self::table::{Action, Parsed};
use super::commands::MonitorCommands;
use super::QEMU_VERSION;
use crate::chardev::{ChardevError, ChardevEvent, ChardevFrontend, ChardevWriter, Chardevs};

/// Output kept while the chardev refuses it (stalled client) or the focus is elsewhere;
/// beyond this the oldest output is dropped.
const HELD_OUTPUT_LIMIT: usize = 1 << 20;

/// One HMP monitor on one chardev.
pub struct Hmp {
    commands: Arc<MonitorCommands>,
    writer: OnceLock<ChardevWriter>,
    state: Mutex<HmpState>,
}

struct HmpState {
    readline: Readline,
    /// A mux gave the focus to another front end (QEMU's `mux_out`).
    mux_out: bool,
    /// The chardev has been opened at least once (QEMU's `reset_seen`).
    opened: bool,
    /// QEMU's suspend count: no input is taken and no prompt shown while non-zero.
    suspended: u32,
    /// Output not yet handed to the chardev.
    held: Vec<u8>,
}

impl Hmp {
    /// Creates the monitor and attaches it to chardev `chardev_id`.
    pub fn attach(
        chardevs: &mut Chardevs,
        chardev_id: &str,
        commands: Arc<MonitorCommands>,
    ) -> Result<Arc<Hmp>, ChardevError> {
        let hmp = Arc::new(Hmp {
            commands,
            writer: OnceLock::new(),
            state: Mutex::new(HmpState {
                readline: Readline::new(),
                mux_out: false,
                opened: false,
                suspended: 0,
                held: Vec::new(),
            }),
        });
        let writer = chardevs.attach(chardev_id, hmp.clone())?;
        // Events only come from the loop, after attach has returned: set before use.
        let _ = hmp.writer.set(writer);
        Ok(hmp)
    }

    fn lock(&self) -> MutexGuard<'_, HmpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes held output unless another mux front end has the focus.
    fn flush(&self, state: &mut HmpState) {
        if state.mux_out || state.held.is_empty() {
            return;
        }
        let Some(writer) = self.writer.get() else {
            return;
        };
        if std::io::Write::write_all(&mut &*writer, &state.held).is_ok() {
            state.held.clear();
        } else if state.held.len() > HELD_OUTPUT_LIMIT {
            let excess = state.held.len() - HELD_OUTPUT_LIMIT;
            state.held.drain(..excess);
        }
    }

    fn resume(&self, state: &mut HmpState) {
        state.suspended = state.suspended.saturating_sub(1);
        if state.suspended == 0 {
            let mut out = Vec::new();
            state.readline.show_prompt(&mut out);
            puts(state, &out);
        }
    }

    fn run_line(&self, state: &mut HmpState, line: &[u8]) {
        // As QEMU: suspended while the command runs, the prompt comes back on resume.
        state.suspended += 1;
        let parsed = table::parse(line);
        if let Parsed::Command { command, .. } = &parsed {
            if command.action == Action::Quit {
                // Stays suspended: no prompt, no more input, like QEMU's hmp_quit.
                state.suspended += 1;
                self.flush(state);
            }
        }
        // vmscope has no `cpu` command: an HMP monitor's current CPU stays the first.
        let text = execute(&self.commands, parsed, 0);
        puts(state, &text);
        self.resume(state);
    }
}

/// Runs one HMP command line and returns its output (`\n` line ends), without any
/// terminal handling: QMP's `human-monitor-command` uses it, with its `cpu-index` as the
/// monitor's current CPU.
pub(crate) fn run_line_for_text(
    commands: &MonitorCommands,
    line: &[u8],
    current_cpu: u32,
) -> Vec<u8> {
    execute(commands, table::parse(line), current_cpu)
}

/// `info registers [-a] [vcpu]`.
/// `info mtree`: the region tree, `-D` included; the flat view (`-f`, and `-d` with it)
/// and owners (`-o`) are refused with a message naming them. `-d` alone is accepted and
/// changes nothing, as on QEMU.
fn info_mtree(commands: &MonitorCommands, argument: Option<&[u8]>) -> Vec<u8> {
    let flags = args::mtree_flags(argument.unwrap_or_default()).unwrap_or_default();
    let unsupported = if flags.flatview {
        Some("-f (flat views)")
    } else if flags.owner {
        Some("-o (region owners)")
    } else {
        None
    };
    if let Some(what) = unsupported {
        return format!("Error: info mtree {what} is not supported by vmscope\n").into_bytes();
    }
    match commands.mtree() {
        Ok(map) => super::mtree::format_mtree(&map, flags.disabled).into_bytes(),
        Err(e) => format!("Error: {}\n", e.desc).into_bytes(),
    }
}

fn info_registers(
    commands: &MonitorCommands,
    argument: Option<&[u8]>,
    current_cpu: u32,
) -> Vec<u8> {
    let (all, vcpu) = args::registers(argument.unwrap_or_default()).unwrap_or((false, None));
    let cpus: Vec<u32> = commands.query_cpus_fast().iter().map(|c| c.index).collect();
    let chosen: Vec<u32> = if all {
        cpus
    } else {
        let index = match vcpu {
            Some(v) if v >= 0 => v,
            _ => i64::from(current_cpu),
        };
        match cpus.iter().find(|&&c| i64::from(c) == index) {
            Some(&c) => vec![c],
            None if vcpu.is_some_and(|v| v >= 0) => {
                return format!("CPU#{index} not available\n").into_bytes()
            }
            None => return b"No CPU available\n".to_vec(),
        }
    };
    let mut out = String::new();
    for index in chosen {
        match commands
            .cpu_registers(index)
            .and_then(|registers| super::registers::dump(index, &registers))
        {
            Ok(text) => out.push_str(&text),
            Err(e) => out.push_str(&format!("{e}\n")),
        }
    }
    out.into_bytes()
}

fn execute(commands: &MonitorCommands, parsed: Parsed, current_cpu: u32) -> Vec<u8> {
    let report = |result: Result<(), super::CommandError>| match result {
        Ok(()) => Vec::new(),
        Err(e) => format!("Error: {}\n", e.desc).into_bytes(),
    };
    match parsed {
        Parsed::Blank => Vec::new(),
        Parsed::Error(text) => text,
        Parsed::Command { command, argument } => match command.action {
            Action::Help => table::help_text(argument.as_deref()),
            Action::InfoHelp => table::help_text(Some(b"info")),
            Action::InfoStatus => format!("{}\n", commands.query_status().hmp_text()).into_bytes(),
            Action::InfoVersion => {
                let (major, minor, micro) = super::QEMU_VERSION_TRIPLE;
                // QEMU prints the package string right after the micro version.
                format!("{major}.{minor}.{micro}{}\n", super::QEMU_PACKAGE).into_bytes()
            }
            Action::InfoName => commands
                .query_name()
                .map(|name| format!("{name}\n").into_bytes())
                .unwrap_or_default(),
            Action::InfoKvm => {
                let (enabled, present) = commands.query_kvm();
                match (present, enabled) {
                    (false, _) => b"kvm support: not compiled\n".to_vec(),
                    (true, true) => b"kvm support: enabled\n".to_vec(),
                    (true, false) => b"kvm support: disabled\n".to_vec(),
                }
            }
            Action::InfoCpus => {
                let mut text = String::new();
                for cpu in commands.query_cpus_fast() {
                    let mark = if cpu.index == current_cpu { '*' } else { ' ' };
                    text.push_str(&format!(
                        "{mark} CPU #{}: thread_id={}\n",
                        cpu.index, cpu.thread_id
                    ));
                }
                text.into_bytes()
            }
            Action::InfoChardev => commands
                .query_chardev()
                .iter()
                .map(|c| format!("{}: filename={}\n", c.label, c.filename))
                .collect::<String>()
                .into_bytes(),
            Action::InfoRegisters => info_registers(commands, argument.as_deref(), current_cpu),
            Action::InfoQtree => match commands.qtree() {
                Ok(root) => super::qtree::format_qtree(&root).into_bytes(),
                Err(e) => format!("Error: {}\n", e.desc).into_bytes(),
            },
            Action::InfoMtree => info_mtree(commands, argument.as_deref()),
            Action::SystemReset => report(commands.system_reset()),
            Action::SystemPowerdown => report(commands.system_powerdown()),
            Action::Stop => report(commands.stop()),
            Action::Cont => report(commands.cont()),
            Action::Quit => report(commands.quit()),
            Action::Block(block) => {
                crate::monitor::block::hmp::execute(commands, block, argument.as_deref())
            }
        },
    }
}

/// Appends monitor output, turning every `\n` into `\r\n` as QEMU's monitor does.
fn puts(state: &mut HmpState, text: &[u8]) {
    for &b in text {
        if b == b'\n' {
            state.held.push(b'\r');
        }
        state.held.push(b);
    }
}

impl ChardevFrontend for Hmp {
    fn can_receive(&self) -> usize {
        if self.lock().suspended > 0 {
            0
        } else {
            4096
        }
    }

    fn receive(&self, data: &[u8]) {
        let mut guard = self.lock();
        let state = &mut *guard;
        for &byte in data {
            if state.suspended > 0 {
                // After `quit` the rest of the input is not for us.
                break;
            }
            let mut echo = Vec::new();
            let line = state
                .readline
                .handle_byte(byte, &mut echo, &table::complete);
            puts(state, &echo);
            if let Some(line) = line {
                self.run_line(state, &line);
            }
        }
        self.flush(state);
    }

    fn event(&self, event: ChardevEvent) {
        let mut guard = self.lock();
        let state = &mut *guard;
        match event {
            ChardevEvent::Opened => {
                puts(
                    state,
                    format!("QEMU {QEMU_VERSION} monitor - type 'help' for more information\n")
                        .as_bytes(),
                );
                if !state.mux_out {
                    state.readline.restart();
                    let mut out = Vec::new();
                    state.readline.show_prompt(&mut out);
                    puts(state, &out);
                }
                state.opened = true;
            }
            ChardevEvent::FocusIn => {
                state.mux_out = false;
                if state.opened {
                    state.readline.restart();
                    self.resume(state);
                } else {
                    state.suspended = 0;
                }
            }
            ChardevEvent::FocusOut => {
                if state.opened {
                    if state.suspended == 0 {
                        puts(state, b"\n");
                    }
                    self.flush(state);
                }
                state.suspended += 1;
                state.mux_out = true;
            }
            ChardevEvent::Closed | ChardevEvent::Break => {}
        }
        self.flush(state);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::run_line_for_text;
    use crate::hw::describe::{MemoryMap, QdevBus, RegionKind};
    use crate::monitor::{MonitorCommands, RunState, SystemReset, VcpuInfo, VmControl};

    /// A machine in `prelaunch`; with `described`, it has a one-device tree and one region.
    struct Vm {
        described: bool,
    }

    impl VmControl for Vm {
        fn run_state(&self) -> RunState {
            RunState::Prelaunch
        }
        fn stop(&self) {}
        fn cont(&self) -> Result<(), String> {
            Ok(())
        }
        fn quit(&self) {}
        fn system_reset(&self) -> Result<SystemReset, String> {
            Ok(SystemReset::Reset)
        }
        fn vcpus(&self) -> Vec<VcpuInfo> {
            Vec::new()
        }
        fn qtree(&self) -> Result<QdevBus, String> {
            if !self.described {
                return Err("no tree".into());
            }
            Ok(QdevBus {
                name: "main-system-bus".into(),
                bus_type: "System",
                devices: vec![crate::hw::describe::QdevDevice::new("fw_cfg_io")],
            })
        }
        fn mtree(&self) -> Result<MemoryMap, String> {
            if !self.described {
                return Err("no map".into());
            }
            let mut map = MemoryMap::default();
            let io = map.region("io", 0x10000, RegionKind::Io, 0);
            map.add_address_space("I/O", io);
            Ok(map)
        }
    }

    fn run(described: bool, line: &str) -> String {
        let commands = MonitorCommands::new(Arc::new(Vm { described }));
        String::from_utf8(run_line_for_text(&commands, line.as_bytes(), 0)).unwrap()
    }

    #[test]
    fn info_qtree_and_mtree_format_what_the_machine_describes() {
        assert_eq!(
            run(true, "info qtree"),
            "bus: main-system-bus\n  type System\n  dev: fw_cfg_io, id \"\"\n"
        );
        let map = "address-space: I/O\n  0000000000000000-000000000000ffff (prio 0, i/o): io\n\n";
        assert_eq!(run(true, "info mtree"), map);
        // `-d` without `-f` changes nothing, as on QEMU.
        assert_eq!(run(true, "info mtree -d -D"), map);
        assert_eq!(run(false, "info qtree"), "Error: no tree\n");
        assert_eq!(run(false, "info mtree"), "Error: no map\n");
    }

    #[test]
    fn unsupported_mtree_views_are_refused_by_name() {
        assert_eq!(
            run(true, "info mtree -f"),
            "Error: info mtree -f (flat views) is not supported by vmscope\n"
        );
        assert_eq!(
            run(true, "info mtree -o"),
            "Error: info mtree -o (region owners) is not supported by vmscope\n"
        );
        assert_eq!(
            run(true, "info mtree -x"),
            "mtree: unsupported option -x\nTry \"help info mtree\" for more information\n"
        );
    }
}
