//! The i8042 keyboard controller (ports 0x60 and 0x64) with its PS/2 keyboard and mouse, as
//! QEMU 7.2's `i8042`: the controller commands firmware and guests use (command byte,
//! self-tests, port enable/disable, output port with the reset line, A20, writes to the
//! devices' output buffers), IRQ 1 for keyboard and IRQ 12 for mouse data, and the "pulse
//! reset line" command (0xFE) through which guests reboot. SeaBIOS waits for the self-test
//! and keyboard reset replies at every boot; answering them at once is what keeps its
//! start-up as fast as on QEMU.

use std::sync::{Arc, Mutex};

use super::bus::PioDevice;
use super::irq::InterruptLine;
use super::ps2::{Keyboard, Mouse};

/// I/O base the controller is registered at; data port is +0, command/status port is +4.
pub const I8042_BASE: u16 = 0x60;
pub const I8042_PORT_COUNT: u16 = 5;
pub const KEYBOARD_IRQ: u32 = 1;
pub const MOUSE_IRQ: u32 = 12;

/// Calls a closure when the guest asks for a reset.
pub struct ResetTrigger(pub Box<dyn Fn() + Send + Sync>);

// Status register.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SELF_TEST_PASSED: u8 = 0x04;
/// The last write went to the command port.
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
/// The keyboard is not inhibited by the key lock.
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_MOUSE_OUTPUT_FULL: u8 = 0x20;

// Command byte ("mode").
const MODE_KEYBOARD_IRQ: u8 = 0x01;
const MODE_MOUSE_IRQ: u8 = 0x02;
const MODE_KEYBOARD_DISABLED: u8 = 0x10;
const MODE_MOUSE_DISABLED: u8 = 0x20;
const MODE_TRANSLATE: u8 = 0x40;

// Output port.
const OUTPUT_RESET_INACTIVE: u8 = 0x01;
const OUTPUT_A20: u8 = 0x02;
const OUTPUT_KEYBOARD_FULL: u8 = 0x10;
const OUTPUT_MOUSE_FULL: u8 = 0x20;
/// Bits QEMU keeps set in its output port value.
const OUTPUT_ONES: u8 = 0xcc;

/// Controller commands that take a data byte on port 0x60.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PendingWrite {
    CommandByte,
    KeyboardOutput,
    MouseOutput,
    ToMouse,
    OutputPort,
}

struct Controller {
    status: u8,
    mode: u8,
    output_port: u8,
    pending: Option<PendingWrite>,
    keyboard: Keyboard,
    mouse: Mouse,
}

impl Controller {
    fn power_on() -> Controller {
        Controller {
            status: STATUS_LAST_WAS_COMMAND | STATUS_UNLOCKED,
            mode: MODE_KEYBOARD_IRQ | MODE_MOUSE_IRQ,
            output_port: OUTPUT_RESET_INACTIVE | OUTPUT_A20 | OUTPUT_ONES,
            pending: None,
            keyboard: Keyboard::default(),
            mouse: Mouse::default(),
        }
    }

    /// Keyboard data is served before mouse data.
    fn mouse_data_next(&self) -> bool {
        self.keyboard.queue.is_empty() && !self.mouse.queue.is_empty()
    }

    /// Recomputes the "output full" bits; returns the (keyboard, mouse) IRQ levels.
    fn update(&mut self) -> (bool, bool) {
        self.status &= !(STATUS_OUTPUT_FULL | STATUS_MOUSE_OUTPUT_FULL);
        self.output_port &= !(OUTPUT_KEYBOARD_FULL | OUTPUT_MOUSE_FULL);
        if !self.keyboard.queue.is_empty() {
            self.status |= STATUS_OUTPUT_FULL;
            self.output_port |= OUTPUT_KEYBOARD_FULL;
            let irq = self.mode & MODE_KEYBOARD_IRQ != 0 && self.mode & MODE_KEYBOARD_DISABLED == 0;
            return (irq, false);
        }
        if self.mouse_data_next() {
            self.status |= STATUS_OUTPUT_FULL | STATUS_MOUSE_OUTPUT_FULL;
            self.output_port |= OUTPUT_MOUSE_FULL;
            return (false, self.mode & MODE_MOUSE_IRQ != 0);
        }
        (false, false)
    }

    /// Queues a byte the controller itself answers with: it goes out as keyboard data, as
    /// QEMU's `kbd_queue` does.
    fn reply(&mut self, byte: u8) {
        self.keyboard.queue_controller_byte(byte);
    }

