//! The command layer both monitors call: HMP formats its results as text, QMP as JSON, so
//! the two can never disagree about what a command does. Events caused by a command
//! (`STOP`, `RESUME`, `SHUTDOWN`) are emitted here, whichever monitor ran it.

use crate::block::drive::DriveSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use thiserror::Error;

use super::qmp::MonitorEvents;
use super::qom_order::child_walk_order;
use super::registers::VcpuRegisters;
use super::run_state::{RunState, StatusInfo};
use crate::chardev::{ChardevInfo, ChardevInfoSource};
use crate::hw::describe::{MemoryMap, QdevBus};

/// One vCPU as `query-cpus-fast` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    /// QEMU's `cpu-index`: 0-based, in creation order.
    pub index: u32,
    /// The host thread id (TID) of the thread running this vCPU.
    pub thread_id: i64,
    /// Topology position (`props` of `query-cpus-fast`).
    pub socket_id: u32,
    /// Present only when the machine has more than one die per socket (as in QEMU 7.2).
    pub die_id: Option<u32>,
    pub core_id: u32,
    /// The thread within its core.
    pub thread_in_core: u32,
}

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
    /// A system reset asked for by the host (`system_reset`): the VM is reset now, or,
    /// under `-no-reboot`, the process is asked to end (exit status 0) instead.
    fn system_reset(&self) -> Result<SystemReset, String>;
    /// Presses the ACPI power button (`system_powerdown`); what follows is up to the guest.
    /// A machine without one says so.
    fn system_powerdown(&self) -> Result<(), String> {
        Err("system_powerdown: this machine has no ACPI power button".into())
    }
    /// Every vCPU, ordered by index, with the TID of its thread (`query-cpus-fast`). Called
    /// on the main loop thread, possibly while the vCPUs run.
    fn vcpus(&self) -> Vec<VcpuInfo>;
    /// The registers of vCPU `index` (`info registers`); a running VM is held still while
    /// they are read. Machines that cannot say fail with a reason.
    fn cpu_registers(&self, index: u32) -> Result<VcpuRegisters, String> {
        Err(format!(
            "the registers of CPU#{index} cannot be read on this machine"
        ))
    }
    /// The device tree from the system bus down (`info qtree`).
    fn qtree(&self) -> Result<QdevBus, String> {
        Err("info qtree: this machine does not describe its devices".into())
    }
    /// The memory regions and address spaces (`info mtree`).
    fn mtree(&self) -> Result<MemoryMap, String> {
        Err("info mtree: this machine does not describe its memory regions".into())
    }
}

/// What [`VmControl::system_reset`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemReset {
    /// The machine was reset.
    Reset,
    /// `-no-reboot`: the process is shutting down instead.
    Shutdown,
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
    /// Shared with block jobs, which report from their own threads.
    events: Arc<MonitorEvents>,
    /// Block jobs and the ordering of their events (see `monitor::block`).
    block: super::block::BlockCommandState,
    /// `-name`: what `query-name` reports.
    vm_name: Option<String>,
    /// The VM's drives, for the block commands.
    drives: Arc<DriveSet>,
    /// The machine's chardevs (`query-chardev`); none known until set.
    chardevs: ChardevInfoSource,
    quitting: AtomicBool,
}

impl MonitorCommands {
    pub fn new(vm: Arc<dyn VmControl>) -> MonitorCommands {
        MonitorCommands {
            vm,
            events: Arc::new(MonitorEvents::new()),
            block: super::block::BlockCommandState::default(),
            vm_name: None,
            drives: Arc::new(DriveSet::default()),
            chardevs: ChardevInfoSource::default(),
            quitting: AtomicBool::new(false),
        }
    }

    /// Sets the guest name (`-name`) that `query-name` reports.
    pub fn with_vm_name(mut self, name: Option<String>) -> MonitorCommands {
        self.vm_name = name;
        self
    }

    /// Sets the drives the block commands act on.
    pub fn with_drives(mut self, drives: Arc<DriveSet>) -> MonitorCommands {
        self.drives = drives;
        self
    }

    /// The VM's drives.
    pub fn drives(&self) -> &Arc<DriveSet> {
        &self.drives
    }

    /// Sets the chardevs that `query-chardev` reports.
    pub fn with_chardevs(mut self, chardevs: ChardevInfoSource) -> MonitorCommands {
        self.chardevs = chardevs;
        self
    }

    /// `query-chardev` / `info chardev`, in QEMU's order: the reverse of its walk over
    /// the `/chardevs` container (see [`child_walk_order`]).
    pub fn query_chardev(&self) -> Vec<ChardevInfo> {
        let list = self.chardevs.list();
        let labels: Vec<&str> = list.iter().map(|c| c.label.as_str()).collect();
        child_walk_order(&labels)
            .into_iter()
            .rev()
            .map(|i| list[i].clone())
            .collect()
    }

