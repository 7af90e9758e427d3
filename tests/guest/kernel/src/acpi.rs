//! Just enough ACPI to find the MADT: RSDP -> RSDT/XSDT -> "APIC".

use crate::phys;
use crate::start_info::StartInfo;

const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const BIOS_AREA: (u64, u64) = (0xe0000, 0x100000);
const HEADER_LEN: u64 = 36;

fn checksum_ok(addr: u64, len: u64) -> bool {
    (0..len).fold(0u8, |sum, i| sum.wrapping_add(phys::read_u8(addr + i))) == 0
}

fn signature_at(addr: u64, signature: &[u8]) -> bool {
    signature
        .iter()
        .enumerate()
        .all(|(i, &b)| phys::read_u8(addr + i as u64) == b)
}

/// Where the RSDP was found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RsdpSource {
    StartInfo,
    BiosScan,
}

/// The RSDP: from hvm_start_info when the loader filled it in, else by scanning the BIOS
/// area on 16-byte boundaries. Only a checksummed RSDP counts.
pub fn find_rsdp(info: &StartInfo) -> Option<(u64, RsdpSource)> {
    let valid = |addr: u64| signature_at(addr, RSDP_SIGNATURE) && checksum_ok(addr, 20);
    if info.rsdp_paddr != 0 && valid(info.rsdp_paddr) {
        return Some((info.rsdp_paddr, RsdpSource::StartInfo));
    }
    (BIOS_AREA.0..BIOS_AREA.1)
        .step_by(16)
        .find(|&addr| valid(addr))
        .map(|addr| (addr, RsdpSource::BiosScan))
}

/// Physical address of the first table with `signature`, through the XSDT (ACPI 2.0+) or
/// the RSDT.
pub fn find_table(rsdp: u64, signature: &[u8; 4]) -> Option<u64> {
    let revision = phys::read_u8(rsdp + 15);
    let (root, entry_size) = if revision >= 2 && phys::read_u64(rsdp + 24) != 0 {
        (phys::read_u64(rsdp + 24), 8)
    } else {
        (u64::from(phys::read_u32(rsdp + 16)), 4)
    };
    let root_len = u64::from(phys::read_u32(root + 4));
    if root_len < HEADER_LEN || !checksum_ok(root, root_len) {
        return None;
    }
    (0..(root_len - HEADER_LEN) / entry_size)
        .map(|i| {
            let at = root + HEADER_LEN + i * entry_size;
            if entry_size == 8 {
                phys::read_u64(at)
            } else {
                u64::from(phys::read_u32(at))
            }
        })
        .find(|&table| signature_at(table, signature))
        .filter(|&table| checksum_ok(table, u64::from(phys::read_u32(table + 4))))
}

/// A processor entry of the MADT (type 0, local APIC, or type 9, local x2APIC).
#[derive(Clone, Copy)]
pub struct MadtCpu {
    pub uid: u32,
    pub apic_id: u32,
    pub enabled: bool,
}

/// Calls `f(kind, address, length)` for every entry of the MADT at `madt`.
fn for_each_madt_entry(madt: u64, mut f: impl FnMut(u8, u64, u64)) {
    let len = u64::from(phys::read_u32(madt + 4));
    let mut at = madt + HEADER_LEN + 8; // after the local APIC address and the flags
    while at + 2 <= madt + len {
        let entry_len = u64::from(phys::read_u8(at + 1));
        if entry_len < 2 {
            break;
        }
        f(phys::read_u8(at), at, entry_len);
        at += entry_len;
    }
}

/// Calls `f` for every processor entry of the MADT at `madt`.
pub fn for_each_madt_cpu(madt: u64, mut f: impl FnMut(MadtCpu)) {
    for_each_madt_entry(madt, |kind, at, len| match kind {
        0 if len >= 8 => f(MadtCpu {
            uid: u32::from(phys::read_u8(at + 2)),
            apic_id: u32::from(phys::read_u8(at + 3)),
            enabled: phys::read_u32(at + 4) & 1 != 0,
        }),
        9 if len >= 16 => f(MadtCpu {
            uid: phys::read_u32(at + 12),
            apic_id: phys::read_u32(at + 4),
            enabled: phys::read_u32(at + 8) & 1 != 0,
        }),
        _ => {}
    });
}

