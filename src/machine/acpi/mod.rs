//! ACPI tables for the `pc` machine, built as QEMU 7.2 builds them and delivered the same
//! way: under firmware boot as the fw_cfg files `etc/acpi/tables`, `etc/acpi/rsdp` and
//! `etc/table-loader` (the BIOS linker/loader commands SeaBIOS runs to place and patch
//! them); under direct kernel boot by applying those same commands here and writing the
//! result into the BIOS area, where the RSDP is handed to the kernel and also found by a
//! scan.
//!
//! Tables: RSDP (revision 0) -> RSDT -> FADT (-> FACS, DSDT), MADT, WAET. QEMU 7.2's `pc`
//! has no XSDT; it adds an HPET table, and vmscope has no HPET.

pub mod dsdt;
pub mod linker;
pub mod tables;

use std::collections::BTreeMap;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{RamSplit, SYSTEM_BIOS_START};
use crate::hw::pc::piix4_pm::DIRECT_BOOT_PM_BASE;
use crate::hw::pm::GPE0_IO_BASE;
use linker::{Command, LinkError, Zone};
use tables::TableBlob;

/// The fw_cfg file names QEMU uses.
pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const LOADER_FILE: &str = "etc/table-loader";

/// QEMU pads `etc/acpi/tables` to 128 KiB so that its size (and where firmware puts it)
/// does not change with the configuration.
const TABLES_FILE_SIZE: usize = 0x20000;

/// Under direct boot: the RSDP at the start of the E-segment, the tables after it; the
/// whole set must stay below 1 MiB.
pub const RSDP_ADDR: u64 = SYSTEM_BIOS_START;
const DIRECT_BOOT_TABLES_ADDR: u64 = SYSTEM_BIOS_START + 0x40;
const BIOS_AREA_END: u64 = 0x10_0000;

/// The SCI's ISA IRQ, and the APM control port with QEMU's ACPI enable/disable values.
const SCI_IRQ: u16 = 9;
const SMI_COMMAND_PORT: u16 = 0xb2;
const ACPI_ENABLE: u8 = 0xf1;
const ACPI_DISABLE: u8 = 0xf0;

/// What the tables describe.
pub struct AcpiFacts<'a> {
    pub split: &'a RamSplit,
    /// The APIC id of each present vCPU, in vCPU order (the processor uid).
    pub apic_ids: &'a [u32],
}

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("the ACPI tables ({0} bytes) do not fit in the BIOS area")]
    TooLarge(usize),
    #[error("writing the ACPI tables to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// The built tables: the two blobs and the loader commands that place and link them.
pub struct AcpiTables {
    pub tables: Vec<u8>,
    pub rsdp: Vec<u8>,
    pub commands: Vec<Command>,
}

impl AcpiTables {
    /// Builds every table, in QEMU's order within `etc/acpi/tables`.
    pub fn build(facts: &AcpiFacts) -> AcpiTables {
        let mut blob = TableBlob {
            file: TABLES_FILE,
            data: Vec::new(),
            commands: vec![Command::Allocate {
                file: TABLES_FILE,
                align: 64,
                zone: Zone::High,
            }],
        };
        let facs = blob.append(&tables::facs(), 64);
        let dsdt = blob.append(
            &dsdt::build(&dsdt::DsdtFacts {
                split: facts.split,
                apic_ids: facts.apic_ids,
            }),
            1,
        );
        blob.checksum(dsdt);
        let fadt = blob.append(
            &tables::fadt(&tables::FadtFacts {
                pm_base: DIRECT_BOOT_PM_BASE,
                gpe0_base: GPE0_IO_BASE,
                sci_irq: SCI_IRQ,
                smi_command: SMI_COMMAND_PORT,
                acpi_enable: ACPI_ENABLE,
                acpi_disable: ACPI_DISABLE,
            }),
            1,
        );
        blob.pointer(fadt + tables::FADT_FACS_FIELD, facs);
        blob.pointer(fadt + tables::FADT_DSDT_FIELD, dsdt);
        blob.checksum(fadt);
        let madt = blob.append(&tables::madt(facts.apic_ids), 1);
        blob.checksum(madt);
        let waet = blob.append(&tables::waet(), 1);
        blob.checksum(waet);
        let listed = [fadt, madt, waet];
        let rsdt = blob.append(&tables::rsdt(listed.len()), 1);
        for (index, table) in listed.into_iter().enumerate() {
            blob.pointer(rsdt + tables::HEADER_LEN as u32 + 4 * index as u32, table);
        }
        blob.checksum(rsdt);

        let mut commands = blob.commands;
        commands.push(Command::Allocate {
            file: RSDP_FILE,
            align: 16,
            zone: Zone::FSeg,
        });
        commands.push(Command::AddPointer {
            dest: RSDP_FILE,
            source: TABLES_FILE,
            offset: tables::RSDP_RSDT_FIELD,
            size: 4,
        });
        commands.push(Command::AddChecksum {
            file: RSDP_FILE,
            offset: 8,
            start: 0,
            length: tables::RSDP_LEN,
        });
        AcpiTables {
            tables: blob.data,
            rsdp: tables::rsdp(rsdt),
            commands,
        }
    }

    /// The fw_cfg files firmware loads the tables from, with QEMU's names and padding.
    pub fn fw_cfg_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut tables = self.tables.clone();
        tables.resize(tables.len().max(TABLES_FILE_SIZE), 0);
        vec![
            (TABLES_FILE, tables),
            (RSDP_FILE, self.rsdp.clone()),
            (LOADER_FILE, linker::serialize(&self.commands)),
        ]
    }

    /// Runs the loader commands with the files placed at `place`'s addresses: every
    /// table, patched and checksummed, with its address.
    pub fn link(
        &self,
        place: impl FnMut(&'static str, usize, u32, Zone) -> u64,
    ) -> Result<BTreeMap<&'static str, (u64, Vec<u8>)>, LinkError> {
        let files = BTreeMap::from([
            (TABLES_FILE, self.tables.clone()),
            (RSDP_FILE, self.rsdp.clone()),
        ]);
        linker::link(&self.commands, &files, place)
    }

    /// Direct kernel boot: the linked tables written into the E-segment; returns the RSDP
    /// address to hand to the kernel.
    pub fn write_to(&self, memory: &GuestMemoryMmap) -> Result<u64, AcpiError> {
        let end = DIRECT_BOOT_TABLES_ADDR + self.tables.len() as u64;
        if end > BIOS_AREA_END {
            return Err(AcpiError::TooLarge(self.tables.len()));
        }
        let linked = self.link(|file, _, _, _| {
            if file == RSDP_FILE {
                RSDP_ADDR
            } else {
                DIRECT_BOOT_TABLES_ADDR
            }
        })?;
        for (address, data) in linked.values() {
            memory.write_slice(data, GuestAddress(*address))?;
        }
        Ok(RSDP_ADDR)
    }
}

#[cfg(test)]
mod tests;
