//! Base address registers: how a function declares its I/O and memory windows so firmware
//! can size them (write all ones, read back the size mask) and place them, and where they
//! are decoded once the command register enables them. I/O windows are mapped into the
//! movable [`IoSpace`]; memory windows are decoded for the device models to map.

use std::sync::{Arc, Mutex};

use super::config::{ConfigSpace, COMMAND};
use super::IoSpace;
use crate::hw::bus::PioDevice;

/// The first BAR register; BAR n is at 0x10 + 4n.
const BAR0: usize = 0x10;
const BAR_COUNT: usize = 6;
const COMMAND_IO: u16 = 1 << 0;
const COMMAND_MEMORY: u16 = 1 << 1;
/// Type bits in the low nibble of a BAR.
const BAR_IO: u32 = 0x1;
const BAR_MEM_64: u32 = 0x4;
const BAR_MEM_PREFETCH: u32 = 0x8;
/// The PC has 64 Ki ports.
const IO_SPACE_END: u64 = 0x1_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Memory32 {
        prefetchable: bool,
    },
    /// Takes this BAR register and the next.
    Memory64 {
        prefetchable: bool,
    },
}

/// One BAR of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: usize,
    pub kind: BarKind,
    /// Bytes; a power of two, at least 4 for I/O and 16 for memory.
    pub size: u64,
}

/// A BAR a device model declared wrongly (a programming error, reported at build time).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid PCI BAR {index}: {reason}")]
pub struct BarError {
    pub index: usize,
    pub reason: &'static str,
}

impl Bar {
    fn offset(&self) -> usize {
        BAR0 + 4 * self.index
    }

    fn type_bits(&self) -> u32 {
        match self.kind {
            BarKind::Io => BAR_IO,
            BarKind::Memory32 { prefetchable } => {
                if prefetchable {
                    BAR_MEM_PREFETCH
                } else {
                    0
                }
            }
            BarKind::Memory64 { prefetchable } => {
                BAR_MEM_64 | if prefetchable { BAR_MEM_PREFETCH } else { 0 }
            }
        }
    }

    /// Declares the BAR in `config`: its type bits read-only, its address bits writable.
    pub fn declare(&self, config: &mut ConfigSpace) -> Result<(), BarError> {
        let fail = |reason| {
            Err(BarError {
                index: self.index,
                reason,
            })
        };
        let wide = matches!(self.kind, BarKind::Memory64 { .. });
        if self.index >= BAR_COUNT || (wide && self.index + 1 >= BAR_COUNT) {
            return fail("no such BAR register");
        }
        if !self.size.is_power_of_two() {
            return fail("size is not a power of two");
        }
        let (min, max) = match self.kind {
            BarKind::Io => (4, 256),
            BarKind::Memory32 { .. } => (16, 1 << 31),
            BarKind::Memory64 { .. } => (16, 1 << 62),
        };
        if self.size < min || self.size > max {
            return fail("size out of range for its kind");
        }
        let mask = !(self.size - 1);
        config.set_u32(self.offset(), self.type_bits());
        // The type bits (bits 0-1 of an I/O BAR, 0-3 of a memory BAR) never change.
        let type_mask = if self.kind == BarKind::Io { 0x3 } else { 0xf };
        let low = (mask as u32) & !type_mask;
        config.set_writable(self.offset(), &low.to_le_bytes());
        if wide {
            config.set_u32(self.offset() + 4, 0);
            config.set_writable(self.offset() + 4, &((mask >> 32) as u32).to_le_bytes());
        }
        Ok(())
    }

    /// Where the BAR is decoded now: enabled in the command register and placed by
    /// firmware (not 0, not past the address space, not wrapping).
    pub fn address(&self, config: &ConfigSpace) -> Option<u64> {
        let command = config.u16(COMMAND);
        let low = u64::from(config.u32(self.offset()));
        let (enabled, base, end_limit) = match self.kind {
            BarKind::Io => (command & COMMAND_IO != 0, low & !0x3, IO_SPACE_END),
            BarKind::Memory32 { .. } => (command & COMMAND_MEMORY != 0, low & !0xf, 1 << 32),
            BarKind::Memory64 { .. } => {
                let high = u64::from(config.u32(self.offset() + 4));
                (
                    command & COMMAND_MEMORY != 0,
                    (high << 32) | (low & !0xf),
                    u64::MAX,
                )
            }
        };
        let base = base & !(self.size - 1);
        let last = base.checked_add(self.size - 1)?;
        (enabled && base != 0 && last < end_limit && last != u64::MAX).then_some(base)
    }
}

/// Keeps an I/O BAR's device mapped in the I/O space where firmware put it.
pub struct IoBarWindow {
    bar: Bar,
    io_space: Arc<IoSpace>,
    device: Arc<dyn PioDevice>,
    mapped_at: Mutex<Option<u16>>,
}

impl IoBarWindow {
    pub fn new(bar: Bar, io_space: Arc<IoSpace>, device: Arc<dyn PioDevice>) -> IoBarWindow {
        IoBarWindow {
            bar,
            io_space,
            device,
            mapped_at: Mutex::new(None),
        }
    }

