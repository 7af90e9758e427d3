//! The command layer both monitors call: HMP formats its results as text, QMP (later) as
//! JSON, so the two can never disagree about what a command does.

use std::sync::Arc;

use thiserror::Error;

use super::run_state::{RunState, StatusInfo};

/// What the monitor may do to the machine. The machine implements it; tests mock it.
pub trait VmControl: Send + Sync {
    fn run_state(&self) -> RunState;
    /// Pauses every vCPU; returns once they are paused. Leaves `Prelaunch` as it is, as
    /// QEMU does (only a running VM becomes `Paused`).
    fn stop(&self);
    /// Starts or resumes the vCPUs (from `Prelaunch` or `Paused`).
    fn cont(&self) -> Result<(), String>;
    /// Ends the process in order (exit status 0), as QEMU's `quit`.
    fn quit(&self);
}

/// QMP error classes (the HMP prints only the description).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
    DeviceNotActive,
    DeviceNotFound,
    KvmMissingCap,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KvmMissingCap => "KVMMissingCap",
        }
    }
}

/// A command failed; `desc` is QEMU's text.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{desc}")]
pub struct CommandError {
    pub class: ErrorClass,
    pub desc: String,
}

impl CommandError {
    pub fn generic(desc: impl Into<String>) -> CommandError {
        CommandError {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }
}

/// The commands, acting on the machine through [`VmControl`].
pub struct MonitorCommands {
    vm: Arc<dyn VmControl>,
}

impl MonitorCommands {
    pub fn new(vm: Arc<dyn VmControl>) -> MonitorCommands {
        MonitorCommands { vm }
    }

    /// `query-status` / `info status`.
    pub fn query_status(&self) -> StatusInfo {
        StatusInfo::of(self.vm.run_state())
    }

    /// `stop`.
    pub fn stop(&self) -> Result<(), CommandError> {
        // QEMU only changes the autostart flag during an incoming migration, which
        // vmscope never is in.
        self.vm.stop();
        Ok(())
    }

    /// `cont`, with QEMU 7.2's checks before resuming.
    pub fn cont(&self) -> Result<(), CommandError> {
        let state = self.vm.run_state();
        if state.needs_reset() {
            return Err(CommandError::generic(
                "Resetting the Virtual Machine is required",
            ));
        }
        match state {
            // A suspended guest wakes up through system_wakeup, not cont.
            RunState::Suspended => Ok(()),
            RunState::FinishMigrate => Err(CommandError::generic("Migration is not finalized yet")),
            _ => self.vm.cont().map_err(CommandError::generic),
        }
    }

    /// `quit`.
    pub fn quit(&self) -> Result<(), CommandError> {
        self.vm.quit();
        Ok(())
    }
}
