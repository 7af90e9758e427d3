//! The `pc` chipset driven through its I/O ports the way firmware and drivers do: PCI
//! enumeration by configuration mechanism #1 finds QEMU 7.2's functions with their ids, the
//! PM block follows PMBA, PAM writes reach the shadow control, fw_cfg and CMOS answer, and
//! guest garbage in every register neither panics nor changes what is read-only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmscope::hw::bus::PioBus;
use vmscope::hw::pc::chipset::{Chipset, ChipsetParts};
use vmscope::hw::pc::fw_cfg::{FwCfgBuilder, FW_CFG_NB_CPUS};
use vmscope::hw::pc::pam::{PamAccess, ShadowControl, SEGMENT_COUNT};
use vmscope::hw::pc::rtc::{CmosFacts, Rtc};
use vmscope::hw::pc::rtc_clock::RtcTimeSource;
use vmscope::hw::pci::config::{ConfigSpace, Identity};
use vmscope::hw::pci::{devfn, PciFunction};
use vmscope::hw::pm::PowerManagement;

#[derive(Default)]
struct ShadowLog(Mutex<Vec<[PamAccess; SEGMENT_COUNT]>>);

impl ShadowControl for ShadowLog {
    fn apply(&self, access: &[PamAccess; SEGMENT_COUNT]) {
        self.0.lock().unwrap().push(*access);
    }
}

struct Pc {
    bus: PioBus,
    chipset: Chipset,
    shadow: Arc<ShadowLog>,
    resets: Arc<AtomicUsize>,
    poweroffs: Arc<AtomicUsize>,
}

fn pc() -> Pc {
    pc_with(Vec::new()).unwrap()
}

fn pc_with(
    extra_functions: Vec<(u8, Arc<dyn PciFunction>)>,
) -> Result<Pc, vmscope::hw::pc::chipset::ChipsetError> {
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut fw_cfg = FwCfgBuilder::new();
    fw_cfg.add_u16(FW_CFG_NB_CPUS, 2);
    let shadow = Arc::new(ShadowLog::default());
    let resets = Arc::new(AtomicUsize::new(0));
    let poweroffs = Arc::new(AtomicUsize::new(0));
    let (r1, r2, p) = (resets.clone(), resets.clone(), poweroffs.clone());
    let mut bus = PioBus::new();
    let chipset = Chipset::install(
        &mut bus,
        ChipsetParts {
            ram_below_4g: 128 << 20,
            initial_pam: [0; 7],
            shadow: shadow.clone(),
            pm_block: Arc::new(PowerManagement::new(Box::new(move || {
                p.fetch_add(1, Ordering::SeqCst);
            }))),
            pm_preset_base: None,
            on_reset: Box::new(move || {
                r1.fetch_add(1, Ordering::SeqCst);
            }),
            on_fast_reset: Box::new(move || {
                r2.fetch_add(1, Ordering::SeqCst);
            }),
            fw_cfg: fw_cfg.build(memory),
            rtc: Arc::new(Rtc::new(
                &CmosFacts {
                    ram_below_4g: 128 << 20,
                    ram_above_4g: 0,
                    cpus: 2,
                    boot_order: "cad".into(),
                },
                Box::new(|| {}),
                RtcTimeSource::new(Default::default(), Default::default()),
            )),
            extra_functions,
        },
    )?;
    Ok(Pc {
        bus,
        chipset,
        shadow,
        resets,
        poweroffs,
    })
}

/// A function with a fixed identity, standing in for a device model.
struct Plain(Mutex<ConfigSpace>);

impl PciFunction for Plain {
    fn config_read(&self, offset: u8) -> u32 {
        self.0.lock().unwrap().read_dword(offset)
    }
    fn config_write(&self, offset: u8, value: u32, mask: u32) {
        self.0.lock().unwrap().write_dword(offset, value, mask);
    }
}