    /// Returns true when the guest asked for a system reset.
    fn command(&mut self, command: u8) -> bool {
        // 0xF0-0xFF pulse output port bits 3:0 low; only bit 0 (reset) matters.
        if command & 0xf0 == 0xf0 {
            return command & 1 == 0;
        }
        match command {
            0x20 => self.reply(self.mode),
            0x60 => self.pending = Some(PendingWrite::CommandByte),
            0xd1 => self.pending = Some(PendingWrite::OutputPort),
            0xd2 => self.pending = Some(PendingWrite::KeyboardOutput),
            0xd3 => self.pending = Some(PendingWrite::MouseOutput),
            0xd4 => self.pending = Some(PendingWrite::ToMouse),
            0xa7 => self.mode |= MODE_MOUSE_DISABLED,
            0xa8 => self.mode &= !MODE_MOUSE_DISABLED,
            // Mouse and keyboard interface tests: no error.
            0xa9 | 0xab => self.reply(0x00),
            0xaa => {
                self.status |= STATUS_SELF_TEST_PASSED;
                self.reply(0x55);
            }
            0xad => self.mode |= MODE_KEYBOARD_DISABLED,
            0xae => self.mode &= !MODE_KEYBOARD_DISABLED,
            0xc0 => self.reply(0x80),
            0xd0 => self.reply(self.output_port),
            // KVM has no A20 gate; the bit is only remembered, as QEMU with KVM does.
            0xdd => self.output_port &= !OUTPUT_A20,
            0xdf => self.output_port |= OUTPUT_A20,
            // Unknown commands are ignored (QEMU logs them as guest errors).
            _ => {}
        }
        false
    }

    /// A byte written to port 0x60; returns true when it asked for a system reset.
    fn data(&mut self, value: u8) -> bool {
        match self.pending.take() {
            None => self.keyboard.write(value),
            Some(PendingWrite::CommandByte) => {
                self.mode = value;
                self.keyboard.set_translation(value & MODE_TRANSLATE != 0);
            }
            Some(PendingWrite::KeyboardOutput) => self.reply(value),
            Some(PendingWrite::MouseOutput) => self.mouse.queue_controller_byte(value),
            Some(PendingWrite::ToMouse) => self.mouse.write(value),
            Some(PendingWrite::OutputPort) => {
                self.output_port = value;
                return value & OUTPUT_RESET_INACTIVE == 0;
            }
        }
        false
    }

    fn read_data(&mut self) -> u8 {
        if self.mouse_data_next() {
            self.mouse.queue.pop()
        } else {
            self.keyboard.queue.pop()
        }
    }
}

/// The controller with its interrupt lines.
pub struct I8042 {
    controller: Mutex<Controller>,
    keyboard_irq: Arc<dyn InterruptLine>,
    mouse_irq: Arc<dyn InterruptLine>,
    on_reset: ResetTrigger,
}

impl I8042 {
    pub fn new(
        on_reset: ResetTrigger,
        keyboard_irq: Arc<dyn InterruptLine>,
        mouse_irq: Arc<dyn InterruptLine>,
    ) -> I8042 {
        I8042 {
            controller: Mutex::new(Controller::power_on()),
            keyboard_irq,
            mouse_irq,
            on_reset,
        }
    }

    /// System reset: the controller and both devices back to power-on state.
    pub fn reset(&self) {
        *self.controller.lock().unwrap() = Controller::power_on();
        self.keyboard_irq.set_level(false);
        self.mouse_irq.set_level(false);
    }

    /// Runs `f` on the controller, then drives the IRQ lines from its new state and
    /// performs a reset it asked for (outside the lock: the reset path resets this device).
    fn with_controller<T>(&self, f: impl FnOnce(&mut Controller) -> (T, bool)) -> T {
        let (value, reset, (keyboard, mouse)) = {
            let mut controller = self.controller.lock().unwrap();
            let (value, reset) = f(&mut controller);
            (value, reset, controller.update())
        };
        self.keyboard_irq.set_level(keyboard);
        self.mouse_irq.set_level(mouse);
        if reset {
            (self.on_reset.0)();
        }
        value
    }
}

impl PioDevice for I8042 {
    fn read(&self, offset: u16, data: &mut [u8]) {
        let value = match offset {
            0 => self.with_controller(|c| (c.read_data(), false)),
            4 => self.controller.lock().unwrap().status,
            _ => 0xff,
        };
        data.fill(value);
    }

    fn write(&self, offset: u16, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            0 => self.with_controller(|c| {
                c.status &= !STATUS_LAST_WAS_COMMAND;
                ((), c.data(value))
            }),
            4 => self.with_controller(|c| {
                c.status |= STATUS_LAST_WAS_COMMAND;
                ((), c.command(value))
            }),
            _ => {}
        }
    }
}

