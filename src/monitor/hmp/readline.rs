//! The HMP line editor, byte-compatible with QEMU 7.2's readline.
//!
//! Clients that compare transcripts see every echo byte, so the redraw strategy is QEMU's:
//! after each input byte, if the line changed, move left over what was shown (`ESC[D` per
//! character), print the whole line and `ESC[K`; then move the cursor with `ESC[C`/`ESC[D`.
//! Keys: printable bytes insert, BS/DEL delete left, ^A/^E start/end, ^D delete right, ^W
//! delete a word, TAB completes, `ESC [ A/B` (also `F`/`E`) history, `ESC [ C/D` cursor,
//! `ESC [ 1~/3~/4~` home/delete/end, `ESC O H/F` home/end, 0x9B as CSI; CR or LF ends the
//! line. Everything else is ignored.

use std::collections::VecDeque;

/// QEMU's line length limit.
const MAX_LINE: usize = 4095;
/// QEMU keeps this many history entries.
const MAX_HISTORY: usize = 64;

pub(crate) const PROMPT: &[u8] = b"(qemu) ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Esc,
    /// After ESC [ (or 0x9B), collecting a numeric parameter.
    Csi,
    /// After ESC O.
    Ss3,
}

/// Candidates for TAB: the completion replaces the last `word_len` bytes before the
/// cursor with (a prefix of) the candidates.
pub(crate) struct Completions {
    pub(crate) word_len: usize,
    pub(crate) candidates: Vec<Vec<u8>>,
}

pub(crate) struct Readline {
    line: Vec<u8>,
    cursor: usize,
    /// What the client's screen shows (after the prompt), and where its cursor is.
    shown: Vec<u8>,
    shown_cursor: usize,
    escape: Escape,
    escape_param: u32,
    history: VecDeque<Vec<u8>>,
    /// The history entry being edited, if the line came from the history.
    history_entry: Option<usize>,
}

impl Readline {
    pub(crate) fn new() -> Readline {
        Readline {
            line: Vec::new(),
            cursor: 0,
            shown: Vec::new(),
            shown_cursor: 0,
            escape: Escape::None,
            escape_param: 0,
            history: VecDeque::new(),
            history_entry: None,
        }
    }

    /// Prints the prompt; the screen line is empty after it.
    pub(crate) fn show_prompt(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(PROMPT);
        self.shown.clear();
        self.shown_cursor = 0;
        self.escape = Escape::None;
    }

    /// Forgets the line being typed (a new client, a focus change).
    pub(crate) fn restart(&mut self) {
        self.line.clear();
        self.cursor = 0;
    }

    /// Handles one input byte, echoing to `out`. Returns the line when Enter completes
    /// it (the `\n` echo is already in `out`); the caller runs it and shows the prompt.
    pub(crate) fn handle_byte(
        &mut self,
        byte: u8,
        out: &mut Vec<u8>,
        complete: &dyn Fn(&[u8]) -> Completions,
    ) -> Option<Vec<u8>> {
        match self.escape {
            Escape::None => match byte {
                1 => self.cursor = 0,
                4 => self.delete_right(),
                5 => self.cursor = self.line.len(),
                9 => self.complete(out, complete),
                10 | 13 => {
                    let line = std::mem::take(&mut self.line);
                    self.add_history(&line);
                    out.push(b'\n');
                    self.cursor = 0;
                    self.shown.clear();
                    self.shown_cursor = 0;
                    return Some(line);
                }
                23 => self.delete_word(),
                27 => self.escape = Escape::Esc,
                8 | 127 if self.cursor > 0 => {
                    self.cursor -= 1;
                    self.delete_right();
                }
                // Backspace at the start of the line (and DEL is no printable byte).
                8 | 127 => {}
                155 => {
                    self.escape = Escape::Csi;
                    self.escape_param = 0;
                }
                32.. => self.insert(byte),
                _ => {}
            },
            Escape::Esc => {
                self.escape = match byte {
                    b'[' => Escape::Csi,
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                self.escape_param = 0;
            }
            Escape::Csi => {
                match byte {
                    b'A' | b'F' => self.history_up(),
                    b'B' | b'E' => self.history_down(),
                    b'C' => self.cursor = (self.cursor + 1).min(self.line.len()),
                    b'D' => self.cursor = self.cursor.saturating_sub(1),
                    b'0'..=b'9' => {
                        self.escape_param = self
                            .escape_param
                            .saturating_mul(10)
                            .saturating_add(u32::from(byte - b'0'));
                        self.update(out);
                        return None;
                    }
                    b'~' => match self.escape_param {
                        1 => self.cursor = 0,
                        3 => self.delete_right(),
                        4 => self.cursor = self.line.len(),
                        _ => {}
                    },
                    _ => {}
                }
                self.escape = Escape::None;
            }
            Escape::Ss3 => {
                match byte {
                    b'F' => self.cursor = self.line.len(),
                    b'H' => self.cursor = 0,
                    _ => {}
                }
                self.escape = Escape::None;
            }
        }
        self.update(out);
        None
    }

    fn insert(&mut self, byte: u8) {
        if self.line.len() < MAX_LINE {
            self.line.insert(self.cursor, byte);
            self.cursor += 1;
        }
    }

    fn delete_right(&mut self) {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
        }
    }

