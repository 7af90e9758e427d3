//! The fixed-layout ACPI tables as QEMU 7.2's `pc` builds them: FACS, FADT (revision 1, the
//! PIIX4 PM block), MADT, WAET, RSDT and a revision 0 RSDP. Pointers between tables and
//! checksums are left to the linker/loader commands ([`super::linker`]), as QEMU does.

use super::linker::Command;
use crate::machine::layout::{IOAPIC_START, LAPIC_START};

pub const OEM_ID: [u8; 6] = *b"BOCHS ";
const OEM_TABLE_ID: [u8; 8] = *b"BXPC    ";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: [u8; 4] = *b"BXPC";
const CREATOR_REVISION: u32 = 1;
pub const HEADER_LEN: usize = 36;
/// Offset of the checksum byte in a table header.
const CHECKSUM_OFFSET: u32 = 9;

/// A table header for `body_len` bytes of content after it, checksum left zero.
pub fn table_header(signature: [u8; 4], revision: u8, body_len: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN + body_len);
    header.extend_from_slice(&signature);
    header.extend_from_slice(&((HEADER_LEN + body_len) as u32).to_le_bytes());
    header.push(revision);
    header.push(0);
    header.extend_from_slice(&OEM_ID);
    header.extend_from_slice(&OEM_TABLE_ID);
    header.extend_from_slice(&OEM_REVISION.to_le_bytes());
    header.extend_from_slice(&CREATOR_ID);
    header.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    header
}

/// The `etc/acpi/tables` file under construction and the loader commands for it.
pub struct TableBlob {
    pub file: &'static str,
    pub data: Vec<u8>,
    pub commands: Vec<Command>,
}

impl TableBlob {
    /// Appends `table` (padded first to `align`) and returns its offset in the file.
    pub fn append(&mut self, table: &[u8], align: usize) -> u32 {
        self.data.resize(self.data.len().next_multiple_of(align), 0);
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(table);
        offset
    }

    /// A 4-byte pointer at `field` (an offset in this file) to `target` (another offset
    /// in this file), patched by the loader.
    pub fn pointer(&mut self, field: u32, target: u32) {
        let at = field as usize;
        self.data[at..at + 4].copy_from_slice(&target.to_le_bytes());
        self.commands.push(Command::AddPointer {
            dest: self.file,
            source: self.file,
            offset: field,
            size: 4,
        });
    }

    /// The checksum command for the table at `offset`, once its pointers are in.
    pub fn checksum(&mut self, offset: u32) {
        let length = u32::from_le_bytes(
            self.data[offset as usize + 4..offset as usize + 8]
                .try_into()
                .expect("4 bytes"),
        );
        self.commands.push(Command::AddChecksum {
            file: self.file,
            offset: offset + CHECKSUM_OFFSET,
            start: offset,
            length,
        });
    }
}

/// The FACS: 64 bytes, no hardware signature, no waking vector yet.
pub fn facs() -> Vec<u8> {
    let mut facs = vec![0u8; 64];
    facs[0..4].copy_from_slice(b"FACS");
    facs[4..8].copy_from_slice(&64u32.to_le_bytes());
    facs
}

/// Where the FADT's pointers are, relative to the table.
pub const FADT_FACS_FIELD: u32 = 36;
pub const FADT_DSDT_FIELD: u32 = 40;

/// What the FADT tells about the PM hardware.
pub struct FadtFacts {
    /// Where the PIIX4 PM block is (firmware puts it at 0x600, as direct boot does).
    pub pm_base: u16,
    pub gpe0_base: u16,
    pub sci_irq: u16,
    /// APM control port and the values that switch ACPI mode on and off.
    pub smi_command: u16,
    pub acpi_enable: u8,
    pub acpi_disable: u8,
}

// FADT flags QEMU 7.2 sets for PIIX4: WBINVD, PROC_C1, SLP_BUTTON (no fixed sleep
// button: the power button is a fixed feature), RTC_S4, USE_PLATFORM_CLOCK.
const FADT_WBINVD: u32 = 1 << 0;
const FADT_PROC_C1: u32 = 1 << 2;
const FADT_SLP_BUTTON: u32 = 1 << 5;
const FADT_RTC_S4: u32 = 1 << 7;
const FADT_USE_PLATFORM_CLOCK: u32 = 1 << 15;
/// CMOS index of the century byte.
const RTC_CENTURY: u8 = 0x32;
/// C2/C3 latencies above 100/1000 us: those states are not supported.
const NO_C2_C3: u16 = 0x0fff;

