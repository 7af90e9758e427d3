//! QEMU's firmware configuration device (fw_cfg) on x86: selector port 0x510, data port
//! 0x511 and the DMA interface at 0x514. SeaBIOS learns the machine from it (RAM, CPUs,
//! memory map, boot order, files).
//!
//! Items are fixed once the machine is built. Files are listed in the directory sorted by
//! name, with selectors from 0x20 in that order, as QEMU 7.2 does for current machine types.

use std::collections::BTreeMap;
use std::sync::Mutex;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::hw::bus::PioDevice;

pub const FW_CFG_IO_BASE: u16 = 0x510;
/// Selector (2 ports, 0x510-0x511 overlap the data port at 0x511), DMA address at 0x514-0x51b.
pub const FW_CFG_IO_LEN: u16 = 0x0c;
const DATA_OFFSET: u16 = 1;
const DMA_OFFSET: u16 = 4;

/// Well-known selectors.
pub const FW_CFG_SIGNATURE: u16 = 0x00;
pub const FW_CFG_ID: u16 = 0x01;
pub const FW_CFG_UUID: u16 = 0x02;
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
pub const FW_CFG_NOGRAPHIC: u16 = 0x04;
pub const FW_CFG_NB_CPUS: u16 = 0x05;
pub const FW_CFG_MACHINE_ID: u16 = 0x06;
pub const FW_CFG_NUMA: u16 = 0x0d;
pub const FW_CFG_BOOT_MENU: u16 = 0x0e;
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
pub const FW_CFG_FILE_DIR: u16 = 0x19;
const FW_CFG_FILE_FIRST: u16 = 0x20;
/// x86-specific selectors (the "arch local" bit).
pub const FW_CFG_ACPI_TABLES: u16 = 0x8000;
pub const FW_CFG_SMBIOS_ENTRIES: u16 = 0x8001;
pub const FW_CFG_IRQ0_OVERRIDE: u16 = 0x8002;
/// Selector bit asking for write access; items here are read-only.
const FW_CFG_WRITE_CHANNEL: u16 = 0x4000;

/// ID bits: the port interface and the DMA interface.
const ID_TRADITIONAL: u32 = 1 << 0;
const ID_DMA: u32 = 1 << 1;
/// What reading the DMA address register returns: "QEMU CFG", big-endian.
const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;
/// File names are NUL-padded to 56 bytes in the directory.
const FILE_NAME_LEN: usize = 56;

// DMA control bits.
const DMA_CTL_ERROR: u32 = 0x01;
const DMA_CTL_READ: u32 = 0x02;
const DMA_CTL_SKIP: u32 = 0x04;
const DMA_CTL_SELECT: u32 = 0x08;
const DMA_CTL_WRITE: u32 = 0x10;

/// Items and files collected before the device is built.
#[derive(Default)]
pub struct FwCfgBuilder {
    items: BTreeMap<u16, Vec<u8>>,
    files: BTreeMap<String, Vec<u8>>,
}

impl FwCfgBuilder {
    pub fn new() -> FwCfgBuilder {
        FwCfgBuilder::default()
    }

    pub fn add_bytes(&mut self, key: u16, data: Vec<u8>) -> &mut Self {
        self.items.insert(key, data);
        self
    }

    pub fn add_u16(&mut self, key: u16, value: u16) -> &mut Self {
        self.add_bytes(key, value.to_le_bytes().to_vec())
    }

    pub fn add_u32(&mut self, key: u16, value: u32) -> &mut Self {
        self.add_bytes(key, value.to_le_bytes().to_vec())
    }

    pub fn add_u64(&mut self, key: u16, value: u64) -> &mut Self {
        self.add_bytes(key, value.to_le_bytes().to_vec())
    }

    /// A named file; names longer than the directory allows are a programming error.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> &mut Self {
        assert!(
            name.len() < FILE_NAME_LEN,
            "fw_cfg file name too long: {name}"
        );
        self.files.insert(name.to_string(), data);
        self
    }

    /// The device, with signature, id and file directory added. `memory` is where DMA
    /// descriptors and buffers live.
    pub fn build(mut self, memory: GuestMemoryMmap) -> FwCfg {
        self.items.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        self.items
            .insert(FW_CFG_ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        let mut directory = (self.files.len() as u32).to_be_bytes().to_vec();
        for (index, (name, data)) in self.files.into_iter().enumerate() {
            let key = FW_CFG_FILE_FIRST + index as u16;
            directory.extend_from_slice(&(data.len() as u32).to_be_bytes());
            directory.extend_from_slice(&key.to_be_bytes());
            directory.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            directory.extend_from_slice(&field);
            self.items.insert(key, data);
        }
        self.items.insert(FW_CFG_FILE_DIR, directory);
        FwCfg {
            items: self.items,
            memory,
            state: Mutex::new(State::default()),
        }
    }
}

