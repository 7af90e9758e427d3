//! The escape keys of a multiplexed chardev (`mux=on`, `mon:stdio`, `-nographic`), as in
//! QEMU 7.2: Ctrl-a followed by a key acts on the mux instead of reaching a front end.

/// Ctrl-a, QEMU's default escape character (`-echr` is not supported).
pub(crate) const ESCAPE: u8 = 0x01;

/// QEMU allows at most four front ends on one mux.
pub const MAX_MUX_FRONTENDS: usize = 4;

/// What one input byte means to the mux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MuxKey {
    /// An ordinary byte for the focused front end (Ctrl-a Ctrl-a sends one Ctrl-a).
    Data(u8),
    /// Ctrl-a h / Ctrl-a ?: print the help text.
    Help,
    /// Ctrl-a x: print `QEMU: Terminated` and quit.
    Quit,
    /// Ctrl-a s: commit `-snapshot` disk data.
    Commit,
    /// Ctrl-a b: a break to the focused front end.
    Break,
    /// Ctrl-a c: focus the next front end.
    SwitchFocus,
    /// Ctrl-a t: toggle output timestamps.
    ToggleTimestamps,
    /// The escape itself, or Ctrl-a followed by a key without meaning: swallowed.
    Nothing,
}

#[derive(Debug, Default)]
pub(crate) struct MuxEscape {
    got_escape: bool,
}

impl MuxEscape {
    pub(crate) fn key(&mut self, byte: u8) -> MuxKey {
        if !self.got_escape {
            if byte == ESCAPE {
                self.got_escape = true;
                return MuxKey::Nothing;
            }
            return MuxKey::Data(byte);
        }
        self.got_escape = false;
        match byte {
            ESCAPE => MuxKey::Data(ESCAPE),
            b'?' | b'h' => MuxKey::Help,
            b'x' => MuxKey::Quit,
            b's' => MuxKey::Commit,
            b'b' => MuxKey::Break,
            b'c' => MuxKey::SwitchFocus,
            b't' => MuxKey::ToggleTimestamps,
            _ => MuxKey::Nothing,
        }
    }
}

/// QEMU 7.2's Ctrl-a h text, byte for byte (lines end in `\n\r`).
pub(crate) const HELP_TEXT: &[u8] = b"\n\r\
C-a h    print this help\n\r\
C-a x    exit emulator\n\r\
C-a s    save disk data back to file (if -snapshot)\n\r\
C-a t    toggle console timestamps\n\r\
C-a b    send break (magic sysrq)\n\r\
C-a c    switch between console and monitor\n\r\
C-a C-a  sends C-a\n\r";

/// Printed on Ctrl-a x before quitting.
pub(crate) const TERMINATED_TEXT: &[u8] = b"QEMU: Terminated\n\r";

/// Printed on Ctrl-a s while no block layer handler is installed: vmscope has no
/// `-snapshot` drives to commit yet, and says so rather than pretend.
pub(crate) const COMMIT_UNSUPPORTED_TEXT: &[u8] =
    b"\n\rC-a s: committing -snapshot disk data is not supported by vmscope yet\n\r";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        let mut m = MuxEscape::default();
        let keys: Vec<MuxKey> = b"a\x01c\x01\x01\x01xq\x01z\x01h\x01?\x01b\x01s\x01t"
            .iter()
            .map(|&b| m.key(b))
            .collect();
        use MuxKey::*;
        assert_eq!(
            keys,
            vec![
                Data(b'a'),
                Nothing,
                SwitchFocus,
                Nothing,
                Data(1),
                Nothing,
                Quit,
                Data(b'q'),
                Nothing,
                Nothing,
                Nothing,
                Help,
                Nothing,
                Help,
                Nothing,
                Break,
                Nothing,
                Commit,
                Nothing,
                ToggleTimestamps
            ]
        );
    }
}
