//! The human (HMP) and machine (QMP) monitors over one command layer.

pub mod commands;
pub mod hmp;

use crate::machine::RunState;

/// What the monitors may do to the running machine.
pub trait VmControl: Send + Sync {
    fn run_state(&self) -> RunState;
    /// Pauses every vCPU; returns once they are paused.
    fn stop(&self);
    fn cont(&self) -> Result<(), String>;
    /// `-name`.
    fn name(&self) -> Option<String>;
}
