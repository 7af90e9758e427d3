//! The DSDT, modelled on the one QEMU 7.2 builds for `pc` (hw/i386/acpi-build.c), limited to
//! the devices vmscope has: the PCI root bridge with its resource windows and interrupt
//! routing through the PIIX3 link devices, the ISA devices behind the PIIX3, the processors,
//! the GPE0 block, fw_cfg and the `\_S5` soft-off state.
//!
//! Left out because vmscope has no such device or feature: PCI and CPU hotplug, the HPET,
//! floppy, parallel port, PS/2 mouse, VGA, the 0x402 debug method, and `\_S3` (suspend to
//! RAM is not implemented: offering it would be a promise not kept).

use acpi_tables::aml::{
    self, And, Arg, CreateDWordField, Device, EISAName, Field, FieldAccessType, FieldEntry,
    FieldLockRule, FieldUpdateRule, If, LessThan, Method, Name, OpRegion, OpRegionSpace, Or,
    Package, Path, ResourceTemplate, Return, Scope, Store, IO,
};

use acpi_tables::{Aml, AmlSink};

use super::tables::table_header;
use crate::hw::pc::fw_cfg::{FW_CFG_IO_BASE, FW_CFG_IO_LEN};
use crate::hw::pm::{GPE0_IO_BASE, GPE0_IO_LEN};
use crate::machine::layout::{RamSplit, HIGH_RAM_START, IOAPIC_START};

/// Pre-rendered AML, so that parts can be built by functions and nested freely.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn raw(aml: &dyn Aml) -> Raw {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    Raw(bytes)
}

/// An AML PkgLength covering `len` bytes of content plus itself.
fn pkg_length(len: usize) -> Vec<u8> {
    let (size, total) = match len {
        n if n + 1 < 0x40 => (1, n + 1),
        n if n + 2 < 0x1000 => (2, n + 2),
        n if n + 3 < 0x10_0000 => (3, n + 3),
        n => (4, n + 4),
    };
    if size == 1 {
        return vec![total as u8];
    }
    let mut bytes = vec![(((size - 1) as u8) << 6) | (total & 0xf) as u8];
    for i in 1..size {
        bytes.push((total >> (4 + 8 * (i - 1))) as u8);
    }
    bytes
}

/// The legacy `Processor` object QEMU declares for each CPU (ACPI 1.0 ProcessorOp): no
/// P_BLK, as QEMU's.
struct Processor<'a> {
    name: &'a str,
    uid: u8,
    children: Vec<&'a dyn Aml>,
}

impl Aml for Processor<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let mut body = Vec::new();
        Path::new(self.name).to_aml_bytes(&mut body);
        body.push(self.uid);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0);
        for child in &self.children {
            child.to_aml_bytes(&mut body);
        }
        sink.byte(0x5b);
        sink.byte(0x83);
        sink.vec(&pkg_length(body.len()));
        sink.vec(&body);
    }
}

/// An ISA `IRQNoFlags` descriptor (edge, active high, exclusive).
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22);
        sink.word(1u16 << self.0);
    }
}

/// An Extended Interrupt descriptor for PCI interrupt links: consumer, level-triggered,
/// active high, shared, listing `irqs` (the crate's `Interrupt` takes only one).
struct LinkInterrupts<'a>(&'a [u32]);

impl Aml for LinkInterrupts<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        const CONSUMER: u8 = 1 << 0;
        const SHARED: u8 = 1 << 3;
        sink.byte(0x89);
        sink.word(2 + 4 * self.0.len() as u16);
        sink.byte(CONSUMER | SHARED);
        sink.byte(self.0.len() as u8);
        for &irq in self.0 {
            sink.dword(irq);
        }
    }
}

/// What the DSDT describes.
pub struct DsdtFacts<'a> {
    pub split: &'a RamSplit,
    /// The APIC id of each present vCPU, by processor uid.
    pub apic_ids: &'a [u32],
}

/// The whole DSDT (header included; its checksum is left for the loader).
pub fn build(facts: &DsdtFacts) -> Vec<u8> {
    let mut body = Vec::new();
    pci_root(facts).to_aml_bytes(&mut body);
    link_devices().to_aml_bytes(&mut body);
    processors(facts.apic_ids).to_aml_bytes(&mut body);
    Scope::new(
        "\\_GPE".into(),
        vec![&Name::new("_HID".into(), &"ACPI0006")],
    )
    .to_aml_bytes(&mut body);
    // \_S4 and \_S5: the SLP_TYP values the PM block acts on (QEMU's), for PM1a and PM1b.
    let s4 = u8::try_from(crate::hw::pm::SLP_TYP_SUSPEND_TO_DISK).expect("3 bits");
    Name::new("_S4_".into(), &Package::new(vec![&s4, &s4, &0u8, &0u8])).to_aml_bytes(&mut body);
    Name::new("_S5_".into(), &Package::new(vec![&0u8, &0u8, &0u8, &0u8])).to_aml_bytes(&mut body);

    let mut table = table_header(*b"DSDT", 1, body.len());
    table.extend_from_slice(&body);
    table
}

