//! The human monitor (HMP) front end: QEMU's banner and `(qemu) ` prompt, readline-style
//! echo of typed input, and the commands of [`super::commands`].
//!
//! A command runs as soon as its line ends, so `echo cmd | socat - UNIX-CONNECT:sock`
//! executes it even though the client closes right after sending.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::commands::{execute_hmp, HmpOutcome};
use super::VmControl;
use crate::chardev::{ChardevWriter, Frontend, LoopHandle};

const BANNER: &str = "QEMU 7.2.0 monitor - type 'help' for more information\n";
const PROMPT: &str = "(qemu) ";
/// Longest line kept; QEMU's readline buffer is this size too.
const MAX_LINE: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscapeState {
    None,
    /// After ESC.
    Escape,
    /// After ESC [: parameters until a final byte in 0x40..=0x7e.
    Csi,
}

struct LineEditor {
    line: Vec<u8>,
    /// What the terminal shows after the prompt, to redraw only when it changed.
    shown: usize,
    /// The byte before, to treat CR LF as one line end.
    last: u8,
    /// Inside a terminal escape sequence (arrow keys and the like), which is skipped.
    escape: EscapeState,
    out: ChardevWriter,
}

/// One HMP instance on one chardev.
pub struct Hmp {
    editor: Mutex<LineEditor>,
    control: Arc<dyn VmControl>,
    main_loop: LoopHandle,
}

impl Hmp {
    pub fn new(out: ChardevWriter, control: Arc<dyn VmControl>, main_loop: LoopHandle) -> Hmp {
        Hmp {
            editor: Mutex::new(LineEditor {
                line: Vec::new(),
                shown: 0,
                last: 0,
                escape: EscapeState::None,
                out,
            }),
            control,
            main_loop,
        }
    }
}

/// Text for the terminal: the monitor turns `\n` into `\r\n` like QEMU's output path.
fn terminal_text(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

impl LineEditor {
    fn emit(&mut self, bytes: &[u8]) {
        let _ = self.out.write_all(bytes);
    }

    /// Redraws the edited line the way QEMU's readline does: back to its start, the whole
    /// line, then clear to end of line.
    fn redraw(&mut self) {
        let mut bytes = Vec::new();
        for _ in 0..self.shown {
            bytes.extend_from_slice(b"\x1b[D");
        }
        bytes.extend_from_slice(&self.line);
        bytes.extend_from_slice(b"\x1b[K");
        self.shown = self.line.len();
        self.emit(&bytes);
    }
}

impl Frontend for Hmp {
    fn can_receive(&self) -> usize {
        MAX_LINE
    }

    fn opened(&self) {
        let mut editor = self.editor.lock().unwrap();
        editor.line.clear();
        editor.shown = 0;
        let text = terminal_text(&format!("{BANNER}{PROMPT}"));
        editor.emit(&text);
    }

    fn receive(&self, data: &[u8]) {
        for &byte in data {
            let mut editor = self.editor.lock().unwrap();
            let last = std::mem::replace(&mut editor.last, byte);
            match (editor.escape, byte) {
                (EscapeState::None, 0x1b) => {
                    editor.escape = EscapeState::Escape;
                    continue;
                }
                (EscapeState::Escape, b'[' | b'O') => {
                    editor.escape = EscapeState::Csi;
                    continue;
                }
                (EscapeState::Escape, _) => {
                    editor.escape = EscapeState::None;
                    continue;
                }
                (EscapeState::Csi, 0x40..=0x7e) => {
                    editor.escape = EscapeState::None;
                    continue;
                }
                (EscapeState::Csi, _) => continue,
                (EscapeState::None, _) => {}
            }
            match byte {
                b'\n' if last == b'\r' => {}
                b'\r' | b'\n' => {
                    let line = String::from_utf8_lossy(&editor.line).into_owned();
                    editor.line.clear();
                    editor.shown = 0;
                    editor.emit(b"\r\n");
                    drop(editor);
                    let outcome = execute_hmp(&line, self.control.as_ref());
                    let mut editor = self.editor.lock().unwrap();
                    let text = terminal_text(&outcome.output);
                    editor.emit(&text);
                    if outcome.kind == HmpOutcome::Quit {
                        self.main_loop.exit(0);
                        return;
                    }
                    editor.emit(PROMPT.as_bytes());
                }
                // Backspace and DEL.
                0x08 | 0x7f if !editor.line.is_empty() => {
                    editor.line.pop();
                    editor.redraw();
                }
                0x20..=0x7e | 0x80..=0xff if editor.line.len() < MAX_LINE - 1 => {
                    editor.line.push(byte);
                    editor.redraw();
                }
                // Other control characters (and escape sequences' bytes) are not editing
                // keys this monitor has.
                _ => {}
            }
        }
    }
}
