//! A character device: the byte pipe between one backend (stdio, a file, a socket) and its
//! front ends (a serial port, a monitor). With `mux` several front ends share the backend and
//! QEMU's Ctrl-a escapes switch which one receives input.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use super::mainloop::LoopHandle;

/// Something that consumes a chardev's input: the 16550's receive FIFO, a monitor.
pub trait Frontend: Send + Sync {
    /// How many bytes it takes now (flow control).
    fn can_receive(&self) -> usize;
    /// Input bytes; never more than the last `can_receive`.
    fn receive(&self, data: &[u8]);
    /// A client connected to (or the mux focused on) this front end.
    fn opened(&self) {}
}

/// Where output goes.
pub enum Sink {
    /// Discarded (`null`, or a socket with no client connected: QEMU drops such output).
    Discard,
    Writer(Box<dyn Write + Send>),
}

/// Ctrl-a, QEMU's mux escape character.
const MUX_ESCAPE: u8 = 0x01;

const MUX_HELP: &str = "\r\nC-a h    print this help\r\nC-a x    exit emulator\r\nC-a s    save disk data back to file (if -snapshot)\r\nC-a t    toggle console timestamps\r\nC-a b    send break (magic sysrq)\r\nC-a c    switch between console and monitor\r\nC-a C-a  sends C-a\r\n";

struct State {
    sink: Sink,
    frontends: Vec<Arc<dyn Frontend>>,
    focus: usize,
    mux: bool,
    escape_seen: bool,
    /// Input not yet taken by the focused front end.
    pending: VecDeque<u8>,
}

/// One chardev, shared by its backend (on the loop thread) and its front ends.
pub struct Chardev {
    id: String,
    state: Mutex<State>,
    main_loop: LoopHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("chardev '{0}' is already in use")]
    Busy(String),
}

