//! The MMIO bus: guest physical ranges outside RAM that devices answer (PCI memory BARs such
//! as MSI-X tables). vCPU MMIO exits are dispatched here; ranges can be mapped and unmapped
//! while the guest runs, because firmware moves BARs.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A device answering memory accesses. `offset` is relative to where it is mapped.
pub trait MmioDevice: Send + Sync {
    fn read(&self, offset: u64, data: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
}

/// A mapping overlapped an existing one, or was empty or wrapped around.
#[derive(Debug, thiserror::Error)]
#[error("MMIO range {base:#x}+{len:#x} overlaps an existing mapping or is invalid")]
pub struct MmioConflict {
    pub base: u64,
    pub len: u64,
}

/// Mapped ranges, keyed by base address; the value holds the length.
type RangeMap = BTreeMap<u64, (u64, Arc<dyn MmioDevice>)>;

#[derive(Default)]
pub struct MmioBus {
    ranges: RwLock<RangeMap>,
}

impl MmioBus {
    pub fn new() -> MmioBus {
        MmioBus::default()
    }

    /// Makes `device` answer `base..base+len`.
    pub fn map(
        &self,
        base: u64,
        len: u64,
        device: Arc<dyn MmioDevice>,
    ) -> Result<(), MmioConflict> {
        let conflict = MmioConflict { base, len };
        let end = base.checked_add(len).ok_or(MmioConflict { base, len })?;
        if len == 0 {
            return Err(conflict);
        }
        let mut ranges = self.ranges.write().unwrap();
        let overlaps_previous = ranges
            .range(..=base)
            .next_back()
            .is_some_and(|(&b, &(l, _))| b + l > base);
        let overlaps_next = ranges.range(base..).next().is_some_and(|(&b, _)| b < end);
        if overlaps_previous || overlaps_next {
            return Err(conflict);
        }
        ranges.insert(base, (len, device));
        Ok(())
    }

    /// Removes the mapping starting at `base`; true if there was one.
    pub fn unmap(&self, base: u64) -> bool {
        self.ranges.write().unwrap().remove(&base).is_some()
    }

    fn find(&self, addr: u64) -> Option<(u64, Arc<dyn MmioDevice>)> {
        let ranges = self.ranges.read().unwrap();
        let (&base, (len, device)) = ranges.range(..=addr).next_back()?;
        (addr - base < *len).then(|| (addr - base, device.clone()))
    }

    /// A read; unassigned memory reads as zeroes, as on QEMU.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((offset, device)) => device.read(offset, data),
            None => data.fill(0),
        }
    }

    /// A write; writes to unassigned memory are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((offset, device)) = self.find(addr) {
            device.write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, Vec<u8>)>>);

    impl MmioDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let bus = MmioBus::new();
        let dev = Arc::new(Recorder::default());
        bus.map(0xfeb0_0000, 0x1000, dev.clone()).unwrap();
        let mut b = [0u8; 4];
        bus.read(0xfeb0_0010, &mut b);
        assert_eq!(b, [0x10; 4]);
        bus.write(0xfeb0_0ffc, &[1, 2, 3, 4]);
        assert_eq!(dev.0.lock().unwrap()[0], (0xffc, vec![1, 2, 3, 4]));
        bus.read(0xfeb0_1000, &mut b);
        assert_eq!(b, [0; 4], "past the end is unassigned");
    }

    #[test]
    fn overlaps_are_refused_and_unmapping_frees_the_range() {
        let bus = MmioBus::new();
        let dev = Arc::new(Recorder::default());
        bus.map(0x1000, 0x1000, dev.clone()).unwrap();
        assert!(bus.map(0x1800, 0x1000, dev.clone()).is_err());
        assert!(bus.map(0x0800, 0x1000, dev.clone()).is_err());
        assert!(bus.map(u64::MAX - 1, 4, dev.clone()).is_err());
        assert!(bus.map(0x3000, 0, dev.clone()).is_err());
        assert!(bus.unmap(0x1000));
        bus.map(0x1800, 0x1000, dev).unwrap();
    }
}
