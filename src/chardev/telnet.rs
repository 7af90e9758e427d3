//! The telnet layer of `telnet:`/`telnet=on` socket chardevs, as QEMU 7.2 speaks it.
//!
//! On connect QEMU sends four option commands and otherwise never negotiates: it ignores
//! the client's answers. Input is filtered: `IAC IAC` is a literal 0xFF, `IAC BREAK` is a
//! break event (2 bytes), and any other `IAC x y` is dropped as a 3-byte option command
//! (QEMU treats subnegotiations the same way, so `IAC SB` eats one following byte only).
//! Output is not escaped.

/// Interpret As Command.
const IAC: u8 = 0xff;
const BREAK: u8 = 0xf3;

/// Sent to every new client before anything else: IAC WILL ECHO, IAC WILL
/// SUPPRESS-GO-AHEAD, IAC WILL BINARY, IAC DO BINARY.
pub(crate) const NEGOTIATION: [u8; 12] = [
    IAC, 0xfb, 0x01, IAC, 0xfb, 0x03, IAC, 0xfb, 0x00, IAC, 0xfd, 0x00,
];

/// What the filter found in a chunk of input, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TelnetInput {
    Data(Vec<u8>),
    Break,
}

/// Input filter; its state carries over between reads (a command may straddle them).
#[derive(Debug, Default)]
pub(crate) struct TelnetDecoder {
    /// Bytes of the current command seen so far (0 = not in a command).
    in_command: u8,
}

impl TelnetDecoder {
    pub(crate) fn decode(&mut self, input: &[u8]) -> Vec<TelnetInput> {
        let mut items = Vec::new();
        let mut data = Vec::with_capacity(input.len());
        for &byte in input {
            match self.in_command {
                0 if byte == IAC => self.in_command = 1,
                0 => data.push(byte),
                1 if byte == IAC => {
                    data.push(IAC);
                    self.in_command = 0;
                }
                1 if byte == BREAK => {
                    if !data.is_empty() {
                        items.push(TelnetInput::Data(std::mem::take(&mut data)));
                    }
                    items.push(TelnetInput::Break);
                    self.in_command = 0;
                }
                1 => self.in_command = 2,
                _ => self.in_command = 0,
            }
        }
        if !data.is_empty() {
            items.push(TelnetInput::Data(data));
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> TelnetInput {
        TelnetInput::Data(bytes.to_vec())
    }

    #[test]
    fn filters_like_qemu() {
        let mut d = TelnetDecoder::default();
        // These cases were observed on QEMU 7.2 (what reached the monitor's readline).
        assert_eq!(d.decode(b"\xff\xff\n"), vec![data(b"\xff\n")]);
        assert_eq!(
            d.decode(b"ab\xff\xf3cd\n"),
            vec![data(b"ab"), TelnetInput::Break, data(b"cd\n")]
        );
        assert_eq!(d.decode(b"x\xff\xfb\x01y\n"), vec![data(b"xy\n")]);
        // A subnegotiation is not understood: IAC SB x is dropped, then IAC SE z.
        assert_eq!(
            d.decode(b"\xff\xfa\x18\x00xterm\xff\xf0z\n"),
            vec![data(b"\x00xterm\n")]
        );
    }

    #[test]
    fn commands_split_across_reads() {
        let mut d = TelnetDecoder::default();
        assert_eq!(d.decode(b"a\xff"), vec![data(b"a")]);
        assert_eq!(d.decode(b"\xfd"), vec![]);
        assert_eq!(d.decode(b"\x01b"), vec![data(b"b")]);
        assert_eq!(d.decode(b"\xff"), vec![]);
        assert_eq!(d.decode(b"\xffc"), vec![data(b"\xffc")]);
    }
}