fn name(n: &str, value: &dyn Aml) -> Raw {
    raw(&Name::new(n.into(), value))
}

/// A device with fixed `_HID`, optional `_UID`/`_STA`, and a `_CRS` of `resources`.
fn isa_device(
    device: &str,
    hid: &str,
    uid: Option<u8>,
    sta: Option<u8>,
    resources: Vec<&dyn Aml>,
) -> Raw {
    let hid = name("_HID", &EISAName::new(hid));
    let uid = uid.map(|uid| name("_UID", &uid));
    let sta = sta.map(|sta| name("_STA", &sta));
    let crs = name("_CRS", &ResourceTemplate::new(resources));
    let mut children: Vec<&dyn Aml> = vec![&hid];
    children.extend(uid.as_ref().map(|u| u as &dyn Aml));
    children.extend(sta.as_ref().map(|s| s as &dyn Aml));
    children.push(&crs);
    raw(&Device::new(device.into(), children))
}

/// `\_SB.PCI0`: the i440FX host bridge, its windows, routing, and the devices on it.
fn pci_root(facts: &DsdtFacts) -> Raw {
    let hid = name("_HID", &EISAName::new("PNP0A03"));
    let adr = name("_ADR", &0u8);
    let uid = name("_UID", &0u8);
    let crs = name("_CRS", &root_resources(facts.split));
    let prt = name("_PRT", &routing_table());
    let gpe0 = {
        let io = IO::new(GPE0_IO_BASE, GPE0_IO_BASE, 1, GPE0_IO_LEN as u8);
        raw(&Device::new(
            "GPE0".into(),
            vec![
                &name("_HID", &"PNP0A06"),
                &name("_UID", &"GPE0 resources"),
                &name("_STA", &0x0bu8),
                &name("_CRS", &ResourceTemplate::new(vec![&io])),
            ],
        ))
    };
    let fw_cfg = {
        let io = IO::new(FW_CFG_IO_BASE, FW_CFG_IO_BASE, 1, FW_CFG_IO_LEN as u8);
        raw(&Device::new(
            "FWCF".into(),
            vec![
                &name("_HID", &"QEMU0002"),
                &name("_STA", &0x0bu8),
                &name("_CRS", &ResourceTemplate::new(vec![&io])),
            ],
        ))
    };
    let host_bridge = raw(&Device::new("S00_".into(), vec![&name("_ADR", &0u8)]));
    let isa_bridge = isa_bridge();
    // As QEMU: the bridge's identity first, its resources and children in a later scope.
    let identity = raw(&Scope::new(
        "\\_SB_".into(),
        vec![&Device::new("PCI0".into(), vec![&hid, &adr, &uid])],
    ));
    let contents = raw(&Scope::new(
        "\\_SB_.PCI0".into(),
        vec![&crs, &prt, &gpe0, &fw_cfg, &host_bridge, &isa_bridge],
    ));
    Raw([identity.0, contents.0].concat())
}

/// The root bridge's `_CRS` as QEMU computes it: all buses, the config ports, the I/O
/// space around them, the VGA window, the 32-bit hole from the end of low RAM to the
/// IOAPIC, and the 64-bit hole (2 GiB from the first GiB boundary above RAM).
fn root_resources(split: &RamSplit) -> Raw {
    const PCI_HOLE64_SIZE: u64 = 2 << 30;
    let hole64_start = (HIGH_RAM_START + split.above_4g).div_ceil(1 << 30) << 30;
    let buses = aml::AddressSpace::new_bus_number(0u16, 0xffu16);
    let config = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = aml::AddressSpace::new_io(0u16, 0xcf7u16, None);
    let io_high = aml::AddressSpace::new_io(0xd00u16, 0xffffu16, None);
    let vga = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::Cacheable,
        true,
        0xa_0000u32,
        0xb_ffffu32,
        None,
    );
    let hole32 = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        split.below_4g as u32,
        (IOAPIC_START - 1) as u32,
        None,
    );
    let hole64 = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::Cacheable,
        true,
        hole64_start,
        hole64_start + PCI_HOLE64_SIZE - 1,
        None,
    );
    raw(&ResourceTemplate::new(vec![
        &buses, &config, &io_low, &io_high, &vga, &hole32, &hole64,
    ]))
}

