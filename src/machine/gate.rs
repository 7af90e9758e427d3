//! The one mechanism that pauses the VM: every vCPU thread passes through a [`VcpuGate`]
//! before each `KVM_RUN`. Closing the gate kicks each vCPU out of the kernel with a signal and
//! waits until all of them are parked; opening it releases them together. Stop/cont, reset,
//! snapshot pivots and freezing time all go through here.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;

use kvm_bindings::kvm_run;

use crate::hw::virtual_clock::VirtualClock;

/// What a vCPU thread should do after passing the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateDecision {
    /// Enter the guest.
    Run,
    /// Reload the reset state first (the machine was reset while parked), then enter the guest.
    ResetThenRun,
    /// Leave the thread: the machine is shutting down.
    Exit,
}

struct GateState {
    open: bool,
    terminating: bool,
    parked: usize,
    vcpus: usize,
    /// Bumped by every machine reset; each vCPU remembers the last one it applied.
    reset_generation: u64,
    threads: Vec<libc::pthread_t>,
}

/// Shared by the main loop and all vCPU threads.
pub struct VcpuGate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Runs exactly while the gate is open.
    clock: Arc<VirtualClock>,
}

thread_local! {
    /// This thread's `kvm_run` page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own mmap'ed kvm_run page, registered by
        // `register_current_vcpu` and valid for the thread's lifetime. Setting immediate_exit
        // makes a KVM_RUN that is about to start return EINTR at once, closing the race
        // between checking the gate and entering the guest.
        unsafe { (*run).immediate_exit = 1 };
    }
}

impl VcpuGate {
    /// A closed gate for `vcpus` threads (the VM starts paused until [`VcpuGate::open`]);
    /// `clock` runs exactly while the gate is open.
    pub fn new(vcpus: usize, clock: Arc<VirtualClock>) -> VcpuGate {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // A vCPU thread interrupted by the kick must not die, and KVM_RUN must see EINTR
            // rather than being restarted, so the handler is installed without SA_RESTART.
            vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
                .expect("installing the vCPU kick signal handler");
        });
        VcpuGate {
            state: Mutex::new(GateState {
                open: false,
                terminating: false,
                parked: 0,
                vcpus,
                reset_generation: 0,
                threads: Vec::new(),
            }),
            changed: Condvar::new(),
            clock,
        }
    }

    /// The VM's virtual clock: it advances only while the gate is open.
    pub fn virtual_clock(&self) -> &Arc<VirtualClock> {
        &self.clock
    }

    /// Called once by each vCPU thread before its first pass.
    pub fn register_current_vcpu(&self, run: &mut kvm_run) {
        KVM_RUN.with(|cell| cell.set(run as *mut kvm_run));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.state.lock().unwrap().threads.push(me);
    }

    /// Blocks the calling vCPU while the gate is closed.
    pub fn pass(&self, applied_reset: &mut u64) -> GateDecision {
        let mut state = self.state.lock().unwrap();
        while !state.open && !state.terminating {
            state.parked += 1;
            self.changed.notify_all();
            state = self.changed.wait(state).unwrap();
            state.parked -= 1;
        }
        if state.terminating {
            return GateDecision::Exit;
        }
        if *applied_reset != state.reset_generation {
            *applied_reset = state.reset_generation;
            return GateDecision::ResetThenRun;
        }
        GateDecision::Run
    }

    /// Blocks a vCPU that must not enter the guest again until the main loop has acted on
    /// what it reported (an emulation failure): returns once the gate is closed.
    pub fn wait_until_closed(&self) {
        let mut state = self.state.lock().unwrap();
        while state.open && !state.terminating {
            state = self.changed.wait(state).unwrap();
        }
    }

    /// Blocks a vCPU that asked for a reset or poweroff until the main loop has stopped the
    /// VM for it (gate closed) or already reset it (`applied_reset` is behind).
    pub fn wait_for_stop(&self, applied_reset: u64) {
        let mut state = self.state.lock().unwrap();
        while state.open && !state.terminating && state.reset_generation == applied_reset {
            state = self.changed.wait(state).unwrap();
        }
    }

    /// Closes the gate and returns once every vCPU is parked outside the guest.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap();
        state.open = false;
        self.clock.stop();
        self.changed.notify_all();
        while state.parked < state.vcpus && !state.terminating {
            kick(&state.threads);
            // Kicks are re-sent: a thread not yet registered when the first one went out
            // checks the gate on its own before entering the guest.
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(20))
                .unwrap()
                .0;
        }
    }

    /// Releases every vCPU.
    pub fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.clock.run();
        self.changed.notify_all();
    }

    /// Marks a machine reset: every vCPU reloads its reset state before running again.
    /// Call with the gate closed.
    pub fn request_reset(&self) {
        self.state.lock().unwrap().reset_generation += 1;
    }

    /// Makes every vCPU thread leave, wherever it is.
    pub fn terminate(&self) {
        let mut state = self.state.lock().unwrap();
        state.terminating = true;
        kick(&state.threads);
        self.changed.notify_all();
    }

    /// Whether the gate is open (the VM is running).
    pub fn is_open(&self) -> bool {
        self.state.lock().unwrap().open
    }
}

fn kick(threads: &[libc::pthread_t]) {
    for &thread in threads {
        // SAFETY: each id belongs to a vCPU thread that registered itself and lives as long as
        // the machine (threads are joined only after `terminate`).
        unsafe { libc::pthread_kill(thread, kick_signal()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn close_waits_for_every_vcpu_and_open_releases_them() {
        let gate = Arc::new(VcpuGate::new(3, Arc::default()));
        let passes = Arc::new(AtomicUsize::new(0));
        let mut handles = vec![];
        for _ in 0..3 {
            let (gate, passes) = (gate.clone(), passes.clone());
            handles.push(std::thread::spawn(move || {
                let mut reset = 0;
                loop {
                    match gate.pass(&mut reset) {
                        GateDecision::Exit => break,
                        _ => {
                            passes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }));
        }
        gate.close();
        let before = passes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            passes.load(Ordering::SeqCst),
            before,
            "no vCPU ran while closed"
        );
        gate.open();
        std::thread::sleep(Duration::from_millis(30));
        assert!(passes.load(Ordering::SeqCst) > before);
        gate.close();
        gate.terminate();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_reset_is_seen_once_by_each_vcpu() {
        let gate = VcpuGate::new(1, Arc::default());
        gate.open();
        let mut applied = 0;
        assert_eq!(gate.pass(&mut applied), GateDecision::Run);
        gate.request_reset();
        assert_eq!(gate.pass(&mut applied), GateDecision::ResetThenRun);
        assert_eq!(gate.pass(&mut applied), GateDecision::Run);
    }

    #[test]
    fn a_vcpu_asking_for_a_stop_waits_until_the_loop_acted() {
        let gate = Arc::new(VcpuGate::new(1, Arc::default()));
        gate.open();
        // Already reset meanwhile (the generation moved): no wait.
        gate.request_reset();
        gate.wait_for_stop(0);
        // Open and current: waits until the main loop closes the gate.
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_for_stop(1))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !waiter.is_finished(),
            "still running guest code would be wrong"
        );
        gate.state.lock().unwrap().open = false;
        gate.changed.notify_all();
        waiter.join().unwrap();
        // Termination releases it too.
        gate.open();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_for_stop(1))
        };
        gate.terminate();
        waiter.join().unwrap();
    }
}