fn plain(device: u16) -> Arc<dyn PciFunction> {
    Arc::new(Plain(Mutex::new(ConfigSpace::new(Identity {
        vendor: 0x1af4,
        device,
        revision: 0,
        class: 0x01_00_00,
        subsystem_vendor: 0x1af4,
        subsystem: 0x0002,
        header_type: 0,
    }))))
}

#[test]
fn device_models_join_the_bus_in_free_slots_only() {
    let pc = pc_with(vec![(devfn(3, 0), plain(0x1001))]).unwrap();
    assert_eq!(pc.config_read(3, 0, 0), 0x1001_1af4);
    let taken = pc_with(vec![(devfn(1, 0), plain(0x1001))]).err().unwrap();
    assert_eq!(taken.to_string(), "PCI slot 01.0 is taken");
    // Its INTA# goes where firmware routes PIRQD (slot 3, pin 1).
    pc.config_write(1, 0, 0x60, 0x0b0b_0a0a);
    assert_eq!(pc.chipset.piix3.intx_irq(3, 1), Some(11));
}

impl Pc {
    fn outl(&self, port: u16, value: u32) {
        self.bus.write(port, &value.to_le_bytes());
    }
    fn outw(&self, port: u16, value: u16) {
        self.bus.write(port, &value.to_le_bytes());
    }
    fn outb(&self, port: u16, value: u8) {
        self.bus.write(port, &[value]);
    }
    fn inl(&self, port: u16) -> u32 {
        let mut data = [0u8; 4];
        self.bus.read(port, &mut data);
        u32::from_le_bytes(data)
    }
    fn inw(&self, port: u16) -> u16 {
        let mut data = [0u8; 2];
        self.bus.read(port, &mut data);
        u16::from_le_bytes(data)
    }
    fn inb(&self, port: u16) -> u8 {
        let mut data = [0u8];
        self.bus.read(port, &mut data);
        data[0]
    }
    fn config_read(&self, device: u32, function: u32, offset: u32) -> u32 {
        self.outl(0xcf8, 0x8000_0000 | device << 11 | function << 8 | offset);
        self.inl(0xcfc)
    }
    fn config_write(&self, device: u32, function: u32, offset: u32, value: u32) {
        self.outl(0xcf8, 0x8000_0000 | device << 11 | function << 8 | offset);
        self.outl(0xcfc, value);
    }
}

#[test]
fn enumeration_finds_qemu_functions_with_their_ids() {
    let pc = pc();
    let mut found = Vec::new();
    for device in 0..32 {
        for function in 0..8 {
            let id = pc.config_read(device, function, 0);
            if id != u32::MAX {
                let class = pc.config_read(device, function, 8) >> 8;
                let subsystem = pc.config_read(device, function, 0x2c);
                found.push((device, function, id, class, subsystem));
            }
        }
    }
    assert_eq!(
        found,
        vec![
            (0, 0, 0x1237_8086, 0x06_00_00, 0x1100_1af4),
            (1, 0, 0x7000_8086, 0x06_01_00, 0x1100_1af4),
            (1, 3, 0x7113_8086, 0x06_80_00, 0x1100_1af4),
        ]
    );
    // PIIX3 is multi-function, so firmware scans its other functions.
    assert_eq!(pc.config_read(1, 0, 0x0c) >> 16 & 0x80, 0x80);
}

#[test]
fn the_pm_block_appears_where_firmware_puts_it() {
    let pc = pc();
    assert_eq!(pc.inw(0xb004), 0xffff, "off until enabled");
    // SeaBIOS without QEMU's ACPI tables: PMBA 0xb000, then PMREGMISC.
    pc.config_write(1, 3, 0x40, 0xb001);
    pc.config_write(1, 3, 0x80, 1);
    let timer = pc.inl(0xb008);
    assert!(timer <= 0x00ff_ffff, "the 24-bit PM timer: {timer:#x}");
    pc.outw(0xb004, 0x2000);
    assert_eq!(pc.poweroffs.load(Ordering::SeqCst), 1, "SLP_EN with S5");
    pc.config_write(1, 3, 0x40, 0x601);
    assert_eq!(pc.inw(0xb004), 0xffff);
    pc.outw(0x604, 0x2000);
    assert_eq!(pc.poweroffs.load(Ordering::SeqCst), 2);
}

