//! The PS/2 keyboard and mouse behind the i8042, as far as firmware and guests probe them:
//! their command protocols (reset with self-test result, identify, enable/disable, LEDs,
//! rates, scan code sets, mouse status) with QEMU 7.2's replies. vmscope has no display, so
//! no key or mouse event is ever generated; only command replies are queued.

use std::collections::VecDeque;

/// Replies a PS/2 device queues before the guest drains them (QEMU's queue is 16 deep for
/// what a guest can provoke with commands).
const QUEUE_LIMIT: usize = 16;

pub const ACK: u8 = 0xfa;
const RESEND: u8 = 0xfe;
/// Self-test passed, sent after a reset.
const POWER_ON_RESET: u8 = 0xaa;
const KEYBOARD_ID: u8 = 0xab;

/// A device's output queue; reading an empty one repeats the last byte, as on QEMU (some
/// DOS memory managers rely on it).
#[derive(Default)]
pub struct ReplyQueue {
    bytes: VecDeque<u8>,
    last: u8,
}

impl ReplyQueue {
    fn push(&mut self, byte: u8) {
        if self.bytes.len() < QUEUE_LIMIT {
            self.bytes.push_back(byte);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn pop(&mut self) -> u8 {
        if let Some(byte) = self.bytes.pop_front() {
            self.last = byte;
        }
        self.last
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// The keyboard's commands that take a parameter byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyboardParameter {
    ScanCodeSet,
    Leds,
    TypematicRate,
}

pub struct Keyboard {
    pub queue: ReplyQueue,
    awaiting: Option<KeyboardParameter>,
    scanning: bool,
    scan_code_set: u8,
    leds: u8,
    /// The controller translates to set 1 (its command byte bit 6); changes the ID reply.
    translate: bool,
}

impl Default for Keyboard {
    fn default() -> Self {
        Keyboard {
            queue: ReplyQueue::default(),
            awaiting: None,
            scanning: true,
            scan_code_set: 2,
            leds: 0,
            translate: false,
        }
    }
}

impl Keyboard {
    /// A byte the controller puts in the keyboard's output (its own replies, command 0xD2).
    pub fn queue_controller_byte(&mut self, byte: u8) {
        self.queue.push(byte);
    }

    pub fn set_translation(&mut self, on: bool) {
        self.translate = on;
    }

    fn reset(&mut self) {
        self.scanning = true;
        self.scan_code_set = 2;
        self.leds = 0;
        self.queue.clear();
    }

    /// A byte the guest sent to the keyboard (port 0x60 without a pending controller command).
    pub fn write(&mut self, value: u8) {
        if let Some(parameter) = self.awaiting.take() {
            match parameter {
                KeyboardParameter::ScanCodeSet => match value {
                    0 => {
                        self.queue.push(ACK);
                        self.queue.push(self.reported_scan_code_set());
                    }
                    1..=3 => {
                        self.scan_code_set = value;
                        self.queue.push(ACK);
                    }
                    _ => self.queue.push(RESEND),
                },
                KeyboardParameter::Leds => {
                    self.leds = value;
                    self.queue.push(ACK);
                }
                KeyboardParameter::TypematicRate => self.queue.push(ACK),
            }
            return;
        }
        match value {
            0x00 => self.queue.push(ACK),
            0x05 => self.queue.push(RESEND),
            // Identify: an MF2 keyboard, whose second ID byte depends on translation.
            0xf2 => {
                self.queue.push(ACK);
                self.queue.push(KEYBOARD_ID);
                self.queue.push(if self.translate { 0x41 } else { 0x83 });
            }
            0xee => self.queue.push(0xee),
            0xf4 => {
                self.scanning = true;
                self.queue.push(ACK);
            }
            0xf0 => self.expect(KeyboardParameter::ScanCodeSet),
            0xed => self.expect(KeyboardParameter::Leds),
            0xf3 => self.expect(KeyboardParameter::TypematicRate),
            0xf5 => {
                self.reset();
                self.scanning = false;
                self.queue.push(ACK);
            }
            0xf6 => {
                self.reset();
                self.queue.push(ACK);
            }
            0xff => {
                self.reset();
                self.queue.push(ACK);
                self.queue.push(POWER_ON_RESET);
            }
            // "Set all keys typematic/make-break": accepted without effect.
            0xfa | 0xfc => self.queue.push(ACK),
            _ => self.queue.push(RESEND),
        }
    }

    fn expect(&mut self, parameter: KeyboardParameter) {
        self.awaiting = Some(parameter);
        self.queue.push(ACK);
    }

    /// The set number as the guest sees it through the controller's translation.
    fn reported_scan_code_set(&self) -> u8 {
        if self.translate {
            [0, 0x43, 0x41, 0x3f][usize::from(self.scan_code_set)]
        } else {
            self.scan_code_set
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MouseParameter {
    SampleRate,
    Resolution,
}

const MOUSE_STATUS_REMOTE: u8 = 0x40;
const MOUSE_STATUS_ENABLED: u8 = 0x20;
const MOUSE_STATUS_SCALE21: u8 = 0x10;

pub struct Mouse {
    pub queue: ReplyQueue,
    awaiting: Option<MouseParameter>,
    status: u8,
    resolution: u8,
    sample_rate: u8,
    /// Wrap (echo) mode: every byte but the two wrap commands comes back.
    wrap: bool,
}

impl Default for Mouse {
    fn default() -> Self {
        Mouse {
            queue: ReplyQueue::default(),
            awaiting: None,
            status: 0,
            resolution: 2,
            sample_rate: 100,
            wrap: false,
        }
    }
}

impl Mouse {
    /// A byte the controller puts in the mouse's output (command 0xD3).
    pub fn queue_controller_byte(&mut self, byte: u8) {
        self.queue.push(byte);
    }

    fn set_defaults(&mut self) {
        self.status = 0;
        self.resolution = 2;
        self.sample_rate = 100;
    }

    /// A byte the guest sent to the mouse (controller command 0xD4 then port 0x60).
    pub fn write(&mut self, value: u8) {
        if let Some(parameter) = self.awaiting.take() {
            match parameter {
                MouseParameter::SampleRate => self.sample_rate = value,
                MouseParameter::Resolution => self.resolution = value,
            }
            self.queue.push(ACK);
            return;
        }
        if self.wrap && !matches!(value, 0xec | 0xff) {
            self.queue.push(value);
            return;
        }
        match value {
            0xe6 => {
                self.status &= !MOUSE_STATUS_SCALE21;
                self.queue.push(ACK);
            }
            0xe7 => {
                self.status |= MOUSE_STATUS_SCALE21;
                self.queue.push(ACK);
            }
            0xe8 => {
                self.awaiting = Some(MouseParameter::Resolution);
                self.queue.push(ACK);
            }
            0xe9 => {
                self.queue.push(ACK);
                self.queue.push(self.status);
                self.queue.push(self.resolution);
                self.queue.push(self.sample_rate);
            }
            0xea => {
                self.status &= !MOUSE_STATUS_REMOTE;
                self.queue.push(ACK);
            }
            // Poll: no movement, no buttons.
            0xeb => {
                self.queue.push(ACK);
                self.queue.push(0x08);
                self.queue.push(0);
                self.queue.push(0);
            }
            0xec => {
                self.wrap = false;
                self.queue.push(ACK);
            }
            0xee => {
                self.wrap = true;
                self.queue.push(ACK);
            }
            0xf0 => {
                self.status |= MOUSE_STATUS_REMOTE;
                self.queue.push(ACK);
            }
            // Identify: a standard PS/2 mouse.
            0xf2 => {
                self.queue.push(ACK);
                self.queue.push(0);
            }
            0xf3 => {
                self.awaiting = Some(MouseParameter::SampleRate);
                self.queue.push(ACK);
            }
            0xf4 => {
                self.status |= MOUSE_STATUS_ENABLED;
                self.queue.push(ACK);
            }
            0xf5 => {
                self.status &= !MOUSE_STATUS_ENABLED;
                self.queue.push(ACK);
            }
            0xf6 => {
                self.set_defaults();
                self.queue.push(ACK);
            }
            0xff => {
                self.set_defaults();
                self.wrap = false;
                self.queue.clear();
                self.queue.push(ACK);
                self.queue.push(POWER_ON_RESET);
                self.queue.push(0);
            }
            // QEMU's mouse ignores other commands without a reply.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut ReplyQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while !queue.is_empty() {
            out.push(queue.pop());
        }
        out
    }

    #[test]
    fn keyboard_reset_and_identify() {
        let mut kbd = Keyboard::default();
        kbd.write(0xff);
        assert_eq!(drain(&mut kbd.queue), [ACK, POWER_ON_RESET]);
        kbd.write(0xf2);
        assert_eq!(drain(&mut kbd.queue), [ACK, 0xab, 0x83]);
        kbd.set_translation(true);
        kbd.write(0xf2);
        assert_eq!(drain(&mut kbd.queue), [ACK, 0xab, 0x41]);
        // An empty queue repeats the last byte.
        assert_eq!(kbd.queue.pop(), 0x41);
    }

    #[test]
    fn keyboard_parameters_and_unknown_commands() {
        let mut kbd = Keyboard::default();
        kbd.write(0xed);
        kbd.write(0x07);
        kbd.write(0xf0);
        kbd.write(0x00);
        kbd.write(0xf0);
        kbd.write(0x09);
        kbd.write(0x42);
        assert_eq!(
            drain(&mut kbd.queue),
            [ACK, ACK, ACK, ACK, 2, ACK, RESEND, RESEND]
        );
        assert_eq!(kbd.leds, 7);
    }

    #[test]
    fn mouse_reset_status_and_wrap() {
        let mut mouse = Mouse::default();
        mouse.write(0xff);
        assert_eq!(drain(&mut mouse.queue), [ACK, POWER_ON_RESET, 0]);
        mouse.write(0xf3);
        mouse.write(40);
        mouse.write(0xf4);
        mouse.write(0xe9);
        assert_eq!(
            drain(&mut mouse.queue),
            [ACK, ACK, ACK, ACK, MOUSE_STATUS_ENABLED, 2, 40]
        );
        mouse.write(0xee);
        mouse.write(0x12);
        mouse.write(0xec);
        assert_eq!(drain(&mut mouse.queue), [ACK, 0x12, ACK]);
        mouse.write(0x99);
        assert!(mouse.queue.is_empty());
    }

    #[test]
    fn a_flood_of_commands_does_not_grow_the_queue() {
        let mut kbd = Keyboard::default();
        for _ in 0..10_000 {
            kbd.write(0xee);
        }
        assert_eq!(drain(&mut kbd.queue).len(), QUEUE_LIMIT);
    }
}