    /// ^W: delete the word before the cursor (and the blanks after it).
    fn delete_word(&mut self) {
        if self.cursor == 0 || self.cursor > self.line.len() {
            return;
        }
        let mut start = self.cursor - 1;
        while start > 0 && is_space(self.line[start]) {
            start -= 1;
        }
        while start > 0 {
            if is_space(self.line[start]) {
                start += 1;
                break;
            }
            start -= 1;
        }
        if start < self.cursor {
            self.line.drain(start..self.cursor);
            self.cursor = start;
        }
    }

    fn history_up(&mut self) {
        let entry = match self.history_entry {
            Some(0) => return,
            Some(e) => e - 1,
            None if self.history.is_empty() => return,
            None => self.history.len() - 1,
        };
        self.history_entry = Some(entry);
        self.line = self.history[entry].clone();
        self.cursor = self.line.len();
    }

    fn history_down(&mut self) {
        let Some(entry) = self.history_entry else {
            return;
        };
        if entry + 1 < self.history.len() {
            self.history_entry = Some(entry + 1);
            self.line = self.history[entry + 1].clone();
        } else {
            self.history_entry = None;
            self.line.clear();
        }
        self.cursor = self.line.len();
    }

    fn add_history(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        // An entry equal to the new line moves to the end instead of repeating.
        if let Some(pos) = self.history.iter().position(|h| h == line) {
            self.history.remove(pos);
        } else if self.history.len() == MAX_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(line.to_vec());
        self.history_entry = None;
    }

    fn complete(&mut self, out: &mut Vec<u8>, complete: &dyn Fn(&[u8]) -> Completions) {
        let Completions {
            word_len,
            mut candidates,
        } = complete(&self.line[..self.cursor]);
        match candidates.len() {
            0 => {}
            1 => {
                let word = &candidates[0];
                for &b in word.iter().skip(word_len) {
                    self.insert(b);
                }
                if word.last().is_some_and(|&b| b != b'/') {
                    self.insert(b' ');
                }
            }
            _ => {
                candidates.sort();
                out.push(b'\n');
                let common = candidates[1..].iter().fold(candidates[0].len(), |len, c| {
                    len.min(
                        c.iter()
                            .zip(&candidates[0])
                            .take_while(|(a, b)| a == b)
                            .count(),
                    )
                });
                for &b in candidates[0][..common].iter().skip(word_len) {
                    self.insert(b);
                }
                let width = (candidates.iter().map(Vec::len).max().unwrap_or(0) + 2).clamp(10, 80);
                let columns = 80 / width;
                for (i, candidate) in candidates.iter().enumerate() {
                    out.extend_from_slice(candidate);
                    out.extend(std::iter::repeat_n(
                        b' ',
                        width.saturating_sub(candidate.len()),
                    ));
                    if (i + 1) % columns == 0 || i + 1 == candidates.len() {
                        out.push(b'\n');
                    }
                }
                self.show_prompt(out);
            }
        }
    }

    /// Brings the screen in line with the buffer, QEMU's way.
    fn update(&mut self, out: &mut Vec<u8>) {
        if self.line != self.shown {
            for _ in 0..self.shown_cursor {
                out.extend_from_slice(b"\x1b[D");
            }
            out.extend_from_slice(&self.line);
            out.extend_from_slice(b"\x1b[K");
            self.shown.clone_from(&self.line);
            self.shown_cursor = self.line.len();
        }
        if self.cursor != self.shown_cursor {
            let step: &[u8] = if self.cursor > self.shown_cursor {
                b"\x1b[C"
            } else {
                b"\x1b[D"
            };
            for _ in 0..self.cursor.abs_diff(self.shown_cursor) {
                out.extend_from_slice(step);
            }
            self.shown_cursor = self.cursor;
        }
    }
}

