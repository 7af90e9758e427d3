//! QMP output the chardev has not accepted yet (a client that does not read), kept as whole
//! messages so that, when memory runs short, dropping old output never cuts a JSON message
//! in half: the client loses messages, never its framing.

use std::collections::VecDeque;

/// Output queued for the chardev, oldest first.
#[derive(Debug)]
pub(super) struct HeldOutput {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
    limit: usize,
}

impl HeldOutput {
    /// Holds at most about `limit` bytes (the newest message is always kept).
    pub(super) fn new(limit: usize) -> HeldOutput {
        HeldOutput {
            messages: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub(super) fn push(&mut self, message: Vec<u8>) {
        self.bytes += message.len();
        self.messages.push_back(message);
    }

    pub(super) fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }

    /// Offers the messages in order to `write` (which takes one whole or refuses it) until
    /// one is refused; then drops the oldest messages beyond the limit. True when nothing
    /// is left held.
    pub(super) fn flush(&mut self, mut write: impl FnMut(&[u8]) -> bool) -> bool {
        while let Some(message) = self.messages.front() {
            if !write(message) {
                break;
            }
            self.bytes -= message.len();
            self.messages.pop_front();
        }
        while self.bytes > self.limit && self.messages.len() > 1 {
            let dropped = self.messages.pop_front().expect("more than one message");
            self.bytes -= dropped.len();
        }
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_go_out_in_order_until_one_is_refused() {
        let mut held = HeldOutput::new(1 << 20);
        for m in ["a\r\n", "b\r\n", "c\r\n"] {
            held.push(m.as_bytes().to_vec());
        }
        let mut sent = Vec::new();
        let mut room = 2;
        assert!(!held.flush(|m| {
            if room == 0 {
                return false;
            }
            room -= 1;
            sent.extend_from_slice(m);
            true
        }));
        assert_eq!(sent, b"a\r\nb\r\n");
        assert!(held.flush(|m| {
            sent.extend_from_slice(m);
            true
        }));
        assert_eq!(sent, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn over_the_limit_whole_old_messages_are_dropped() {
        let mut held = HeldOutput::new(10);
        for m in ["{\"one\"}\r\n", "{\"two\"}\r\n", "{\"three\"}\r\n"] {
            held.push(m.as_bytes().to_vec());
        }
        assert!(!held.flush(|_| false));
        let mut sent = Vec::new();
        assert!(held.flush(|m| {
            sent.extend_from_slice(m);
            true
        }));
        assert_eq!(
            sent, b"{\"three\"}\r\n",
            "only whole messages, the newest kept"
        );
    }
}
