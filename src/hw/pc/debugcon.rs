//! QEMU's `isa-debugcon`: a write-only byte port (0xE9 by default, 0x402 for SeaBIOS's log)
//! whose bytes go to a chardev. Reading it returns the readback value 0xE9, which is how
//! SeaBIOS and others detect that the port exists.

use std::io::Write;
use std::sync::Mutex;

use crate::hw::bus::PioDevice;

pub const DEBUGCON_DEFAULT_IOBASE: u16 = 0xe9;
const READBACK: u8 = 0xe9;

pub struct DebugCon {
    output: Mutex<Box<dyn Write + Send>>,
}

impl DebugCon {
    pub fn new(output: Box<dyn Write + Send>) -> DebugCon {
        DebugCon {
            output: Mutex::new(output),
        }
    }
}

impl PioDevice for DebugCon {
    fn read(&self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
        data[0] = READBACK;
    }

    fn write(&self, _offset: u16, data: &[u8]) {
        // Like QEMU, only the low byte of a wider write is a character.
        let mut output = self.output.lock().unwrap();
        // A chardev that cannot take the byte loses it, as QEMU's does.
        let _ = output.write_all(&data[..1]);
        let _ = output.flush();
    }
}

/// An `isa-debugcon` at `iobase` writing to chardev `chardev`, as QEMU's `info qtree` shows
/// it; `-debugcon` gives the device the id `debugcon`. Reads return `readback` (the port
/// value this model answers, as QEMU's default).
pub fn qdev(id: &str, iobase: u16, chardev: &str) -> crate::hw::describe::QdevDevice {
    use crate::hw::describe::{QdevDevice, QdevProp};
    QdevDevice::new("isa-debugcon")
        .with_id(id)
        .prop(QdevProp::uint("iobase", u64::from(iobase)))
        .prop(QdevProp::string("chardev", chardev))
        .prop(QdevProp::uint("readback", u64::from(READBACK)))
}

/// The debug console's port under QEMU's region name.
pub fn io_regions(iobase: u16) -> Vec<crate::hw::describe::PortRegion> {
    vec![crate::hw::describe::PortRegion::new(
        "isa-debugcon",
        iobase,
        1,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_go_out_and_reads_return_e9() {
        let sink = Sink::default();
        let port = DebugCon::new(Box::new(sink.clone()));
        port.write(0, b"S");
        port.write(0, &[b'e', 0x12]);
        let mut byte = [0u8];
        port.read(0, &mut byte);
        assert_eq!(byte[0], 0xe9);
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"Se");
    }
}
