//! The i8042 keyboard controller, as far as a headless PC needs it: its "pulse reset line"
//! command (0xFE to port 0x64) is how guests reboot.

use std::sync::Mutex;

use vm_superio::{I8042Device, Trigger};

use super::bus::PioDevice;

/// I/O base the controller is registered at; data port is +0, command/status port is +4.
pub const I8042_BASE: u16 = 0x60;
pub const I8042_PORT_COUNT: u16 = 5;

/// Calls a closure when the guest asks for a reset.
pub struct ResetTrigger(pub Box<dyn Fn() + Send + Sync>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)();
        Ok(())
    }
}

/// The controller. Ports 0x61..0x63 (speaker/NMI) are not part of it and read as unassigned.
pub struct I8042 {
    device: Mutex<I8042Device<ResetTrigger>>,
}

impl I8042 {
    pub fn new(on_reset: ResetTrigger) -> I8042 {
        I8042 {
            device: Mutex::new(I8042Device::new(on_reset)),
        }
    }
}

impl PioDevice for I8042 {
    fn read(&self, offset: u16, data: &mut [u8]) {
        match offset {
            0 | 4 => {
                let value = self.device.lock().unwrap().read(offset as u8);
                data.fill(value);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        if offset == 0 || offset == 4 {
            if let Some(&value) = data.first() {
                // The trigger is infallible; other commands are accepted and have no effect.
                let _ = self.device.lock().unwrap().write(offset as u8, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn command_fe_resets_the_machine() {
        let resets = Arc::new(AtomicUsize::new(0));
        let seen = resets.clone();
        let kbc = I8042::new(ResetTrigger(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })));
        kbc.write(4, &[0xd1]);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        kbc.write(4, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        let mut status = [0xaa];
        kbc.read(4, &mut status);
        assert_eq!(status, [0], "no data pending");
    }
}