#[derive(Default)]
struct State {
    selected: u16,
    offset: usize,
    /// High half of the DMA descriptor address, written first.
    dma_high: u32,
}

/// The fw_cfg device.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    memory: GuestMemoryMmap,
    state: Mutex<State>,
}

impl FwCfg {
    fn item(&self, key: u16) -> &[u8] {
        self.items
            .get(&(key & !FW_CFG_WRITE_CHANNEL))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Runs the DMA descriptor at `address` and writes its completion status back.
    fn run_dma(&self, state: &mut State, address: u64) {
        let descriptor = GuestAddress(address);
        let mut raw = [0u8; 16];
        if self.memory.read_slice(&mut raw, descriptor).is_err() {
            // No descriptor to report an error into: nothing happens, as on QEMU.
            return;
        }
        let control = u32::from_be_bytes(raw[0..4].try_into().expect("4 bytes"));
        let length = u32::from_be_bytes(raw[4..8].try_into().expect("4 bytes")) as usize;
        let target = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
        if control & DMA_CTL_SELECT != 0 {
            state.selected = (control >> 16) as u16;
            state.offset = 0;
        }
        let mut status = 0;
        if control & DMA_CTL_WRITE != 0 {
            // No item is writable.
            status = DMA_CTL_ERROR;
        } else if control & (DMA_CTL_READ | DMA_CTL_SKIP) != 0 {
            let data = self.item(state.selected);
            let available = data.len().saturating_sub(state.offset);
            let copied = available.min(length);
            if control & DMA_CTL_READ != 0 {
                let start = state.offset.min(data.len());
                let target = GuestAddress(target);
                if self
                    .write_guest(target, &data[start..start + copied], length)
                    .is_err()
                {
                    status = DMA_CTL_ERROR;
                }
            }
            state.offset = state.offset.saturating_add(length);
        }
        let _ = self.memory.write_slice(&status.to_be_bytes(), descriptor);
    }
}

impl FwCfg {
    /// Writes `data` at `target`, then zeroes up to `length` bytes in all (past the end of
    /// an item the guest reads zeroes), a page at a time: `length` is guest-chosen.
    fn write_guest(
        &self,
        target: GuestAddress,
        data: &[u8],
        length: usize,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        self.memory.write_slice(data, target)?;
        let zeroes = [0u8; 4096];
        let mut done = data.len();
        while done < length {
            let chunk = (length - done).min(zeroes.len());
            let at = target
                .checked_add(done as u64)
                .ok_or(vm_memory::GuestMemoryError::InvalidGuestAddress(target))?;
            self.memory.write_slice(&zeroes[..chunk], at)?;
            done += chunk;
        }
        Ok(())
    }
}

impl PioDevice for FwCfg {
    fn read(&self, offset: u16, data: &mut [u8]) {
        let mut state = self.state.lock().unwrap();
        match offset {
            DATA_OFFSET => {
                // The data port is a byte port; wider reads return consecutive bytes.
                for byte in data.iter_mut() {
                    let item = self.item(state.selected);
                    *byte = item.get(state.offset).copied().unwrap_or(0);
                    state.offset = state.offset.saturating_add(1);
                }
            }
            DMA_OFFSET..=11 => {
                let signature = DMA_SIGNATURE.to_be_bytes();
                let start = usize::from(offset - DMA_OFFSET);
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = signature.get(start + i).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        match (offset, data.len()) {
            (0, 2) => {
                state.selected = u16::from_le_bytes([data[0], data[1]]);
                state.offset = 0;
            }
            // Big-endian address: high half at 0x514, low half at 0x518 starts the transfer.
            (DMA_OFFSET, 4) => {
                state.dma_high = u32::from_be_bytes(data.try_into().expect("4 bytes"));
            }
            (8, 4) => {
                let low = u32::from_be_bytes(data.try_into().expect("4 bytes"));
                let address = (u64::from(state.dma_high) << 32) | u64::from(low);
                state.dma_high = 0;
                self.run_dma(&mut state, address);
            }
            // The data port is read-only in QEMU 7.2; other widths are not decoded.
            _ => {}
        }
    }
}

/// The `etc/e820` file: packed little-endian (address, length, type) entries.
pub fn e820_file(entries: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (address, length, kind) in entries {
        data.extend_from_slice(&address.to_le_bytes());
        data.extend_from_slice(&length.to_le_bytes());
        data.extend_from_slice(&kind.to_le_bytes());
    }
    data
}

/// The fw_cfg device as QEMU's `info qtree` shows it (I/O ports with the DMA interface).
pub fn qdev() -> crate::hw::describe::QdevDevice {
    use crate::hw::describe::{QdevDevice, QdevProp};
    QdevDevice::new("fw_cfg_io")
        .prop(QdevProp::bool("dma_enabled", true))
        .prop(QdevProp::uint("x-file-slots", 32))
        .prop(QdevProp::bool("acpi-mr-restore", true))
}

/// The selector/data ports and the DMA address register under QEMU's region names.
pub fn io_regions() -> Vec<crate::hw::describe::PortRegion> {
    use crate::hw::describe::PortRegion;
    vec![
        PortRegion::new("fwcfg", FW_CFG_IO_BASE, 2),
        PortRegion::new("fwcfg.dma", FW_CFG_IO_BASE + 4, 8),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> FwCfg {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut builder = FwCfgBuilder::new();
        builder
            .add_u16(FW_CFG_NB_CPUS, 2)
            .add_file("etc/boot-fail-wait", (-1i32).to_le_bytes().to_vec())
            .add_file("bootorder", Vec::new());
        builder.build(memory)
    }

    fn select(dev: &FwCfg, key: u16) {
        dev.write(0, &key.to_le_bytes());
    }

    fn read_bytes(dev: &FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                dev.read(DATA_OFFSET, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn signature_id_and_items_through_the_data_port() {
        let dev = device();
        select(&dev, FW_CFG_SIGNATURE);
        assert_eq!(read_bytes(&dev, 5), b"QEMU\0");
        select(&dev, FW_CFG_ID);
        assert_eq!(read_bytes(&dev, 4), [3, 0, 0, 0]);
        select(&dev, FW_CFG_NB_CPUS);
        assert_eq!(read_bytes(&dev, 2), [2, 0]);
        select(&dev, 0x1234);
        assert_eq!(read_bytes(&dev, 2), [0, 0], "unknown items read as zeroes");
    }

    #[test]
    fn file_directory_is_sorted_big_endian() {
        let dev = device();
        select(&dev, FW_CFG_FILE_DIR);
        let dir = read_bytes(&dev, 4 + 2 * 64);
        assert_eq!(&dir[0..4], &[0, 0, 0, 2]);
        assert_eq!(&dir[4..8], &[0, 0, 0, 0], "bootorder is empty");
        assert_eq!(&dir[8..10], &[0, 0x20]);
        assert_eq!(&dir[12..21], b"bootorder");
        assert_eq!(&dir[68..72], &[0, 0, 0, 4]);
        assert_eq!(&dir[72..74], &[0, 0x21]);
        assert_eq!(&dir[76..94], b"etc/boot-fail-wait");
        select(&dev, 0x21);
        assert_eq!(read_bytes(&dev, 4), [0xff; 4]);
    }

    #[test]
    fn dma_select_read_skip_and_errors() {
        let dev = device();
        let mut dma_port = [0u8; 8];
        dev.read(DMA_OFFSET, &mut dma_port);
        assert_eq!(&dma_port, b"QEMU CFG");
        let run = |control: u32, length: u32, target: u64| {
            let mut desc = Vec::new();
            desc.extend_from_slice(&control.to_be_bytes());
            desc.extend_from_slice(&length.to_be_bytes());
            desc.extend_from_slice(&target.to_be_bytes());
            dev.memory.write_slice(&desc, GuestAddress(0x1000)).unwrap();
            dev.write(DMA_OFFSET, &0u32.to_be_bytes());
            dev.write(8, &0x1000u32.to_be_bytes());
            let mut status = [0u8; 4];
            dev.memory
                .read_slice(&mut status, GuestAddress(0x1000))
                .unwrap();
            u32::from_be_bytes(status)
        };
        // Select the signature, skip one byte, read five (the last two past the end).
        assert_eq!(run(DMA_CTL_SELECT | DMA_CTL_SKIP, 1, 0), 0);
        dev.memory
            .write_slice(&[0xaa; 8], GuestAddress(0x2000))
            .unwrap();
        assert_eq!(run(DMA_CTL_READ, 5, 0x2000), 0);
        let mut buf = [0u8; 6];
        dev.memory
            .read_slice(&mut buf, GuestAddress(0x2000))
            .unwrap();
        assert_eq!(&buf, b"EMU\0\0\xaa");
        // A buffer outside guest memory and a write both report an error.
        assert_eq!(
            run(DMA_CTL_SELECT | DMA_CTL_READ, 4, 0x1_0000_0000),
            DMA_CTL_ERROR
        );
        assert_eq!(run(DMA_CTL_WRITE, 4, 0x2000), DMA_CTL_ERROR);
        // A descriptor outside guest memory is ignored, and the port keeps working.
        dev.write(DMA_OFFSET, &1u32.to_be_bytes());
        dev.write(8, &0u32.to_be_bytes());
        select(&dev, FW_CFG_SIGNATURE);
        assert_eq!(read_bytes(&dev, 1), b"Q");
    }
}
