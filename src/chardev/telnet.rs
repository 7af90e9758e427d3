//! The telnet layer of `telnet` socket chardevs: the options QEMU offers on connect, and
//! removal of telnet commands from the input.

/// IAC WILL ECHO, IAC WILL SUPPRESS-GO-AHEAD, IAC WILL BINARY, IAC DO BINARY: what QEMU's
/// telnet server sends first so clients go to character mode without local echo.
pub const TELNET_GREETING: &[u8] = &[255, 251, 1, 255, 251, 3, 255, 251, 0, 255, 253, 0];

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT: the option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Subnegotiation,
    SubnegotiationIac,
}

/// Strips telnet commands from a byte stream (state kept across reads).
pub struct TelnetFilter {
    enabled: bool,
    state: State,
}

impl TelnetFilter {
    pub fn new(enabled: bool) -> TelnetFilter {
        TelnetFilter {
            enabled,
            state: State::Data,
        }
    }

    pub fn strip(&mut self, input: &[u8]) -> Vec<u8> {
        if !self.enabled {
            return input.to_vec();
        }
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            self.state = match (self.state, byte) {
                (State::Data, IAC) => State::Command,
                (State::Data, b) => {
                    out.push(b);
                    State::Data
                }
                (State::Command, IAC) => {
                    out.push(IAC);
                    State::Data
                }
                (State::Command, SB) => State::Subnegotiation,
                (State::Command, WILL..=DONT) => State::Option,
                (State::Command, _) => State::Data,
                (State::Option, _) => State::Data,
                (State::Subnegotiation, IAC) => State::SubnegotiationIac,
                (State::Subnegotiation, _) => State::Subnegotiation,
                (State::SubnegotiationIac, SE) => State::Data,
                (State::SubnegotiationIac, _) => State::Subnegotiation,
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_is_removed_and_escaped_iac_kept() {
        let mut filter = TelnetFilter::new(true);
        let input = [
            255, 253, 1, b'i', 255, 250, 24, 1, 255, 240, b'n', 255, 255, b'\r', 255, 244,
        ];
        assert_eq!(filter.strip(&input), vec![b'i', b'n', 255, b'\r']);
    }

    #[test]
    fn commands_split_across_reads_are_removed() {
        let mut filter = TelnetFilter::new(true);
        assert_eq!(filter.strip(&[b'a', 255]), b"a");
        assert_eq!(filter.strip(&[251]), b"");
        assert_eq!(filter.strip(&[3, b'b']), b"b");
    }
}