/// The link device of (slot, pin) as QEMU's `_PRT` method computes it: PIRQs rotate by
/// slot, and the PM function's INTA (slot 1, pin A) is the SCI on its own link, LNKS.
fn link_for(slot: u32, pin: u32) -> &'static str {
    if slot == 1 && pin == 0 {
        return "LNKS";
    }
    ["LNKD", "LNKA", "LNKB", "LNKC"][((slot + pin) & 3) as usize]
}

/// `_PRT` for the 32 slots and 4 pins of bus 0, as a static package with the entries
/// QEMU's method returns.
fn routing_table() -> Raw {
    let entries: Vec<Raw> = (0..32u32)
        .flat_map(|slot| (0..4u32).map(move |pin| (slot, pin)))
        .map(|(slot, pin)| {
            let address = (slot << 16) | 0xffff;
            let link = Path::new(link_for(slot, pin));
            raw(&Package::new(vec![&address, &(pin as u8), &link, &0u8]))
        })
        .collect();
    raw(&Package::new(
        entries.iter().map(|e| e as &dyn Aml).collect(),
    ))
}

/// 00:01.0, the PIIX3: its PIRQ route registers as fields for the link devices, and the
/// ISA devices behind it that vmscope has.
fn isa_bridge() -> Raw {
    let region = OpRegion::new("P40C".into(), OpRegionSpace::PCIConfig, &0x60u8, &4u8);
    // As QEMU, the route registers are named in \_SB, where the link devices use them.
    let fields = raw(&Scope::new(
        "\\_SB_".into(),
        vec![&Field::new(
            "PCI0.S08_.P40C".into(),
            FieldAccessType::Byte,
            FieldLockRule::NoLock,
            FieldUpdateRule::Preserve,
            vec![
                FieldEntry::Named(*b"PRQ0", 8),
                FieldEntry::Named(*b"PRQ1", 8),
                FieldEntry::Named(*b"PRQ2", 8),
                FieldEntry::Named(*b"PRQ3", 8),
            ],
        )],
    ));
    let keyboard = isa_device(
        "KBD_",
        "PNP0303",
        None,
        Some(0x0f),
        vec![
            &IO::new(0x60, 0x60, 1, 1),
            &IO::new(0x64, 0x64, 1, 1),
            &IrqNoFlags(1),
        ],
    );
    let com1 = isa_device(
        "COM1",
        "PNP0501",
        Some(1),
        Some(0x0f),
        vec![&IO::new(0x3f8, 0x3f8, 0, 8), &IrqNoFlags(4)],
    );
    let rtc = isa_device(
        "RTC_",
        "PNP0B00",
        None,
        None,
        vec![&IO::new(0x70, 0x70, 1, 8), &IrqNoFlags(8)],
    );
    raw(&Device::new(
        "S08_".into(),
        vec![
            &name("_ADR", &0x0001_0000u32),
            &region,
            &fields,
            &keyboard,
            &com1,
            &rtc,
        ],
    ))
}

