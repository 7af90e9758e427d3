//! The QMP monitor as a chardev front end (QEMU 7.2's wire behaviour): greeting on every
//! connection, capabilities negotiation per connection, requests read with QEMU's lenient
//! JSON reader, replies and events with QEMU's serialisation and CRLF line ends.
//!
//! Requests run as soon as they are complete, in order, so a client that sends its lines
//! and half-closes at once still has every one executed and answered (the chardev delivers
//! all input before reporting the disconnect and sends the replies before closing).

mod dispatch;
mod events;
mod json_reader;
mod json_writer;
mod qobject;
mod utf8;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub use events::{build_event, EventListener, MonitorEvents};
pub use json_reader::{JsonReader, JsonResult};
pub use json_writer::to_json;
pub use qobject::{qdict_hash, qdict_order, QDict, QObject};

use self::dispatch::Session;
use super::commands::{CommandError, MonitorCommands};
use crate::chardev::{ChardevError, ChardevEvent, ChardevFrontend, ChardevWriter, Chardevs};

/// Output kept while the chardev refuses it (stalled client); beyond this the oldest
/// output is dropped.
const HELD_OUTPUT_LIMIT: usize = 4 << 20;

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
    held: Mutex<Vec<u8>>,
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
            held: Mutex::new(Vec::new()),
        });
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
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for b in text.bytes() {
            if b == b'\n' {
                held.push(b'\r');
            }
            held.push(b);
        }
        self.flush(&mut held);
    }

    fn flush(&self, held: &mut Vec<u8>) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        if held.is_empty() {
            return;
        }
        if std::io::Write::write_all(&mut &*writer, held).is_ok() {
            held.clear();
        } else if held.len() > HELD_OUTPUT_LIMIT {
            let excess = held.len() - HELD_OUTPUT_LIMIT;
            held.drain(..excess);
        }
    }

    fn handle(&self, state: &mut InputState, request: JsonResult) {
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
        if self.commands.is_quitting() {
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
                self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
            ChardevEvent::Break | ChardevEvent::FocusIn | ChardevEvent::FocusOut => {}
        }
    }
}
