//! The VM's virtual clock (QEMU's `QEMU_CLOCK_VIRTUAL`): it advances only while the vCPUs
//! may run, and stands still while the VM is stopped (`-S`, `stop`, a paused machine).
//! Devices that keep guest time on it (`-rtc clock=vm`) see no time pass during a pause.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct ClockState {
    /// Running time before the current run began.
    accumulated: Duration,
    /// When the current run began; `None` while stopped.
    running_since: Option<Instant>,
}

/// Starts stopped, at zero.
#[derive(Default)]
pub struct VirtualClock {
    state: Mutex<ClockState>,
}

impl VirtualClock {
    pub fn new() -> VirtualClock {
        VirtualClock::default()
    }

    /// The VM runs: time advances from now on.
    pub fn run(&self) {
        let mut state = self.state.lock().unwrap();
        if state.running_since.is_none() {
            state.running_since = Some(Instant::now());
        }
    }

    /// The VM stopped: time stands still until [`VirtualClock::run`].
    pub fn stop(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(since) = state.running_since.take() {
            state.accumulated += since.elapsed();
        }
    }

    /// Total running time so far.
    pub fn elapsed(&self) -> Duration {
        let state = self.state.lock().unwrap();
        state.accumulated + state.running_since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_passes_only_while_running() {
        let clock = VirtualClock::new();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clock.run();
        std::thread::sleep(Duration::from_millis(20));
        clock.stop();
        let after_run = clock.elapsed();
        assert!(after_run >= Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.elapsed(), after_run);
        clock.run();
        clock.run();
        assert!(clock.elapsed() >= after_run);
    }
}