    /// Where events go; the machine side emits guest-initiated ones (`RESET`, `SHUTDOWN`,
    /// `POWERDOWN`) here too.
    pub fn events(&self) -> &MonitorEvents {
        &self.events
    }

    /// The event broadcaster, for senders that outlive a command (block jobs).
    pub(crate) fn events_arc(&self) -> Arc<MonitorEvents> {
        self.events.clone()
    }

    /// Block jobs and their event gate.
    pub(crate) fn block_state(&self) -> &super::block::BlockCommandState {
        &self.block
    }

    /// A QMP command is being answered until the returned guard drops (after its reply is
    /// sent): job events from other threads wait for it, as in QEMU's main loop.
    pub(crate) fn command_scope(&self) -> CommandScope<'_> {
        self.block.gate.begin_command();
        CommandScope(self)
    }

    /// `quit` has been run: monitors stop taking input.
    pub fn is_quitting(&self) -> bool {
        self.quitting.load(Ordering::SeqCst)
    }

    /// `query-name`.
    pub fn query_name(&self) -> Option<&str> {
        self.vm_name.as_deref()
    }

    /// `query-kvm`: (enabled, present). vmscope always runs on KVM.
    pub fn query_kvm(&self) -> (bool, bool) {
        (true, true)
    }

    /// `query-cpus-fast`.
    pub fn query_cpus_fast(&self) -> Vec<VcpuInfo> {
        self.vm.vcpus()
    }

    /// The registers of vCPU `index` (`info registers`).
    pub fn cpu_registers(&self, index: u32) -> Result<VcpuRegisters, String> {
        self.vm.cpu_registers(index)
    }

    /// `info qtree`: the machine's device tree.
    pub fn qtree(&self) -> Result<QdevBus, CommandError> {
        self.vm.qtree().map_err(CommandError::generic)
    }

    /// `info mtree`: the machine's memory regions.
    pub fn mtree(&self) -> Result<MemoryMap, CommandError> {
        self.vm.mtree().map_err(CommandError::generic)
    }

    /// `query-status` / `info status`.
    pub fn query_status(&self) -> StatusInfo {
        StatusInfo::of(self.vm.run_state())
    }

    /// `stop`.
    pub fn stop(&self) -> Result<(), CommandError> {
        // QEMU only changes the autostart flag during an incoming migration, which
        // vmscope never is in. STOP is sent only when a running VM stops.
        let was_running = self.vm.run_state() == RunState::Running;
        self.vm.stop();
        if was_running {
            self.events.emit("STOP", None);
        }
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
            // Already running: nothing happens and no event is sent.
            RunState::Running => Ok(()),
            _ => {
                self.vm.cont().map_err(CommandError::generic)?;
                self.events.emit("RESUME", None);
                Ok(())
            }
        }
    }

    /// `system_reset`: QEMU 7.2 sends `RESET` (or, under `-no-reboot`, `SHUTDOWN`) with
    /// cause `host-qmp-system-reset`, also for HMP, before the command's reply.
    pub fn system_reset(&self) -> Result<(), CommandError> {
        const REASON: &str = "host-qmp-system-reset";
        match self.vm.system_reset().map_err(CommandError::generic)? {
            SystemReset::Reset => self.events.reset(false, REASON),
            SystemReset::Shutdown => {
                self.quitting.store(true, Ordering::SeqCst);
                self.events.shutdown(false, REASON);
            }
        }
        Ok(())
    }

    /// `system_powerdown`: the power button is pressed and QEMU 7.2 sends `POWERDOWN`
    /// (whether or not the guest listens), before the command's reply.
    pub fn system_powerdown(&self) -> Result<(), CommandError> {
        self.vm.system_powerdown().map_err(CommandError::generic)?;
        self.events.powerdown();
        Ok(())
    }

    /// `quit`: QEMU sends `SHUTDOWN` (cause `host-qmp-quit`, also for HMP) before the
    /// command's reply.
    pub fn quit(&self) -> Result<(), CommandError> {
        self.quitting.store(true, Ordering::SeqCst);
        self.events.shutdown(false, "host-qmp-quit");
        self.vm.quit();
        Ok(())
    }
}

/// See [`MonitorCommands::command_scope`].
pub(crate) struct CommandScope<'a>(&'a MonitorCommands);

impl Drop for CommandScope<'_> {
    fn drop(&mut self) {
        self.0.block.gate.end_command(&self.0.events);
    }
}
