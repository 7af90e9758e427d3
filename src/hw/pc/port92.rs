//! System control port A (0x92): bit 1 is the fast A20 gate, bit 0 a fast reset on its
//! rising edge. As with QEMU under KVM, the A20 bit is stored and read back but does not
//! mask addresses.

use std::sync::Mutex;

use crate::hw::bus::PioDevice;

pub const PORT92: u16 = 0x92;
const FAST_RESET: u8 = 0x01;

pub struct Port92 {
    value: Mutex<u8>,
    on_reset: Box<dyn Fn() + Send + Sync>,
}

impl Port92 {
    pub fn new(on_reset: Box<dyn Fn() + Send + Sync>) -> Port92 {
        Port92 {
            value: Mutex::new(0),
            on_reset,
        }
    }

    /// System reset: the reset bit clears, the A20 bit stays (QEMU's `port92_reset`).
    pub fn reset(&self) {
        *self.value.lock().unwrap() &= !FAST_RESET;
    }
}

impl PioDevice for Port92 {
    fn read(&self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
        data[0] = *self.value.lock().unwrap();
    }

    fn write(&self, _offset: u16, data: &[u8]) {
        let mut value = self.value.lock().unwrap();
        let old = *value;
        *value = data[0];
        if data[0] & FAST_RESET != 0 && old & FAST_RESET == 0 {
            drop(value);
            (self.on_reset)();
        }
    }
}

impl Port92 {
    /// System control port A as QEMU's `info qtree` shows it, with its A20 output.
    pub fn qdev(&self) -> crate::hw::describe::QdevDevice {
        crate::hw::describe::QdevDevice::new("port92").gpio_out("a20", 1)
    }
}

/// Port 0x92 under QEMU's region name.
pub fn io_regions() -> Vec<crate::hw::describe::PortRegion> {
    vec![crate::hw::describe::PortRegion::new("port92", PORT92, 1)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a20_reads_back_and_reset_fires_on_the_rising_edge() {
        let resets = Arc::new(AtomicUsize::new(0));
        let seen = resets.clone();
        let port = Port92::new(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let mut byte = [0xffu8];
        port.read(0, &mut byte);
        assert_eq!(byte[0], 0);
        port.write(0, &[0x02]);
        port.read(0, &mut byte);
        assert_eq!(byte[0], 0x02);
        port.write(0, &[0x03]);
        port.write(0, &[0x03]);
        assert_eq!(resets.load(Ordering::SeqCst), 1, "only the edge resets");
        port.reset();
        port.read(0, &mut byte);
        assert_eq!(byte[0], 0x02);
        port.write(0, &[0x03]);
        assert_eq!(resets.load(Ordering::SeqCst), 2);
    }
}