    /// Call after every configuration write and reset.
    pub fn update(&self, config: &ConfigSpace) {
        let wanted = self.bar.address(config).map(|a| a as u16);
        let mut mapped = self.mapped_at.lock().unwrap();
        if *mapped == wanted {
            return;
        }
        if let Some(old) = mapped.take() {
            self.io_space.unmap(old);
        }
        if let Some(base) = wanted {
            // A window overlapping another stays off, as the decoders would conflict.
            if self
                .io_space
                .map(base, self.bar.size as u16, self.device.clone())
                .is_ok()
            {
                *mapped = Some(base);
            }
        }
    }

    /// Where the window answers now.
    pub fn base(&self) -> Option<u16> {
        *self.mapped_at.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::pci::config::Identity;

    fn space() -> ConfigSpace {
        ConfigSpace::new(Identity {
            vendor: 0x8086,
            device: 0x7010,
            revision: 0,
            class: 0x01_01_80,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
            header_type: 0,
        })
    }

    fn size_probe(config: &mut ConfigSpace, offset: u8) -> u32 {
        let saved = config.read_dword(offset);
        config.write_dword(offset, u32::MAX, u32::MAX);
        let probe = config.read_dword(offset);
        config.write_dword(offset, saved, u32::MAX);
        probe
    }

    #[test]
    fn firmware_sizing_reads_the_size_mask_and_type_bits() {
        let mut config = space();
        let io = Bar {
            index: 4,
            kind: BarKind::Io,
            size: 16,
        };
        io.declare(&mut config).unwrap();
        let mem = Bar {
            index: 0,
            kind: BarKind::Memory64 { prefetchable: true },
            size: 0x4000,
        };
        mem.declare(&mut config).unwrap();
        assert_eq!(config.read_dword(0x20), 0x1);
        assert_eq!(size_probe(&mut config, 0x20), 0xffff_fff1);
        assert_eq!(size_probe(&mut config, 0x10), 0xffff_c00c);
        assert_eq!(size_probe(&mut config, 0x14), 0xffff_ffff);
        assert_eq!(config.read_dword(0x10), 0x0c, "probe restored");
    }

    #[test]
    fn addresses_decode_only_when_enabled_and_placed() {
        let mut config = space();
        let io = Bar {
            index: 4,
            kind: BarKind::Io,
            size: 16,
        };
        io.declare(&mut config).unwrap();
        config.write_dword(0x20, 0xc001, u32::MAX);
        assert_eq!(io.address(&config), None, "I/O decoding off");
        config.write_dword(0x04, 0x1, 0xffff);
        assert_eq!(io.address(&config), Some(0xc000));
        config.write_dword(0x20, 0xfff8, u32::MAX);
        assert_eq!(
            io.address(&config),
            Some(0xfff0),
            "aligned down by the mask"
        );
        config.write_dword(0x20, 0x1_fff0, u32::MAX);
        assert_eq!(io.address(&config), None, "past port 0xffff");
        let mem = Bar {
            index: 0,
            kind: BarKind::Memory32 {
                prefetchable: false,
            },
            size: 0x1000,
        };
        mem.declare(&mut config).unwrap();
        config.write_dword(0x10, 0xfebf_0000, u32::MAX);
        assert_eq!(mem.address(&config), None, "memory decoding off");
        config.write_dword(0x04, 0x3, 0xffff);
        assert_eq!(mem.address(&config), Some(0xfebf_0000));
    }

    #[test]
    fn bad_declarations_are_refused() {
        let mut config = space();
        let bad = |index, kind, size| Bar { index, kind, size }.declare(&mut config.clone());
        assert!(bad(6, BarKind::Io, 16).is_err());
        assert!(bad(
            5,
            BarKind::Memory64 {
                prefetchable: false
            },
            16
        )
        .is_err());
        assert!(bad(0, BarKind::Io, 24).is_err());
        assert!(bad(0, BarKind::Io, 2).is_err());
        assert!(bad(
            0,
            BarKind::Memory32 {
                prefetchable: false
            },
            8
        )
        .is_err());
        assert!(Bar {
            index: 1,
            kind: BarKind::Io,
            size: 8
        }
        .declare(&mut config)
        .is_ok());
    }

    struct Marker;

    impl PioDevice for Marker {
        fn read(&self, offset: u16, data: &mut [u8]) {
            data.fill(0x50 + offset as u8);
        }
        fn write(&self, _offset: u16, _data: &[u8]) {}
    }

    #[test]
    fn io_windows_follow_the_bar() {
        let mut config = space();
        let bar = Bar {
            index: 4,
            kind: BarKind::Io,
            size: 16,
        };
        bar.declare(&mut config).unwrap();
        let io_space = Arc::new(IoSpace::new());
        let window = IoBarWindow::new(bar, io_space.clone(), Arc::new(Marker));
        let read = |port| {
            let mut byte = [0u8];
            io_space.read(port, &mut byte);
            byte[0]
        };
        config.write_dword(0x20, 0xc000, u32::MAX);
        config.write_dword(0x04, 0x1, 0xffff);
        window.update(&config);
        assert_eq!(window.base(), Some(0xc000));
        assert_eq!(read(0xc002), 0x52);
        config.write_dword(0x20, 0xd000, u32::MAX);
        window.update(&config);
        assert_eq!(read(0xc002), 0xff);
        assert_eq!(read(0xd00f), 0x5f);
        config.write_dword(0x04, 0x0, 0xffff);
        window.update(&config);
        assert_eq!(window.base(), None);
        assert_eq!(read(0xd00f), 0xff);
    }
}
