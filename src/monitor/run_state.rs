//! QEMU's `RunState` (qapi/run-state.json) and the status the monitors report.

/// The run state of the VM, with QEMU 7.2's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    Debug,
    InMigrate,
    InternalError,
    IoError,
    Paused,
    PostMigrate,
    /// Started with `-S`, not yet continued.
    Prelaunch,
    FinishMigrate,
    RestoreVm,
    Running,
    SaveVm,
    /// The guest powered off and `-no-shutdown` kept the process alive.
    Shutdown,
    Suspended,
    Watchdog,
    GuestPanicked,
    Colo,
    Preconfig,
}

impl RunState {
    /// The QAPI name (`query-status`'s `status`, `info status`'s parenthesis).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Debug => "debug",
            RunState::InMigrate => "inmigrate",
            RunState::InternalError => "internal-error",
            RunState::IoError => "io-error",
            RunState::Paused => "paused",
            RunState::PostMigrate => "postmigrate",
            RunState::Prelaunch => "prelaunch",
            RunState::FinishMigrate => "finish-migrate",
            RunState::RestoreVm => "restore-vm",
            RunState::Running => "running",
            RunState::SaveVm => "save-vm",
            RunState::Shutdown => "shutdown",
            RunState::Suspended => "suspended",
            RunState::Watchdog => "watchdog",
            RunState::GuestPanicked => "guest-panicked",
            RunState::Colo => "colo",
            RunState::Preconfig => "preconfig",
        }
    }

    /// States `cont` refuses until a reset (QEMU's `runstate_needs_reset`).
    pub fn needs_reset(self) -> bool {
        matches!(
            self,
            RunState::InternalError | RunState::Shutdown | RunState::GuestPanicked
        )
    }
}

/// What `query-status` / `info status` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusInfo {
    pub status: RunState,
    /// True exactly in [`RunState::Running`].
    pub running: bool,
    /// QEMU 7.2 still reports TCG's single-step mode; vmscope (KVM) never has it on.
    pub singlestep: bool,
}

impl StatusInfo {
    pub fn of(status: RunState) -> StatusInfo {
        StatusInfo {
            status,
            running: status == RunState::Running,
            singlestep: false,
        }
    }

    /// The `info status` line without its newline, as QEMU 7.2 prints it.
    pub fn hmp_text(&self) -> String {
        let mut text = format!(
            "VM status: {}{}",
            if self.running { "running" } else { "paused" },
            if self.singlestep {
                " (single step mode)"
            } else {
                ""
            }
        );
        if !self.running && self.status != RunState::Paused {
            text.push_str(&format!(" ({})", self.status.as_str()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_status_texts() {
        assert_eq!(
            StatusInfo::of(RunState::Running).hmp_text(),
            "VM status: running"
        );
        assert_eq!(
            StatusInfo::of(RunState::Paused).hmp_text(),
            "VM status: paused"
        );
        assert_eq!(
            StatusInfo::of(RunState::Prelaunch).hmp_text(),
            "VM status: paused (prelaunch)"
        );
        assert_eq!(
            StatusInfo::of(RunState::Shutdown).hmp_text(),
            "VM status: paused (shutdown)"
        );
        assert_eq!(
            StatusInfo::of(RunState::InternalError).hmp_text(),
            "VM status: paused (internal-error)"
        );
    }
}