/// An I/O APIC entry of the MADT (type 1).
#[derive(Clone, Copy)]
pub struct MadtIoApic {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

/// The first I/O APIC the MADT lists.
pub fn madt_ioapic(madt: u64) -> Option<MadtIoApic> {
    let mut found = None;
    for_each_madt_entry(madt, |kind, at, len| {
        if kind == 1 && len >= 12 && found.is_none() {
            found = Some(MadtIoApic {
                id: phys::read_u8(at + 2),
                address: u64::from(phys::read_u32(at + 4)),
                gsi_base: phys::read_u32(at + 8),
            });
        }
    });
    found
}

/// Where an ISA IRQ arrives at the I/O APICs: `(gsi, MPS INTI flags)`. Without an interrupt
/// source override (type 2) the IRQ is identity-mapped with conforming (ISA) polarity/trigger.
pub fn isa_irq_route(madt: u64, irq: u8) -> (u32, u16) {
    let mut route = (u32::from(irq), 0);
    for_each_madt_entry(madt, |kind, at, len| {
        if kind == 2 && len >= 10 && phys::read_u8(at + 3) == irq {
            route = (
                phys::read_u32(at + 4),
                u16::from(phys::read_u8(at + 8)) | (u16::from(phys::read_u8(at + 9)) << 8),
            );
        }
    });
    route
}

/// The FADT fields the power-button scenario needs (ACPI 1.0 layout, valid in every revision).
#[derive(Clone, Copy)]
pub struct Fadt {
    pub dsdt: u64,
    pub sci_irq: u16,
    pub smi_command: u32,
    pub acpi_enable: u8,
    pub pm1a_event: u32,
    pub pm1a_control: u32,
    pub pm_timer: u32,
    pub gpe0: u32,
    pub flags: u32,
}

/// Reads the FADT ("FACP") at `fadt`.
pub fn fadt(fadt: u64) -> Fadt {
    Fadt {
        dsdt: u64::from(phys::read_u32(fadt + 40)),
        sci_irq: phys::read_u32(fadt + 46) as u16,
        smi_command: phys::read_u32(fadt + 48),
        acpi_enable: phys::read_u8(fadt + 52),
        pm1a_event: phys::read_u32(fadt + 56),
        pm1a_control: phys::read_u32(fadt + 64),
        pm_timer: phys::read_u32(fadt + 76),
        gpe0: phys::read_u32(fadt + 80),
        flags: phys::read_u32(fadt + 112),
    }
}

/// The PM1a SLP_TYP of `\_S5` in the DSDT at `dsdt`.
pub fn s5_sleep_type(dsdt: u64) -> Option<u8> {
    sleep_type(dsdt, b"_S5_")
}

/// The PM1a SLP_TYP of the sleep state `name` (`_S4_`, `_S5_`) in the DSDT at `dsdt`, found
/// the way simple OSes do: the name followed by a package whose first element is the value.
/// None when the DSDT is invalid or lacks the state.
pub fn sleep_type(dsdt: u64, name: &[u8; 4]) -> Option<u8> {
    let len = u64::from(phys::read_u32(dsdt + 4));
    if len < HEADER_LEN || !checksum_ok(dsdt, len) {
        return None;
    }
    const PACKAGE_OP: u8 = 0x12;
    const BYTE_PREFIX: u8 = 0x0a;
    let at = (dsdt + HEADER_LEN..dsdt + len - 8).find(|&a| signature_at(a, name))?;
    let mut p = at + 4;
    if phys::read_u8(p) != PACKAGE_OP {
        return None;
    }
    p += 1;
    // PkgLength: the top two bits of the first byte count the extra length bytes.
    p += 1 + u64::from(phys::read_u8(p) >> 6);
    p += 1; // element count
    match phys::read_u8(p) {
        0 => Some(0),
        1 => Some(1),
        BYTE_PREFIX => Some(phys::read_u8(p + 1)),
        _ => None,
    }
}