impl I8042 {
    /// The controller as QEMU's `info qtree` shows it: its PS/2 input lines, its two
    /// interrupt outputs and the A20 output, and the IRQs it raises.
    pub fn qdev(&self) -> crate::hw::describe::QdevDevice {
        use crate::hw::describe::{QdevDevice, QdevProp};
        QdevDevice::new("i8042")
            .gpio_in("ps2-mouse-input-irq", 1)
            .gpio_in("ps2-kbd-input-irq", 1)
            .gpio_out("", 2)
            .gpio_out("a20", 1)
            .prop(QdevProp::bool("extended-state", true))
            .prop(QdevProp::bool("kbd-throttle", false))
            .prop(QdevProp::uint("kbd-irq", u64::from(KEYBOARD_IRQ)))
            .prop(QdevProp::uint("mouse-irq", u64::from(MOUSE_IRQ)))
    }
}

/// The controller's ports under QEMU's region names (0x61, between them, is not its own).
pub fn io_regions() -> Vec<crate::hw::describe::PortRegion> {
    use crate::hw::describe::PortRegion;
    vec![
        PortRegion::new("i8042-data", I8042_BASE, 1),
        PortRegion::new("i8042-cmd", I8042_BASE + 4, 1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Default)]
    struct Line(AtomicBool);

    impl InterruptLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    struct Rig {
        kbc: I8042,
        resets: Arc<AtomicUsize>,
        kbd_irq: Arc<Line>,
        mouse_irq: Arc<Line>,
    }

    fn rig() -> Rig {
        let resets = Arc::new(AtomicUsize::new(0));
        let seen = resets.clone();
        let kbd_irq = Arc::new(Line::default());
        let mouse_irq = Arc::new(Line::default());
        let kbc = I8042::new(
            ResetTrigger(Box::new(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            })),
            kbd_irq.clone(),
            mouse_irq.clone(),
        );
        Rig {
            kbc,
            resets,
            kbd_irq,
            mouse_irq,
        }
    }

    fn status(kbc: &I8042) -> u8 {
        let mut b = [0];
        kbc.read(4, &mut b);
        b[0]
    }

    fn data(kbc: &I8042) -> u8 {
        let mut b = [0];
        kbc.read(0, &mut b);
        b[0]
    }

    #[test]
    fn command_fe_and_the_output_port_reset_the_machine() {
        let r = rig();
        r.kbc.write(4, &[0xd1]);
        assert_eq!(r.resets.load(Ordering::SeqCst), 0);
        r.kbc.write(4, &[0xfe]);
        assert_eq!(r.resets.load(Ordering::SeqCst), 1);
        r.kbc.write(4, &[0xff]);
        assert_eq!(r.resets.load(Ordering::SeqCst), 1, "0xFF pulses nothing");
        r.kbc.write(4, &[0xd1]);
        r.kbc.write(0, &[0x02]);
        assert_eq!(r.resets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn power_on_status_and_self_test() {
        let r = rig();
        assert_eq!(status(&r.kbc), 0x18);
        r.kbc.write(4, &[0xaa]);
        assert_eq!(status(&r.kbc), 0x1d, "self-test passed, output full");
        assert!(r.kbd_irq.0.load(Ordering::SeqCst));
        assert_eq!(data(&r.kbc), 0x55);
        assert_eq!(status(&r.kbc), 0x1c);
        assert!(!r.kbd_irq.0.load(Ordering::SeqCst));
    }

    #[test]
    fn command_byte_round_trips_and_gates_the_keyboard_irq() {
        let r = rig();
        r.kbc.write(4, &[0x60]);
        r.kbc.write(0, &[0x61]);
        r.kbc.write(4, &[0x20]);
        assert_eq!(data(&r.kbc), 0x61);
        // IRQ 1 disabled in the command byte: data arrives without an interrupt.
        r.kbc.write(4, &[0x60]);
        r.kbc.write(0, &[0x00]);
        r.kbc.write(0, &[0xff]);
        assert!(!r.kbd_irq.0.load(Ordering::SeqCst));
        assert_eq!(data(&r.kbc), 0xfa);
        assert_eq!(data(&r.kbc), 0xaa);
    }

    #[test]
    fn mouse_data_sets_its_status_bit_and_irq12() {
        let r = rig();
        r.kbc.write(4, &[0xd4]);
        r.kbc.write(0, &[0xf2]);
        assert_eq!(status(&r.kbc) & 0x21, 0x21);
        assert!(r.mouse_irq.0.load(Ordering::SeqCst));
        assert_eq!(data(&r.kbc), 0xfa);
        assert_eq!(data(&r.kbc), 0x00);
        assert_eq!(status(&r.kbc) & 0x21, 0);
        assert!(!r.mouse_irq.0.load(Ordering::SeqCst));
        // Writes to the output buffers come back as device data.
        r.kbc.write(4, &[0xd3]);
        r.kbc.write(0, &[0x5a]);
        assert_eq!(status(&r.kbc) & 0x21, 0x21);
        assert_eq!(data(&r.kbc), 0x5a);
    }

    #[test]
    fn system_reset_returns_to_power_on_state() {
        let r = rig();
        r.kbc.write(4, &[0xaa]);
        r.kbc.reset();
        assert_eq!(status(&r.kbc), 0x18);
    }
}