/// The PIRQ link devices LNKA-LNKD (ISA IRQs 5, 10 and 11 possible, as QEMU offers) and
/// LNKS, the SCI's fixed IRQ 9. A route register with bit 7 set is disabled.
fn link_devices() -> Raw {
    let prri = Path::new("PRRI");
    let prr0 = Path::new("PRR0");
    // IQST: _STA of a link from its route register.
    let iqst = {
        let masked = raw(&And::new(&aml::ZERO, &0x80u8, &Arg(0)));
        let disabled = raw(&If::new(&masked, vec![&raw(&Return::new(&0x09u8))]));
        raw(&Method::new(
            "IQST".into(),
            1,
            false,
            vec![&disabled, &raw(&Return::new(&0x0bu8))],
        ))
    };
    // IQCR: _CRS of a link: one level, active-high, shared interrupt, the routed IRQ.
    let iqcr = {
        let interrupt = LinkInterrupts(&[0]);
        let template = name("PRR0", &ResourceTemplate::new(vec![&interrupt]));
        let field = raw(&CreateDWordField::new(&prri, &prr0, &5u8));
        let store = raw(&Store::new(&prri, &Arg(0)));
        let below = raw(&LessThan::new(&Arg(0), &0x80u8));
        let routed = raw(&If::new(&below, vec![&store]));
        let ret = raw(&Return::new(&prr0));
        raw(&Method::new(
            "IQCR".into(),
            1,
            true,
            vec![&template, &field, &routed, &ret],
        ))
    };
    let possible_irqs = LinkInterrupts(&[5, 10, 11]);
    let links: Vec<Raw> = (0..4u8)
        .map(|index| {
            let register = Path::new(&format!("PRQ{index}"));
            let possible = name("_PRS", &ResourceTemplate::new(vec![&possible_irqs]));
            let status = raw(&Return::new(&aml::MethodCall::new(
                "IQST".into(),
                vec![&register],
            )));
            let current = raw(&Return::new(&aml::MethodCall::new(
                "IQCR".into(),
                vec![&register],
            )));
            let disable = raw(&Or::new(&register, &register, &0x80u8));
            let requested = raw(&CreateDWordField::new(&prri, &Arg(0), &5u8));
            let set = raw(&Store::new(&register, &prri));
            raw(&Device::new(
                Path::new(&format!("LNK{}", (b'A' + index) as char)),
                vec![
                    &name("_HID", &EISAName::new("PNP0C0F")),
                    &name("_UID", &index),
                    &possible,
                    &raw(&Method::new("_STA".into(), 0, false, vec![&status])),
                    &raw(&Method::new("_DIS".into(), 0, false, vec![&disable])),
                    &raw(&Method::new("_CRS".into(), 0, false, vec![&current])),
                    &raw(&Method::new(
                        "_SRS".into(),
                        1,
                        false,
                        vec![&requested, &set],
                    )),
                ],
            ))
        })
        .collect();
    let sci_irq = LinkInterrupts(&[9]);
    let sci = raw(&Device::new(
        "LNKS".into(),
        vec![
            &name("_HID", &EISAName::new("PNP0C0F")),
            &name("_UID", &4u8),
            &name("_PRS", &ResourceTemplate::new(vec![&sci_irq])),
            &raw(&Method::new(
                "_STA".into(),
                0,
                false,
                vec![&raw(&Return::new(&0x0bu8))],
            )),
            &raw(&Method::new("_DIS".into(), 0, false, vec![])),
            &raw(&Method::new(
                "_CRS".into(),
                0,
                false,
                vec![&raw(&Return::new(&Path::new("_PRS")))],
            )),
            &raw(&Method::new("_SRS".into(), 1, false, vec![])),
        ],
    ));
    let mut children: Vec<&dyn Aml> = vec![&iqst, &iqcr];
    children.extend(links.iter().map(|l| l as &dyn Aml));
    children.push(&sci);
    raw(&Scope::new("\\_SB_".into(), children))
}

/// `\_SB.CPUS`, the processor container, with a `Processor` per vCPU: present (no CPU
/// hotplug), and its MADT entry as `_MAT`.
fn processors(apic_ids: &[u32]) -> Raw {
    let cpus: Vec<Raw> = apic_ids
        .iter()
        .enumerate()
        .map(|(uid, &apic_id)| {
            let mat = aml::BufferData::new(vec![0, 8, uid as u8, apic_id as u8, 1, 0, 0, 0]);
            let name_text = format!("C{uid:03X}");
            let sta = name("_STA", &0x0fu8);
            let mat = name("_MAT", &mat);
            raw(&Processor {
                name: &name_text,
                uid: uid as u8,
                children: vec![&sta, &mat],
            })
        })
        .collect();
    let hid = name("_HID", &"ACPI0010");
    let cid = name("_CID", &EISAName::new("PNP0A05"));
    let mut children: Vec<&dyn Aml> = vec![&hid, &cid];
    children.extend(cpus.iter().map(|c| c as &dyn Aml));
    raw(&Device::new("\\_SB_.CPUS".into(), children))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(pkg_length(0x3d), [0x3e]);
        assert_eq!(pkg_length(0x3f), [0x41, 0x04]);
        assert_eq!(pkg_length(0x1000), [0x83, 0x00, 0x01]);
    }

    #[test]
    fn routing_matches_qemus_prt_method() {
        assert_eq!(link_for(0, 0), "LNKD");
        assert_eq!(link_for(1, 0), "LNKS");
        assert_eq!(link_for(1, 1), "LNKB");
        assert_eq!(link_for(2, 0), "LNKB");
        assert_eq!(link_for(3, 3), "LNKB");
        assert_eq!(link_for(31, 1), "LNKD");
    }
}
