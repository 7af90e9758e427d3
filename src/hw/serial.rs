//! The 16550A UART (vm-superio's model) at a COM port, raising its ISA interrupt through an
//! irqfd and exchanging bytes with a chardev.

use std::io::Write;
use std::sync::Mutex;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::PioDevice;

/// COM1's ports and ISA interrupt.
pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// A UART occupies eight ports.
pub const UART_PORT_COUNT: u16 = 8;

/// Raises the UART's interrupt line: an eventfd KVM injects as an interrupt (irqfd).
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Tells the chardev side that the guest drained the receive FIFO, so held-back input can be
/// delivered (the FIFO holds only 64 bytes; the chardev keeps the rest).
pub struct RxSpace(pub Box<dyn Fn() + Send + Sync>);

impl SerialEvents for RxSpace {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        (self.0)();
    }
}

type Uart = Serial<IrqLine, RxSpace, Box<dyn Write + Send>>;

/// A serial port.
pub struct SerialPort {
    uart: Mutex<Uart>,
}

impl SerialPort {
    /// `output` receives every byte the guest transmits.
    pub fn new(irq: IrqLine, rx_space: RxSpace, output: Box<dyn Write + Send>) -> SerialPort {
        SerialPort {
            uart: Mutex::new(Serial::with_events(irq, rx_space, output)),
        }
    }

    /// How many input bytes the receive FIFO can take now.
    pub fn input_space(&self) -> usize {
        self.uart.lock().unwrap().fifo_capacity()
    }

    /// The UART's line settings as the guest programmed them: (baud divisor, line control).
    pub fn line_settings(&self) -> (u16, u8) {
        let state = self.uart.lock().unwrap().state();
        (
            u16::from_le_bytes([state.baud_divisor_low, state.baud_divisor_high]),
            state.line_control,
        )
    }

    /// Queues input bytes for the guest; returns how many fit.
    pub fn queue_input(&self, data: &[u8]) -> usize {
        // A full FIFO or a failed interrupt both mean "nothing more taken now".
        self.uart
            .lock()
            .unwrap()
            .enqueue_raw_bytes(data)
            .unwrap_or(0)
    }
}

impl PioDevice for SerialPort {
    fn read(&self, offset: u16, data: &mut [u8]) {
        let value = self.uart.lock().unwrap().read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        if let Some(&value) = data.first() {
            // Output errors (a closed chardev) lose the byte as a disconnected line would.
            let _ = self.uart.lock().unwrap().write(offset as u8, value);
        }
    }
}

/// COM1 as QEMU's `info qtree` shows it (`isa-serial` index 0; its chardev belongs to an
/// inner object QEMU does not list).
pub fn com1_qdev() -> crate::hw::describe::QdevDevice {
    use crate::hw::describe::{QdevDevice, QdevProp};
    QdevDevice::new("isa-serial")
        .prop(QdevProp::uint("index", 0))
        .prop(QdevProp::uint("iobase", u64::from(COM1_BASE)))
        .prop(QdevProp::uint("irq", u64::from(COM1_IRQ)))
}

/// COM1's ports under QEMU's region name.
pub fn com1_io_regions() -> Vec<crate::hw::describe::PortRegion> {
    vec![crate::hw::describe::PortRegion::new(
        "serial",
        COM1_BASE,
        UART_PORT_COUNT,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn port() -> (SerialPort, Captured, EventFd, Arc<AtomicUsize>) {
        let out = Captured::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let drained = Arc::new(AtomicUsize::new(0));
        let seen = drained.clone();
        let port = SerialPort::new(
            IrqLine(irq.try_clone().unwrap()),
            RxSpace(Box::new(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            })),
            Box::new(out.clone()),
        );
        (port, out, irq, drained)
    }

    #[test]
    fn transmitted_bytes_reach_the_chardev() {
        let (port, out, _, _) = port();
        for b in b"hi\n" {
            port.write(0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi\n");
    }

    #[test]
    fn input_raises_the_interrupt_and_reports_when_drained() {
        let (port, _, irq, drained) = port();
        port.write(1, &[0x01]); // IER: received-data interrupt on
        assert_eq!(port.queue_input(b"ab"), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut byte = [0u8];
        port.read(0, &mut byte);
        assert_eq!(byte, [b'a']);
        assert_eq!(drained.load(Ordering::SeqCst), 0);
        port.read(0, &mut byte);
        assert_eq!(byte, [b'b']);
        assert_eq!(drained.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn line_settings_follow_the_divisor_latch() {
        let (port, _, _, _) = port();
        port.write(3, &[0x83]); // DLAB on, 8 data bits
        port.write(0, &[12]); // divisor low: 9600 baud
        port.write(1, &[0]);
        port.write(3, &[0x03]); // DLAB off
        assert_eq!(port.line_settings(), (12, 0x03));
    }

    #[test]
    fn the_fifo_takes_at_most_its_capacity() {
        let (port, _, _, _) = port();
        let space = port.input_space();
        assert_eq!(port.queue_input(&vec![b'x'; space + 10]), space);
        assert_eq!(port.queue_input(b"y"), 0);
    }
}
