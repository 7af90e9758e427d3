//! Port windows that move at run time: firmware decides where PCI I/O BARs and chipset
//! blocks (the PIIX4 PM base) live. The fixed [`crate::hw::bus::PioBus`] hands every port no
//! fixed device claims to this space, which looks the port up among the current windows.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::hw::bus::{PioDevice, PortConflict};

/// A window: its length and the device answering it.
type Window = (u16, Arc<dyn PioDevice>);

/// The movable windows, keyed by first port.
#[derive(Default)]
pub struct IoSpace {
    windows: RwLock<BTreeMap<u16, Window>>,
}

impl IoSpace {
    pub fn new() -> IoSpace {
        IoSpace::default()
    }

    /// Makes `device` answer `base..base+len` until [`IoSpace::unmap`]. Overlapping another
    /// window is refused: the caller (a register write by the guest) leaves its window off.
    pub fn map(&self, base: u16, len: u16, device: Arc<dyn PioDevice>) -> Result<(), PortConflict> {
        let mut windows = self.windows.write().unwrap();
        let end = u32::from(base) + u32::from(len);
        let overlaps_previous = windows
            .range(..=base)
            .next_back()
            .is_some_and(|(&b, &(l, _))| u32::from(b) + u32::from(l) > u32::from(base));
        let overlaps_next = windows
            .range(base..)
            .next()
            .is_some_and(|(&b, _)| u32::from(b) < end);
        if len == 0 || end > 0x1_0000 || overlaps_previous || overlaps_next {
            return Err(PortConflict { base, len });
        }
        windows.insert(base, (len, device));
        Ok(())
    }

    /// Removes the window starting at `base`, if any.
    pub fn unmap(&self, base: u16) {
        self.windows.write().unwrap().remove(&base);
    }

    fn find(&self, port: u16) -> Option<(u16, Arc<dyn PioDevice>)> {
        let windows = self.windows.read().unwrap();
        let (&base, (len, device)) = windows.range(..=port).next_back()?;
        (u32::from(port) < u32::from(base) + u32::from(*len)).then(|| (port - base, device.clone()))
    }
}

/// Registered as the fixed bus's fallback: `offset` is the port itself.
impl PioDevice for IoSpace {
    fn read(&self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((offset, device)) => device.read(offset, data),
            None => data.fill(0xff),
        }
    }

    fn write(&self, port: u16, data: &[u8]) {
        if let Some((offset, device)) = self.find(port) {
            device.write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<u16>>);

    impl PioDevice for Recorder {
        fn read(&self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&self, offset: u16, _data: &[u8]) {
            self.0.lock().unwrap().push(offset);
        }
    }

    #[test]
    fn windows_move_and_unmapped_ports_float() {
        let space = IoSpace::new();
        let device = Arc::new(Recorder::default());
        space.map(0x600, 0x40, device.clone()).unwrap();
        let mut byte = [0u8];
        space.read(0x608, &mut byte);
        assert_eq!(byte[0], 9);
        assert!(space.map(0x63f, 1, device.clone()).is_err());
        space.unmap(0x600);
        space.read(0x608, &mut byte);
        assert_eq!(byte[0], 0xff);
        space.map(0xb000, 0x40, device.clone()).unwrap();
        space.write(0xb004, &[1]);
        assert_eq!(device.0.lock().unwrap().as_slice(), &[4]);
        assert!(space.map(0xfff0, 0x40, device).is_err(), "past port 0xffff");
    }
}
