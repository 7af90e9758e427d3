//! ACPI tables for direct kernel boot: RSDP, RSDT/XSDT and the MADT that tells a guest how
//! many vCPUs it has and where the interrupt controllers are. Placed in the system BIOS
//! segment so that both a pointer handed over at boot and an RSDP scan find them.

use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{IOAPIC_START, LAPIC_START, SYSTEM_BIOS_START};

const OEM_ID: [u8; 6] = *b"BOCHS ";
const OEM_TABLE_ID: [u8; 8] = *b"BXPC    ";
const OEM_REVISION: u32 = 1;

/// The RSDP sits at the start of the E-segment; the tables follow it.
pub const RSDP_ADDR: u64 = SYSTEM_BIOS_START;

// MADT structure types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MADT flag: the machine also has dual 8259 PICs.
const MADT_PCAT_COMPAT: u32 = 1;
/// Interrupt override flags: active high, level triggered (the PCI interrupt lines).
const ACTIVE_HIGH_LEVEL: u16 = 0x000d;

/// Writes the tables for vCPUs with the given APIC ids and returns the RSDP address.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    apic_ids: &[u32],
) -> Result<u64, vm_memory::GuestMemoryError> {
    let madt = madt(apic_ids);
    let madt_addr = RSDP_ADDR + 0x40;
    let rsdt_addr = align16(madt_addr + madt.len() as u64);
    let rsdt = root_table(*b"RSDT", &[madt_addr], 4);
    let xsdt_addr = align16(rsdt_addr + rsdt.len() as u64);
    let xsdt = root_table(*b"XSDT", &[madt_addr], 8);

    let mut rsdp_bytes = Vec::new();
    let mut rsdp = Rsdp::new(OEM_ID, xsdt_addr);
    // Legacy (revision 0) readers follow the 32-bit RSDT pointer at offset 16.
    rsdp.checksum = 0;
    rsdp.extended_checksum = 0;
    rsdp.to_aml_bytes(&mut rsdp_bytes);
    rsdp_bytes[16..20].copy_from_slice(&(rsdt_addr as u32).to_le_bytes());
    rsdp_bytes[8] = checksum(&rsdp_bytes[..20]);
    rsdp_bytes[32] = checksum(&rsdp_bytes);

    mem.write_slice(&rsdp_bytes, GuestAddress(RSDP_ADDR))?;
    mem.write_slice(madt.as_slice(), GuestAddress(madt_addr))?;
    mem.write_slice(rsdt.as_slice(), GuestAddress(rsdt_addr))?;
    mem.write_slice(xsdt.as_slice(), GuestAddress(xsdt_addr))?;
    Ok(RSDP_ADDR)
}

fn align16(addr: u64) -> u64 {
    (addr + 15) & !15
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

fn root_table(signature: [u8; 4], entries: &[u64], entry_size: usize) -> Sdt {
    let mut table = Sdt::new(signature, 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for &entry in entries {
        table.append_slice(&entry.to_le_bytes()[..entry_size]);
    }
    table.update_checksum();
    table
}

/// The MADT as QEMU's `pc` builds it: one enabled local APIC per vCPU, the IOAPIC at GSI 0,
/// IRQ 0 (the PIT) overridden to GSI 2, the PCI interrupt lines level-triggered, and LINT1 as
/// NMI on every processor.
fn madt(apic_ids: &[u32]) -> Sdt {
    let mut table = Sdt::new(*b"APIC", 44, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.write_u32(36, LAPIC_START as u32);
    table.write_u32(40, MADT_PCAT_COMPAT);
    for (uid, &apic_id) in apic_ids.iter().enumerate() {
        let enabled = 1u32.to_le_bytes();
        table.append_slice(&[
            MADT_LOCAL_APIC,
            8,
            uid as u8,
            apic_id as u8,
            enabled[0],
            enabled[1],
            enabled[2],
            enabled[3],
        ]);
    }
    let mut ioapic = vec![MADT_IO_APIC, 12, 0, 0];
    ioapic.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    table.append_slice(&ioapic);
    let overrides: [(u8, u32, u16); 5] = [
        (0, 2, 0),
        (5, 5, ACTIVE_HIGH_LEVEL),
        (9, 9, ACTIVE_HIGH_LEVEL),
        (10, 10, ACTIVE_HIGH_LEVEL),
        (11, 11, ACTIVE_HIGH_LEVEL),
    ];
    for (irq, gsi, flags) in overrides {
        let mut entry = vec![MADT_INTERRUPT_OVERRIDE, 10, 0, irq];
        entry.extend_from_slice(&gsi.to_le_bytes());
        entry.extend_from_slice(&flags.to_le_bytes());
        table.append_slice(&entry);
    }
    // All processors (0xff), default polarity and trigger, LINT1.
    table.append_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    table.update_checksum();
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    #[test]
    fn rsdp_leads_through_rsdt_and_xsdt_to_a_madt_with_every_cpu() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let rsdp_addr = write_tables(&mem, &[0, 1, 2, 3]).unwrap();
        let rsdp = read(&mem, rsdp_addr, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[..20].iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(rsdp.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);

        let rsdt_addr = u64::from(u32_at(&rsdp, 16));
        let rsdt = read(&mem, rsdt_addr, 40);
        assert_eq!(&rsdt[..4], b"RSDT");
        let madt_addr = u64::from(u32_at(&rsdt, 36));
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let xsdt = read(&mem, xsdt_addr, 44);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(
            u64::from_le_bytes(xsdt[36..44].try_into().unwrap()),
            madt_addr
        );

        let header = read(&mem, madt_addr, 8);
        let madt = read(&mem, madt_addr, u32_at(&header, 4) as usize);
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(madt.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        let mut apic_ids = vec![];
        let mut offset = 44;
        while offset < madt.len() {
            if madt[offset] == MADT_LOCAL_APIC {
                apic_ids.push(madt[offset + 3]);
            }
            offset += madt[offset + 1] as usize;
        }
        assert_eq!(offset, madt.len());
        assert_eq!(apic_ids, [0, 1, 2, 3]);
    }
}
