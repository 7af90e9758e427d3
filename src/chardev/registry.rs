//! [`Chardevs`]: the open chardevs of a machine, by id.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::device::{Chardev, MuxHooks};
use super::status::ChardevInfoSource;
use super::{ChardevError, ChardevFrontend, ChardevWriter, MainLoop};
use crate::config::ChardevConfig;

/// How long dropping [`Chardevs`] waits for queued output (the last serial lines,
/// `QEMU: Terminated`) to reach stdout, files and clients.
const FLUSH_ON_DROP: Duration = Duration::from_secs(2);

/// The chardevs of one VM, open on a [`MainLoop`]. Lives on the loop thread.
///
/// Dropping it sends what is still queued (bounded wait), closes every backend, removes
/// server socket files and restores the terminal. Drop it before `std::process::exit`.
pub struct Chardevs {
    main_loop: MainLoop,
    devices: Vec<Rc<RefCell<Chardev>>>,
    hooks: Rc<MuxHooks>,
    info: ChardevInfoSource,
}

impl Chardevs {
    /// No chardevs yet; add them with [`Chardevs::add`].
    pub fn new(main_loop: &MainLoop) -> Chardevs {
        Chardevs {
            main_loop: main_loop.clone(),
            devices: Vec::new(),
            hooks: Rc::new(MuxHooks::default()),
            info: ChardevInfoSource::default(),
        }
    }

    /// Opens every chardev of `configs` in order (see [`Chardevs::add`]).
    pub fn open(configs: &[ChardevConfig], main_loop: &MainLoop) -> Result<Chardevs, ChardevError> {
        let mut chardevs = Chardevs::new(main_loop);
        for config in configs {
            chardevs.add(config, None)?;
        }
        Ok(chardevs)
    }

    /// Opens one chardev. `origin` is the command-line option that created it
    /// (`-monitor unix:/tmp/s,server`): QEMU shows it before the `wait` notice, and the
    /// caller should prefix a returned error with it the same way.
    ///
    /// A `wait` server blocks here until its first client connects. Front ends learn
    /// about the connection (`Opened`) once the loop runs.
    pub fn add(
        &mut self,
        config: &ChardevConfig,
        origin: Option<&str>,
    ) -> Result<(), ChardevError> {
        if self.find(&config.id).is_some() {
            return Err(ChardevError::DuplicateId(config.id.clone()));
        }
        let device = Chardev::open(config, &self.main_loop, origin, self.hooks.clone())?;
        self.info.add(device.borrow().status.clone());
        self.devices.push(device);
        Ok(())
    }

    fn find(&self, id: &str) -> Option<&Rc<RefCell<Chardev>>> {
        self.devices.iter().find(|d| d.borrow().id == id)
    }

    /// What the monitor reports about the chardevs (`query-chardev`), readable from any
    /// thread and kept current as peers come and go.
    pub fn info_source(&self) -> ChardevInfoSource {
        self.info.clone()
    }

    /// The ids of the open chardevs, in creation order.
    pub fn ids(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.borrow().id.clone()).collect()
    }

    /// Connects a front end to chardev `id` and returns its output side.
    ///
    /// A plain chardev takes one front end (`Device 'ID' is in use` for a second, as QEMU
    /// says); a mux takes up to four, and the one attached last gets the focus (QEMU
    /// attaches monitors before serial ports, so the serial port has it at start).
    /// Events reach the front end from the loop, never from inside this call.
    pub fn attach(
        &mut self,
        id: &str,
        frontend: Arc<dyn ChardevFrontend>,
    ) -> Result<ChardevWriter, ChardevError> {
        let device = self
            .find(id)
            .ok_or_else(|| ChardevError::NotFound(id.to_string()))?
            .clone();
        let writer = device.borrow_mut().attach(&self.main_loop, frontend);
        writer
    }

    /// What Ctrl-a x does after printing `QEMU: Terminated` (default: ask the loop to exit
    /// with status 0). The machine installs its orderly quit here, the same as the
    /// monitor's `quit`.
    pub fn set_mux_quit_handler(&mut self, quit: impl Fn() + 'static) {
        *self.hooks.quit.borrow_mut() = Some(Box::new(quit));
    }

    /// What Ctrl-a s does (QEMU commits `-snapshot` disk data). Without a handler it
    /// prints that vmscope does not support it.
    pub fn set_mux_commit_handler(&mut self, commit: impl Fn() + 'static) {
        *self.hooks.commit.borrow_mut() = Some(Box::new(commit));
    }
}

impl Drop for Chardevs {
    fn drop(&mut self) {
        let deadline = Instant::now() + FLUSH_ON_DROP;
        for device in self.devices.drain(..) {
            // try_borrow_mut: a chardev cannot be borrowed here unless Chardevs is dropped
            // from inside one of its own callbacks; then skip the flush rather than panic.
            if let Ok(mut device) = device.try_borrow_mut() {
                device.shutdown(&self.main_loop, deadline);
            }
        }
    }
}
