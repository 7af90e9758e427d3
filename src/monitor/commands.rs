//! The command layer both monitors call. HMP parses a line into one of these commands;
//! QMP (issue 4) will map its JSON requests onto the same functions.

use super::VmControl;
use crate::machine::RunState;

/// Whether the monitor goes on after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HmpOutcome {
    Continue,
    Quit,
}

/// A command's text output and what follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HmpResult {
    pub output: String,
    pub kind: HmpOutcome,
}

impl HmpResult {
    fn text(output: impl Into<String>) -> HmpResult {
        HmpResult {
            output: output.into(),
            kind: HmpOutcome::Continue,
        }
    }
}

/// QEMU's name of a run state.
pub fn run_state_name(state: RunState) -> &'static str {
    match state {
        RunState::Prelaunch => "prelaunch",
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Shutdown => "shutdown",
        RunState::InternalError => "internal-error",
    }
}

/// `info status` as QEMU 7.2 words it.
pub fn status_line(state: RunState) -> String {
    match state {
        RunState::Running => "VM status: running\n".to_string(),
        RunState::Paused => "VM status: paused\n".to_string(),
        other => format!("VM status: paused ({})\n", run_state_name(other)),
    }
}

const HELP: &str = "\
cont|c  -- resume emulation
help|? [cmd] -- show the help
info [subcommand] -- show various information about the system state
quit|q  -- quit the emulator
stop  -- stop emulation
";

const INFO_HELP: &str = "\
info name  -- show the current VM name
info status  -- show the current VM status (running|paused)
info version  -- show the version of QEMU
";

/// Runs one HMP command line.
pub fn execute_hmp(line: &str, control: &dyn VmControl) -> HmpResult {
    let mut words = line.split_whitespace();
    let Some(command) = words.next() else {
        return HmpResult::text("");
    };
    let args: Vec<&str> = words.collect();
    match (command, args.as_slice()) {
        ("info", []) => HmpResult::text(INFO_HELP),
        ("info", ["status"]) => HmpResult::text(status_line(control.run_state())),
        ("info", ["version"]) => {
            HmpResult::text(format!("7.2.0 (vmscope {})\n", env!("CARGO_PKG_VERSION")))
        }
        ("info", ["name"]) => HmpResult::text(
            control
                .name()
                .map(|name| format!("{name}\n"))
                .unwrap_or_default(),
        ),
        ("info", [sub, ..]) => HmpResult::text(format!("unknown command: 'info {sub}'\n")),
        ("stop", []) => {
            control.stop();
            HmpResult::text("")
        }
        ("cont" | "c", []) => match control.cont() {
            Ok(()) => HmpResult::text(""),
            Err(e) => HmpResult::text(format!("{e}\n")),
        },
        ("quit" | "q", []) => HmpResult {
            output: String::new(),
            kind: HmpOutcome::Quit,
        },
        ("help" | "?", []) => HmpResult::text(HELP),
        ("help" | "?", ["info"]) => HmpResult::text(INFO_HELP),
        ("help" | "?", [name]) => match HELP.lines().find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|names| names.split('|').any(|n| n == *name))
        }) {
            Some(entry) => HmpResult::text(format!("{entry}\n")),
            None => HmpResult::text(format!("unknown command: '{name}'\n")),
        },
        ("stop" | "cont" | "c" | "quit" | "q", _) => HmpResult::text(format!(
            "{command}: extraneous characters at the end of line\n"
        )),
        _ => HmpResult::text(format!("unknown command: '{command}'\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct FakeVm(Mutex<RunState>);

    impl VmControl for FakeVm {
        fn run_state(&self) -> RunState {
            *self.0.lock().unwrap()
        }
        fn stop(&self) {
            *self.0.lock().unwrap() = RunState::Paused;
        }
        fn cont(&self) -> Result<(), String> {
            let mut s = self.0.lock().unwrap();
            if *s == RunState::InternalError {
                return Err("Resetting the Virtual Machine is required".into());
            }
            *s = RunState::Running;
            Ok(())
        }
        fn name(&self) -> Option<String> {
            Some("test".into())
        }
    }

    #[test]
    fn status_follows_stop_and_cont_in_qemu_wording() {
        let vm = FakeVm(Mutex::new(RunState::Prelaunch));
        assert_eq!(
            execute_hmp("info status", &vm).output,
            "VM status: paused (prelaunch)\n"
        );
        execute_hmp("cont", &vm);
        assert_eq!(
            execute_hmp("info  status", &vm).output,
            "VM status: running\n"
        );
        execute_hmp("stop", &vm);
        assert_eq!(
            execute_hmp("info status", &vm).output,
            "VM status: paused\n"
        );
    }

    #[test]
    fn unknown_commands_and_quit() {
        let vm = FakeVm(Mutex::new(RunState::Running));
        assert_eq!(
            execute_hmp("frobnicate now", &vm).output,
            "unknown command: 'frobnicate'\n"
        );
        assert_eq!(execute_hmp("q", &vm).kind, HmpOutcome::Quit);
        assert_eq!(execute_hmp("info name", &vm).output, "test\n");
    }

    #[test]
    fn cont_after_internal_error_reports_why() {
        let vm = FakeVm(Mutex::new(RunState::InternalError));
        assert_eq!(
            execute_hmp("c", &vm).output,
            "Resetting the Virtual Machine is required\n"
        );
    }
}