/// The ACPI 1.0 FADT (revision 1, 116 bytes), pointers to FACS and DSDT left as zero.
pub fn fadt(facts: &FadtFacts) -> Vec<u8> {
    const BODY: usize = 116 - HEADER_LEN;
    let mut t = table_header(*b"FACP", 1, BODY);
    t.resize(116, 0);
    let put_u16 =
        |t: &mut Vec<u8>, at: usize, v: u16| t[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_u32 =
        |t: &mut Vec<u8>, at: usize, v: u32| t[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let pm = u32::from(facts.pm_base);
    t[44] = 1; // INT_MODEL (ACPI 1.0): APIC
    put_u16(&mut t, 46, facts.sci_irq);
    put_u32(&mut t, 48, u32::from(facts.smi_command));
    t[52] = facts.acpi_enable;
    t[53] = facts.acpi_disable;
    put_u32(&mut t, 56, pm); // PM1a event block
    put_u32(&mut t, 64, pm + 4); // PM1a control block
    put_u32(&mut t, 76, pm + 8); // PM timer
    put_u32(&mut t, 80, u32::from(facts.gpe0_base));
    t[88] = 4; // PM1 event block length
    t[89] = 2; // PM1 control block length
    t[91] = 4; // PM timer length
    t[92] = 4; // GPE0 block length
    put_u16(&mut t, 96, NO_C2_C3);
    put_u16(&mut t, 98, NO_C2_C3);
    t[108] = RTC_CENTURY;
    put_u32(
        &mut t,
        112,
        FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RTC_S4 | FADT_USE_PLATFORM_CLOCK,
    );
    t
}

// MADT structure types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MADT flag: the machine also has dual 8259 PICs.
const MADT_PCAT_COMPAT: u32 = 1;
/// Interrupt override flags: active high, level triggered (the PCI interrupt lines).
const ACTIVE_HIGH_LEVEL: u16 = 0x000d;

/// The MADT as QEMU's `pc` builds it: one enabled local APIC per vCPU, the IOAPIC at GSI 0,
/// IRQ 0 (the PIT) overridden to GSI 2, the PCI interrupt lines and the SCI level-triggered,
/// and LINT1 as NMI on every processor.
pub fn madt(apic_ids: &[u32]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for (uid, &apic_id) in apic_ids.iter().enumerate() {
        body.extend_from_slice(&[MADT_LOCAL_APIC, 8, uid as u8, apic_id as u8, 1, 0, 0, 0]);
    }
    body.extend_from_slice(&[MADT_IO_APIC, 12, 0, 0]);
    body.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let overrides: [(u8, u32, u16); 5] = [
        (0, 2, 0),
        (5, 5, ACTIVE_HIGH_LEVEL),
        (9, 9, ACTIVE_HIGH_LEVEL),
        (10, 10, ACTIVE_HIGH_LEVEL),
        (11, 11, ACTIVE_HIGH_LEVEL),
    ];
    for (irq, gsi, flags) in overrides {
        body.extend_from_slice(&[MADT_INTERRUPT_OVERRIDE, 10, 0, irq]);
        body.extend_from_slice(&gsi.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    }
    // All processors (0xff), default polarity and trigger, LINT1.
    body.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    let mut table = table_header(*b"APIC", 1, body.len());
    table.extend_from_slice(&body);
    table
}

/// The Windows ACPI Emulated devices Table: the PM timer is reliable (one read suffices).
pub fn waet() -> Vec<u8> {
    const PM_TIMER_GOOD: u32 = 1 << 1;
    let mut table = table_header(*b"WAET", 1, 4);
    table.extend_from_slice(&PM_TIMER_GOOD.to_le_bytes());
    table
}

/// An RSDT with room for `count` 32-bit pointers (filled by [`TableBlob::pointer`]).
pub fn rsdt(count: usize) -> Vec<u8> {
    let mut table = table_header(*b"RSDT", 1, 4 * count);
    table.resize(HEADER_LEN + 4 * count, 0);
    table
}

/// Where the RSDP's RSDT pointer is.
pub const RSDP_RSDT_FIELD: u32 = 16;
/// The length the RSDP's (revision 0) checksum covers: all of it.
pub const RSDP_LEN: u32 = 20;

/// A revision 0 (ACPI 1.0) RSDP, its RSDT pointer holding `rsdt_offset` in the tables file.
pub fn rsdp(rsdt_offset: u32) -> Vec<u8> {
    let mut rsdp = Vec::with_capacity(RSDP_LEN as usize);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(&OEM_ID);
    rsdp.push(0);
    rsdp.extend_from_slice(&rsdt_offset.to_le_bytes());
    rsdp
}
