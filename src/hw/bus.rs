//! The port I/O bus: vCPU I/O exits are dispatched here to the device owning the port.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A device reachable through x86 `in`/`out` instructions.
///
/// Called from vCPU threads, so implementations use interior mutability. `offset` is relative
/// to the base the device was registered at.
pub trait PioDevice: Send + Sync {
    fn read(&self, offset: u16, data: &mut [u8]);
    fn write(&self, offset: u16, data: &[u8]);
}

/// Port ranges and the devices behind them.
#[derive(Default)]
pub struct PioBus {
    /// Keyed by first port; the value holds the range length.
    ranges: BTreeMap<u16, (u16, Arc<dyn PioDevice>)>,
    /// Where ports no fixed device claims go (the PCI I/O space, whose windows firmware
    /// moves at run time), called with the port itself as offset.
    fallback: Option<Arc<dyn PioDevice>>,
}

/// A registration overlapped an existing one.
#[derive(Debug, thiserror::Error)]
#[error("I/O ports {base:#x}+{len} overlap an existing device")]
pub struct PortConflict {
    pub base: u16,
    pub len: u16,
}

impl PioBus {
    pub fn new() -> PioBus {
        PioBus::default()
    }

    /// Makes `device` answer ports `base..base+len`.
    pub fn register(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<dyn PioDevice>,
    ) -> Result<(), PortConflict> {
        let end = u32::from(base) + u32::from(len);
        let overlaps_previous = self
            .ranges
            .range(..=base)
            .next_back()
            .is_some_and(|(&b, &(l, _))| u32::from(b) + u32::from(l) > u32::from(base));
        let overlaps_next = self
            .ranges
            .range(base..)
            .next()
            .is_some_and(|(&b, _)| u32::from(b) < end);
        if len == 0 || overlaps_previous || overlaps_next {
            return Err(PortConflict { base, len });
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    /// Sends every port no registered device claims to `device`, with the port as offset.
    pub fn set_fallback(&mut self, device: Arc<dyn PioDevice>) {
        self.fallback = Some(device);
    }

    fn find(&self, port: u16) -> Option<(u16, &Arc<dyn PioDevice>)> {
        let (&base, (len, device)) = self.ranges.range(..=port).next_back()?;
        (u32::from(port) < u32::from(base) + u32::from(*len)).then_some((port - base, device))
    }

    /// An `in`: unassigned ports read as all ones, as on a PC (and in QEMU).
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((offset, device)) => device.read(offset, data),
            None => match &self.fallback {
                Some(fallback) => fallback.read(port, data),
                None => data.fill(0xff),
            },
        }
    }

    /// An `out`: writes to unassigned ports are dropped, as on a PC.
    pub fn write(&self, port: u16, data: &[u8]) {
        match self.find(port) {
            Some((offset, device)) => device.write(offset, data),
            None => {
                if let Some(fallback) = &self.fallback {
                    fallback.write(port, data);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u16, Vec<u8>)>>);

    impl PioDevice for Recorder {
        fn read(&self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u16, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_relative_offsets() {
        let mut bus = PioBus::new();
        let dev = Arc::new(Recorder::default());
        bus.register(0x3f8, 8, dev.clone()).unwrap();
        bus.write(0x3fb, &[0x80]);
        let mut byte = [0u8];
        bus.read(0x3fd, &mut byte);
        assert_eq!(byte, [5]);
        assert_eq!(dev.0.lock().unwrap().as_slice(), &[(3, vec![0x80])]);
    }

    #[test]
    fn unassigned_ports_read_all_ones() {
        let bus = PioBus::new();
        let mut word = [0u8; 2];
        bus.read(0x1234, &mut word);
        assert_eq!(word, [0xff, 0xff]);
        bus.write(0x1234, &[1]);
    }

    #[test]
    fn overlapping_registrations_are_refused() {
        let mut bus = PioBus::new();
        bus.register(0x60, 1, Arc::new(Recorder::default()))
            .unwrap();
        bus.register(0x64, 1, Arc::new(Recorder::default()))
            .unwrap();
        assert!(bus
            .register(0x5f, 2, Arc::new(Recorder::default()))
            .is_err());
        assert!(bus
            .register(0x64, 1, Arc::new(Recorder::default()))
            .is_err());
        assert!(bus.register(0x61, 3, Arc::new(Recorder::default())).is_ok());
        assert!(bus
            .register(0xffff, 1, Arc::new(Recorder::default()))
            .is_ok());
    }
}
