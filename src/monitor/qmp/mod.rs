//! The QMP monitor as a chardev front end (QEMU 7.2's wire behaviour): greeting on every
//! connection, capabilities negotiation per connection, requests read with QEMU's lenient
//! JSON reader, replies and events with QEMU's serialisation and CRLF line ends.
//!
//! Requests run as soon as they are complete, in order, so a client that sends its lines
//! and half-closes at once still has every one executed and answered (the chardev delivers
//! all input before reporting the disconnect and sends the replies before closing).
//!
//! A client that does not read its replies fills the chardev's output queue; the monitor
//! then holds further output, stops reading requests (as QEMU suspends a monitor whose
//! output is stuck) and retries in the background until the queue has room.

mod dispatch;
mod events;
mod held_output;
mod json_reader;
mod json_writer;
mod qobject;
mod schema;
mod utf8;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

pub use events::{build_event, EventListener, MonitorEvents};
pub use json_reader::{JsonReader, JsonResult};
pub use json_writer::to_json;
pub use qobject::{qdict_hash, qdict_order, QDict, QObject};

use self::dispatch::Session;
use self::held_output::HeldOutput;
use super::commands::{CommandError, MonitorCommands};
use crate::chardev::{ChardevError, ChardevEvent, ChardevFrontend, ChardevWriter, Chardevs};

/// Output kept while the chardev refuses it (stalled client); beyond this the oldest
/// whole messages are dropped.
const HELD_OUTPUT_LIMIT: usize = 4 << 20;

/// How often held output is retried.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// One QMP monitor on one chardev.
pub struct Qmp {
    commands: Arc<MonitorCommands>,
    /// `pretty=on`: QEMU's indented layout.
    pretty: bool,
    writer: OnceLock<ChardevWriter>,
    input: Mutex<InputState>,
    /// The current client negotiated capabilities: it gets events. Separate from the input
    /// state because events are delivered while a command runs (with that state locked).
    command_mode: AtomicBool,
    /// Output not yet accepted by the chardev.
    held: Mutex<HeldOutput>,
    /// A background retry of held output is running.
    retrying: AtomicBool,
    /// This monitor, for the retry thread.
    this: OnceLock<Weak<Qmp>>,
}

struct InputState {
    reader: JsonReader,
    session: Session,
}

impl Qmp {
    /// Creates the monitor, attaches it to chardev `chardev_id` and subscribes it to events.
    pub fn attach(
        chardevs: &mut Chardevs,
        chardev_id: &str,
        commands: Arc<MonitorCommands>,
        pretty: bool,
    ) -> Result<Arc<Qmp>, ChardevError> {
        let qmp = Arc::new(Qmp {
            commands,
            pretty,
            writer: OnceLock::new(),
            input: Mutex::new(InputState {
                reader: JsonReader::new(),
                session: Session::default(),
            }),
            command_mode: AtomicBool::new(false),
            held: Mutex::new(HeldOutput::new(HELD_OUTPUT_LIMIT)),
            retrying: AtomicBool::new(false),
            this: OnceLock::new(),
        });
        let _ = qmp.this.set(Arc::downgrade(&qmp));
        let writer = chardevs.attach(chardev_id, qmp.clone())?;
        // Events only come from the loop, after attach has returned: set before use.
        let _ = qmp.writer.set(writer);
        let listener: Arc<dyn EventListener> = qmp.clone();
        qmp.commands.events().subscribe(Arc::downgrade(&listener));
        Ok(qmp)
    }

    fn lock_input(&self) -> MutexGuard<'_, InputState> {
        self.input.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one message: serialised, newline-terminated, every `\n` turned into `\r\n`
    /// as QEMU's monitor output does.
    fn send(&self, message: &QObject) {
        let mut text = to_json(message, self.pretty);
        text.push('\n');
        let mut bytes = Vec::with_capacity(text.len() + 8);
        for b in text.bytes() {
            if b == b'\n' {
                bytes.push(b'\r');
            }
            bytes.push(b);
        }
        let mut held = self.lock_held();
        held.push(bytes);
        self.flush(&mut held);
    }

    fn lock_held(&self) -> MutexGuard<'_, HeldOutput> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands held output to the chardev; true when nothing is left held.
    fn try_write(&self, held: &mut HeldOutput) -> bool {
        let Some(writer) = self.writer.get() else {
            return held.is_empty();
        };
        // The chardev takes a write whole or refuses it whole.
        held.flush(|message| std::io::Write::write_all(&mut &*writer, message).is_ok())
    }

    fn flush(&self, held: &mut HeldOutput) {
        if !self.try_write(held) && !self.retrying.swap(true, Ordering::SeqCst) {
            self.start_retry();
        }
    }

    /// Retries held output until the chardev takes it, then lets input in again.
    fn start_retry(&self) {
        let this = self.this.get().cloned().unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name("qmp-output".into())
            .spawn(move || loop {
                std::thread::sleep(RETRY_INTERVAL);
                let Some(qmp) = this.upgrade() else {
                    return;
                };
                let mut held = qmp.lock_held();
                if qmp.try_write(&mut held) {
                    qmp.retrying.store(false, Ordering::SeqCst);
                    drop(held);
                    if let Some(writer) = qmp.writer.get() {
                        writer.accept_input();
                    }
                    return;
                }
            });
        if spawned.is_err() {
            // Without a thread the next reply or event retries.
            self.retrying.store(false, Ordering::SeqCst);
        }
    }

    fn handle(&self, state: &mut InputState, request: JsonResult) {
        // Job events from other threads wait until this reply is out.
        let _scope = self.commands.command_scope();
        let reply = match request {
            Ok(request) => dispatch::dispatch(&self.commands, &mut state.session, request),
            Err(desc) => dispatch::error_response(&CommandError::generic(desc), None),
        };
        self.command_mode
            .store(state.session.command_mode, Ordering::SeqCst);
        self.send(&reply);
    }
}

impl EventListener for Qmp {
    fn deliver(&self, event: &QObject) {
        if self.command_mode.load(Ordering::SeqCst) {
            self.send(event);
        }
    }
}

impl ChardevFrontend for Qmp {
    fn can_receive(&self) -> usize {
        if self.commands.is_quitting() || !self.lock_held().is_empty() {
            // After quit, or while replies cannot be sent (the retry lets input in again).
            0
        } else {
            4096
        }
    }

    fn receive(&self, data: &[u8]) {
        let mut guard = self.lock_input();
        let state = &mut *guard;
        let mut requests = Vec::new();
        state.reader.feed(data, &mut |r| requests.push(r));
        for request in requests {
            if self.commands.is_quitting() {
                // After `quit` the rest of the input is not for us.
                break;
            }
            self.handle(state, request);
        }
    }

    fn event(&self, event: ChardevEvent) {
        match event {
            ChardevEvent::Opened => {
                {
                    let mut state = self.lock_input();
                    state.reader.reset();
                    state.session = Session::default();
                    self.command_mode.store(false, Ordering::SeqCst);
                }
                self.send(&dispatch::greeting());
            }
            ChardevEvent::Closed => {
                let mut state = self.lock_input();
                state.reader.reset();
                state.session = Session::default();
                self.command_mode.store(false, Ordering::SeqCst);
                // Output for the old client must not reach the next one.
                self.lock_held().clear();
            }
            ChardevEvent::Break | ChardevEvent::FocusIn | ChardevEvent::FocusOut => {}
        }
    }
}