/// C `isspace` in the C locale, which QEMU's parser uses.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_completion(_: &[u8]) -> Completions {
        Completions {
            word_len: 0,
            candidates: Vec::new(),
        }
    }

    /// Feeds `input`, returning the echo and the completed lines.
    fn feed(rl: &mut Readline, input: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut lines = Vec::new();
        for &b in input {
            if let Some(line) = rl.handle_byte(b, &mut out, &no_completion) {
                lines.push(line);
                rl.show_prompt(&mut out);
            }
        }
        (out, lines)
    }

    // Expected bytes below were recorded from QEMU 7.2 over a unix socket.

    #[test]
    fn typing_redraws_the_whole_line() {
        let mut rl = Readline::new();
        let (out, lines) = feed(&mut rl, b"stop\n");
        assert_eq!(
            out,
            b"s\x1b[K\x1b[Dst\x1b[K\x1b[D\x1b[Dsto\x1b[K\x1b[D\x1b[D\x1b[Dstop\x1b[K\n(qemu) "
        );
        assert_eq!(lines, vec![b"stop".to_vec()]);
    }

    #[test]
    fn cursor_keys_and_insertion() {
        let mut rl = Readline::new();
        let (out, lines) = feed(&mut rl, b"\x01\x05x\x1b[D\x1b[Dy\n");
        assert_eq!(out, b"x\x1b[K\x1b[Dyx\x1b[K\x1b[D\n(qemu) ");
        assert_eq!(lines, vec![b"yx".to_vec()]);
        let (out, _) = feed(&mut rl, b"ab\x1b[1~x\x1b[4~y\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dxab\x1b[K\x1b[D\x1b[D\x1b[C\x1b[C\x1b[D\x1b[D\x1b[Dxaby\x1b[K\n(qemu) "
        );
        let (out, lines) = feed(&mut rl, b"ab\x1bOHx\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dxab\x1b[K\x1b[D\x1b[D\n(qemu) "
        );
        assert_eq!(lines, vec![b"xab".to_vec()]);
        let (out, lines) = feed(&mut rl, b"ab\x9bDx\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Daxb\x1b[K\x1b[D\n(qemu) "
        );
        assert_eq!(lines, vec![b"axb".to_vec()]);
    }

    #[test]
    fn deleting() {
        let mut rl = Readline::new();
        let (out, lines) = feed(&mut rl, b"abc\x7f\x7fd\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dab\x1b[K\x1b[D\x1b[Da\x1b[K\x1b[Dad\x1b[K\n(qemu) "
        );
        assert_eq!(lines, vec![b"ad".to_vec()]);
        let (out, lines) = feed(&mut rl, b"abc\x01\x04\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dbc\x1b[K\x1b[D\x1b[D\n(qemu) "
        );
        assert_eq!(lines, vec![b"bc".to_vec()]);
        let (out, lines) = feed(&mut rl, b"ab cd\x17\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dab \x1b[K\x1b[D\x1b[D\x1b[Dab c\x1b[K\x1b[D\x1b[D\x1b[D\x1b[Dab cd\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dab \x1b[K\n(qemu) "
        );
        assert_eq!(lines, vec![b"ab ".to_vec()]);
    }

    #[test]
    fn ignored_bytes_and_history() {
        let mut rl = Readline::new();
        // ^K, ^U, ^B, ^F, ^C, NUL: ignored by QEMU 7.2.
        let (_, lines) = feed(&mut rl, b"ab\x0b\x15\x02\x06\x03\x00c\n");
        assert_eq!(lines, vec![b"abc".to_vec()]);
        let (_, lines) = feed(&mut rl, b"ad\n");
        assert_eq!(lines, vec![b"ad".to_vec()]);
        // Up replaces the line with the latest entry.
        let (out, lines) = feed(&mut rl, b"abc\x1b[Ab\n");
        assert_eq!(
            out,
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dad\x1b[K\x1b[D\x1b[Dadb\x1b[K\n(qemu) "
        );
        assert_eq!(lines, vec![b"adb".to_vec()]);
        let (out, lines) = feed(&mut rl, b"\x1b[A\n");
        assert_eq!(out, b"adb\x1b[K\n(qemu) ");
        assert_eq!(lines, vec![b"adb".to_vec()]);
        // Down past the newest entry gives an empty line.
        let (_, lines) = feed(&mut rl, b"\x1b[A\x1b[A\x1b[B\x1b[B\n");
        assert_eq!(lines, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn crlf_gives_an_empty_second_line() {
        let mut rl = Readline::new();
        let (out, lines) = feed(&mut rl, b"\r\n");
        assert_eq!(out, b"\n(qemu) \n(qemu) ");
        assert_eq!(lines, vec![Vec::<u8>::new(), Vec::new()]);
    }

    #[test]
    fn completion_single_and_multiple() {
        let complete = |prefix: &[u8]| {
            let words: &[&[u8]] = &[b"c", b"cont", b"quit", b"q"];
            Completions {
                word_len: prefix.len(),
                candidates: words
                    .iter()
                    .filter(|w| w.starts_with(prefix))
                    .map(|w| w.to_vec())
                    .collect(),
            }
        };
        let mut rl = Readline::new();
        let mut out = Vec::new();
        for &b in b"qu\t" {
            rl.handle_byte(b, &mut out, &complete);
        }
        assert_eq!(out, b"q\x1b[K\x1b[Dqu\x1b[K\x1b[D\x1b[Dquit \x1b[K");
        let mut rl = Readline::new();
        let mut out = Vec::new();
        rl.handle_byte(b'c', &mut out, &complete);
        rl.handle_byte(b'\t', &mut out, &complete);
        assert_eq!(
            out,
            b"c\x1b[K\nc         cont      \n(qemu) c\x1b[K".to_vec()
        );
    }
}