#[test]
fn pam_writes_and_resets_reach_the_shadow_control() {
    let pc = pc();
    // SeaBIOS's make_bios_writable and make_bios_readonly.
    pc.config_write(0, 0, 0x58, 0x3333_3000);
    pc.config_write(0, 0, 0x5c, 0x3333_3333);
    pc.config_write(0, 0, 0x58, 0x1111_1000);
    pc.config_write(0, 0, 0x5c, 0x1111_1111);
    let log = pc.shadow.0.lock().unwrap().clone();
    assert_eq!(log.first(), Some(&[PamAccess::Pci; SEGMENT_COUNT]));
    assert!(log.contains(&[PamAccess::Ram; SEGMENT_COUNT]));
    assert_eq!(log.last(), Some(&[PamAccess::ReadOnlyRam; SEGMENT_COUNT]));
    pc.chipset.reset();
    assert_eq!(
        pc.shadow.0.lock().unwrap().last(),
        Some(&[PamAccess::Pci; SEGMENT_COUNT])
    );
    assert_eq!(pc.config_read(0, 0, 0x58), 0);
}

#[test]
fn fw_cfg_cmos_and_reset_ports_answer() {
    let pc = pc();
    pc.outw(0x510, 0);
    let signature: Vec<u8> = (0..4).map(|_| pc.inb(0x511)).collect();
    assert_eq!(signature, b"QEMU");
    pc.outw(0x510, FW_CFG_NB_CPUS);
    assert_eq!(pc.inb(0x511), 2);
    pc.outb(0x70, 0x5f);
    assert_eq!(pc.inb(0x71), 1, "CPUs - 1");
    pc.outb(0x70, 0x0d);
    assert_eq!(pc.inb(0x71), 0x80, "valid RAM and time");
    // ACPI enable through the APM control port sets SCI_EN in the PM block.
    pc.config_write(1, 3, 0x40, 0x601);
    pc.config_write(1, 3, 0x80, 1);
    assert_eq!(pc.inw(0x604) & 1, 0);
    pc.outb(0xb2, 0xf1);
    assert_eq!(pc.inw(0x604) & 1, 1);
    pc.outb(0xcf9, 0x06);
    pc.outb(0x92, 0x01);
    assert_eq!(pc.resets.load(Ordering::SeqCst), 2);
}

#[test]
fn garbage_in_every_register_keeps_identities() {
    let pc = pc();
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for (device, function) in [(0, 0), (1, 0), (1, 3)] {
        let ids = [0x00, 0x08, 0x2c].map(|o| pc.config_read(device, function, o));
        for offset in (0..256).step_by(4) {
            pc.config_write(device, function, offset, next());
        }
        // Byte and word writes at odd lanes, and random addresses with the enable bit.
        for _ in 0..2000 {
            pc.outl(0xcf8, next() | 0x8000_0000);
            let port = 0xcfc + (next() % 4) as u16;
            match next() % 3 {
                0 => pc.outb(port, next() as u8),
                1 => pc.outw(port & !1, next() as u16),
                _ => {
                    pc.inl(0xcfc);
                }
            }
        }
        let after = [0x00, 0x08, 0x2c].map(|o| pc.config_read(device, function, o));
        assert_eq!(after, ids, "{device:02x}.{function}");
    }
    // fw_cfg selectors and DMA addresses from the guest.
    for _ in 0..2000 {
        pc.outw(0x510, next() as u16);
        pc.inb(0x511);
        pc.outl(0x514, next());
        pc.outl(0x518, next());
    }
    for _ in 0..2000 {
        pc.outb(0x70, next() as u8);
        pc.outb(0x71, next() as u8);
        pc.inb(0x71);
    }
}