impl Chardev {
    pub fn new(id: &str, mux: bool, main_loop: LoopHandle) -> Arc<Chardev> {
        Arc::new(Chardev {
            id: id.to_string(),
            state: Mutex::new(State {
                sink: Sink::Discard,
                frontends: Vec::new(),
                focus: 0,
                mux,
                escape_seen: false,
                pending: VecDeque::new(),
            }),
            main_loop,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Connects a front end. A non-mux chardev takes one; a mux gives focus to the first.
    pub fn attach(
        self: &Arc<Self>,
        frontend: Arc<dyn Frontend>,
    ) -> Result<ChardevWriter, AttachError> {
        let mut state = self.state.lock().unwrap();
        if !state.mux && !state.frontends.is_empty() {
            return Err(AttachError::Busy(self.id.clone()));
        }
        state.frontends.push(frontend);
        Ok(ChardevWriter { dev: self.clone() })
    }

    /// Replaces where output goes (a socket client connected or left).
    pub fn set_sink(&self, sink: Sink) {
        self.state.lock().unwrap().sink = sink;
    }

    /// Tells the focused front end (or every front end of a non-mux chardev) it is open.
    pub fn notify_opened(&self) {
        let frontend = {
            let state = self.state.lock().unwrap();
            state.frontends.get(state.focus).cloned()
        };
        if let Some(frontend) = frontend {
            frontend.opened();
        }
    }

    fn write_out(&self, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        if let Sink::Writer(writer) = &mut state.sink {
            if writer
                .write_all(data)
                .and_then(|()| writer.flush())
                .is_err()
            {
                // A vanished client: drop output until the next one connects.
                state.sink = Sink::Discard;
            }
        }
    }

    /// Input from the backend. Runs mux escapes, then hands bytes to the focused front end
    /// as fast as it takes them; the rest waits for [`Chardev::retry_input`].
    pub fn input(&self, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        for &byte in data {
            if state.mux && state.escape_seen {
                state.escape_seen = false;
                match byte {
                    b'x' => {
                        if let Sink::Writer(w) = &mut state.sink {
                            let _ = w.write_all(b"QEMU: Terminated\n\r");
                            let _ = w.flush();
                        }
                        self.main_loop.exit(0);
                        return;
                    }
                    b'h' | b'?' => {
                        if let Sink::Writer(w) = &mut state.sink {
                            let _ = w.write_all(MUX_HELP.as_bytes());
                            let _ = w.flush();
                        }
                    }
                    b'c' if !state.frontends.is_empty() => {
                        // What was typed before the switch belongs to the old focus.
                        drop(state);
                        self.retry_input();
                        state = self.state.lock().unwrap();
                        state.pending.clear();
                        state.focus = (state.focus + 1) % state.frontends.len();
                        let focused = state.frontends[state.focus].clone();
                        drop(state);
                        focused.opened();
                        state = self.state.lock().unwrap();
                    }
                    MUX_ESCAPE => state.pending.push_back(MUX_ESCAPE),
                    // s, b, t and anything else: no disk snapshot mode, no break, no
                    // timestamps yet; the escape is consumed like QEMU does for unknown keys.
                    _ => {}
                }
            } else if state.mux && byte == MUX_ESCAPE {
                state.escape_seen = true;
            } else {
                state.pending.push_back(byte);
            }
        }
        drop(state);
        self.retry_input();
    }

    /// Delivers held-back input once the focused front end has room again.
    ///
    /// The front end is asked for room without holding this chardev's lock: a front end
    /// writing output from a vCPU thread takes its own lock first and this one second, so
    /// holding ours while calling into it would deadlock.
    pub fn retry_input(&self) {
        loop {
            let frontend = {
                let mut state = self.state.lock().unwrap();
                match state.frontends.get(state.focus).cloned() {
                    Some(frontend) if !state.pending.is_empty() => frontend,
                    Some(_) => return,
                    None => {
                        state.pending.clear();
                        return;
                    }
                }
            };
            let room = frontend.can_receive();
            let chunk: Vec<u8> = {
                let mut state = self.state.lock().unwrap();
                let take = room.min(state.pending.len());
                state.pending.drain(..take).collect()
            };
            if chunk.is_empty() {
                return;
            }
            frontend.receive(&chunk);
        }
    }
}

/// The output side handed to a front end; writing never blocks on a missing client.
#[derive(Clone)]
pub struct ChardevWriter {
    dev: Arc<Chardev>,
}

impl Write for ChardevWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.dev.write_out(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chardev::mainloop::MainLoop;

    #[derive(Default)]
    struct Sponge {
        room: Mutex<usize>,
        got: Mutex<Vec<u8>>,
        opened: Mutex<usize>,
    }

    impl Frontend for Sponge {
        fn can_receive(&self) -> usize {
            *self.room.lock().unwrap()
        }
        fn receive(&self, data: &[u8]) {
            *self.room.lock().unwrap() -= data.len();
            self.got.lock().unwrap().extend_from_slice(data);
        }
        fn opened(&self) {
            *self.opened.lock().unwrap() += 1;
        }
    }

    fn sponge(room: usize) -> Arc<Sponge> {
        let s = Arc::new(Sponge::default());
        *s.room.lock().unwrap() = room;
        s
    }

    #[test]
    fn input_waits_for_room_in_the_front_end() {
        let main_loop = MainLoop::new().unwrap();
        let dev = Chardev::new("serial0", false, main_loop.handle());
        let fe = sponge(2);
        dev.attach(fe.clone()).unwrap();
        dev.input(b"hello");
        assert_eq!(fe.got.lock().unwrap().as_slice(), b"he");
        *fe.room.lock().unwrap() = 10;
        dev.retry_input();
        assert_eq!(fe.got.lock().unwrap().as_slice(), b"hello");
    }

    #[test]
    fn a_plain_chardev_has_one_user() {
        let main_loop = MainLoop::new().unwrap();
        let dev = Chardev::new("c", false, main_loop.handle());
        dev.attach(sponge(1)).unwrap();
        assert!(dev.attach(sponge(1)).is_err());
    }

    #[test]
    fn mux_ctrl_a_c_switches_focus_and_ctrl_a_ctrl_a_sends_one() {
        let main_loop = MainLoop::new().unwrap();
        let dev = Chardev::new("mux", true, main_loop.handle());
        let serial = sponge(100);
        let monitor = sponge(100);
        dev.attach(serial.clone()).unwrap();
        dev.attach(monitor.clone()).unwrap();
        dev.input(b"ab\x01\x01c\x01cinfo");
        assert_eq!(serial.got.lock().unwrap().as_slice(), b"ab\x01c");
        assert_eq!(monitor.got.lock().unwrap().as_slice(), b"info");
        assert_eq!(*monitor.opened.lock().unwrap(), 1);
    }

    #[test]
    fn mux_ctrl_a_x_ends_the_loop() {
        let mut main_loop = MainLoop::new().unwrap();
        let dev = Chardev::new("mux", true, main_loop.handle());
        dev.attach(sponge(100)).unwrap();
        dev.input(b"\x01x");
        assert_eq!(main_loop.run(), 0);
    }
}
