use super::*;

fn facts_split(ram: u64) -> RamSplit {
    RamSplit::for_ram_size(ram)
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Links the tables at 0x7fe0000 / 0xf5000 (where SeaBIOS puts them for 128 MiB) and
/// returns (address, bytes) of every table reachable from the RSDP, DSDT and FACS included.
fn reachable(tables: &AcpiTables) -> Vec<(u64, Vec<u8>)> {
    let linked = tables
        .link(|file, _, align, zone| match (file, zone) {
            (RSDP_FILE, Zone::FSeg) => {
                assert_eq!(align, 16);
                0xf_5000
            }
            (TABLES_FILE, Zone::High) => {
                assert_eq!(align, 64);
                0x7fe_0000
            }
            other => panic!("unexpected allocation {other:?}"),
        })
        .unwrap();
    let (rsdp_addr, rsdp) = &linked[RSDP_FILE];
    let (base, blob) = &linked[TABLES_FILE];
    assert_eq!(*rsdp_addr, 0xf_5000);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp.len(), 20);
    assert_eq!(rsdp[15], 0, "revision 0, as QEMU 7.2's pc");
    assert_eq!(sum(rsdp), 0);
    let table_at = |address: u64| {
        let offset = (address - base) as usize;
        let len = u32_at(blob, offset + 4) as usize;
        blob[offset..offset + len].to_vec()
    };
    let rsdt_addr = u64::from(u32_at(rsdp, 16));
    let rsdt = table_at(rsdt_addr);
    let mut found = vec![(rsdt_addr, rsdt.clone())];
    for entry in (36..rsdt.len()).step_by(4) {
        let address = u64::from(u32_at(&rsdt, entry));
        let table = table_at(address);
        if &table[..4] == b"FACP" {
            let facs = u64::from(u32_at(&table, 36));
            let dsdt = u64::from(u32_at(&table, 40));
            assert_eq!(facs % 64, 0, "the FACS is 64-byte aligned");
            found.push((facs, table_at(facs)));
            found.push((dsdt, table_at(dsdt)));
        }
        found.push((address, table));
    }
    found
}

#[test]
fn tables_link_from_the_rsdp_with_valid_checksums() {
    let split = facts_split(128 << 20);
    let tables = AcpiTables::build(&AcpiFacts {
        split: &split,
        apic_ids: &[0, 1, 2, 3],
    });
    let found = reachable(&tables);
    let signatures: Vec<&[u8]> = found.iter().map(|(_, t)| &t[..4]).collect();
    assert_eq!(
        signatures,
        [&b"RSDT"[..], b"FACS", b"DSDT", b"FACP", b"APIC", b"WAET"]
    );
    for (_, table) in &found {
        if &table[..4] != b"FACS" {
            assert_eq!(sum(table), 0, "{}", String::from_utf8_lossy(&table[..4]));
            assert_eq!(&table[10..16], b"BOCHS ");
            assert_eq!(&table[28..32], b"BXPC");
        }
    }
    let fadt = &found.iter().find(|(_, t)| &t[..4] == b"FACP").unwrap().1;
    assert_eq!(fadt.len(), 116);
    assert_eq!(fadt[8], 1, "FADT revision 1");
    assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI");
    assert_eq!(u32_at(fadt, 56), 0x600, "PM1a event block");
    assert_eq!(u32_at(fadt, 64), 0x604, "PM1a control block");
    assert_eq!(u32_at(fadt, 76), 0x608, "PM timer");
    assert_eq!(u32_at(fadt, 80), 0xafe0, "GPE0");
    assert_eq!(u32_at(fadt, 112), 0x80a5, "flags: fixed power button");
    let madt = &found.iter().find(|(_, t)| &t[..4] == b"APIC").unwrap().1;
    assert_eq!(madt.len(), 44 + 4 * 8 + 12 + 5 * 10 + 6);
}

#[test]
fn one_cpu_madt_is_byte_identical_to_qemus() {
    // QEMU 7.2 `-m 128` (one vCPU): the MADT as SeaBIOS installed it, checksum included.
    let qemu: [u8; 120] = [
        0x41, 0x50, 0x49, 0x43, 0x78, 0x00, 0x00, 0x00, 0x01, 0x8a, 0x42, 0x4f, 0x43, 0x48, 0x53,
        0x20, 0x42, 0x58, 0x50, 0x43, 0x20, 0x20, 0x20, 0x20, 0x01, 0x00, 0x00, 0x00, 0x42, 0x58,
        0x50, 0x43, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0xfe, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xfe,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x0a, 0x00, 0x05, 0x05, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x02, 0x0a, 0x00, 0x09, 0x09, 0x00,
        0x00, 0x00, 0x0d, 0x00, 0x02, 0x0a, 0x00, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x02,
        0x0a, 0x00, 0x0b, 0x0b, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x04, 0x06, 0xff, 0x00, 0x00, 0x01,
    ];
    let split = facts_split(128 << 20);
    let tables = AcpiTables::build(&AcpiFacts {
        split: &split,
        apic_ids: &[0],
    });
    let madt = reachable(&tables)
        .into_iter()
        .find(|(_, t)| &t[..4] == b"APIC")
        .unwrap()
        .1;
    assert_eq!(madt, qemu);
}

#[test]
fn fadt_facs_and_waet_match_qemus_bytes_but_for_pointers() {
    let split = facts_split(128 << 20);
    let tables = AcpiTables::build(&AcpiFacts {
        split: &split,
        apic_ids: &[0],
    });
    let found = reachable(&tables);
    let get = |sig: &[u8]| {
        found
            .iter()
            .find(|(_, t)| &t[..4] == sig)
            .unwrap()
            .1
            .clone()
    };
    // QEMU 7.2's FADT from byte 44 on (after the FACS/DSDT pointers).
    let qemu_fadt_tail: [u8; 72] = [
        0x01, 0x00, 0x09, 0x00, 0xb2, 0x00, 0x00, 0x00, 0xf1, 0xf0, 0x00, 0x00, 0x00, 0x06, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x08, 0x06, 0x00, 0x00, 0xe0, 0xaf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
        0x02, 0x00, 0x04, 0x04, 0x00, 0x00, 0x00, 0xff, 0x0f, 0xff, 0x0f, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x00, 0xa5, 0x80, 0x00, 0x00,
    ];
    assert_eq!(&get(b"FACP")[44..], &qemu_fadt_tail[..]);
    let mut facs = vec![0u8; 64];
    facs[..8].copy_from_slice(b"FACS\x40\0\0\0");
    assert_eq!(get(b"FACS"), facs);
    let waet = get(b"WAET");
    assert_eq!(waet[9], 0x39, "QEMU's WAET checksum: same bytes");
    assert_eq!(&waet[36..], &[2, 0, 0, 0]);
}

#[test]
fn loader_commands_in_qemus_order() {
    let split = facts_split(128 << 20);
    let tables = AcpiTables::build(&AcpiFacts {
        split: &split,
        apic_ids: &[0],
    });
    let kinds: Vec<String> = tables
        .commands
        .iter()
        .map(|c| match c {
            Command::Allocate { file, .. } => format!("alloc {file}"),
            Command::AddPointer { dest, offset, .. } => format!("ptr {dest}+{offset}"),
            Command::AddChecksum { file, offset, .. } => format!("sum {file}+{offset}"),
        })
        .collect();
    assert_eq!(kinds.first().unwrap(), "alloc etc/acpi/tables");
    assert_eq!(
        &kinds[kinds.len() - 3..],
        [
            "alloc etc/acpi/rsdp",
            "ptr etc/acpi/rsdp+16",
            "sum etc/acpi/rsdp+8"
        ]
    );
    let files = tables.fw_cfg_files();
    assert_eq!(files[0].0, "etc/acpi/tables");
    assert_eq!(files[0].1.len(), 0x20000);
    assert_eq!(files[2].1.len() % 4096, 0);
    assert!(files[2].1.len() / 128 >= tables.commands.len());
}

#[test]
fn direct_boot_writes_the_linked_tables_below_1_mib() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let split = facts_split(1 << 20);
    let tables = AcpiTables::build(&AcpiFacts {
        split: &split,
        apic_ids: &[0, 1],
    });
    let rsdp_addr = tables.write_to(&mem).unwrap();
    assert_eq!(rsdp_addr, 0xe0000);
    let mut rsdp = [0u8; 20];
    mem.read_slice(&mut rsdp, GuestAddress(rsdp_addr)).unwrap();
    assert_eq!(sum(&rsdp), 0);
    let rsdt_addr = u32_at(&rsdp, 16);
    let mut header = [0u8; 36];
    mem.read_slice(&mut header, GuestAddress(u64::from(rsdt_addr)))
        .unwrap();
    assert_eq!(&header[..4], b"RSDT");
    assert!(u64::from(rsdt_addr) < 0x10_0000);
}

/// Every table, disassembled by ACPICA's `iasl -d` without errors (skipped when
/// acpica-tools is not installed).
#[test]
fn iasl_disassembles_every_table() {
    if std::process::Command::new("iasl")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: iasl (acpica-tools) is not installed");
        return;
    }
    for (ram, cpus) in [(128u64 << 20, 1u32), (6 << 30, 4)] {
        let split = facts_split(ram);
        let apic_ids: Vec<u32> = (0..cpus).collect();
        let tables = AcpiTables::build(&AcpiFacts {
            split: &split,
            apic_ids: &apic_ids,
        });
        // Direct boot: the tables as written into guest memory, found from the RSDP there.
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let rsdp = tables.write_to(&mem).unwrap();
        let direct = walk_memory(&mem, rsdp);
        // Firmware boot: as SeaBIOS links them.
        let firmware = reachable(&tables);
        assert_eq!(direct.len(), firmware.len());
        for (path, set) in [("direct", direct), ("firmware", firmware)] {
            let dir = std::env::temp_dir().join(format!(
                "vmscope-iasl-{}-{ram}-{cpus}-{path}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            for (_, table) in set {
                let name = String::from_utf8_lossy(&table[..4]).to_string();
                let file = dir.join(format!("{name}.dat"));
                std::fs::write(&file, &table).unwrap();
                let output = std::process::Command::new("iasl")
                    .arg("-d")
                    .arg(&file)
                    .current_dir(&dir)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&output.stdout).to_string()
                    + &String::from_utf8_lossy(&output.stderr);
                assert!(output.status.success(), "iasl -d {name}: {text}");
                assert!(
                    !text.contains("Error") && !text.contains("Warning"),
                    "iasl -d {name}: {text}"
                );
                let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
                if name == "DSDT" {
                    for needle in [
                        "EisaId (\"PNP0A03\")",
                        "Device (LNKA)",
                        "Device (LNKS)",
                        "Name (_PRT, Package (0x80)",
                        "Name (_S4, Package (0x04)",
                        "Name (_S5, Package (0x04)",
                        "EisaId (\"PNP0501\")",
                        "EisaId (\"PNP0B00\")",
                        "\"QEMU0002\"",
                        "Processor (C000, 0x00, 0x00000000, 0x00)",
                    ] {
                        assert!(dsl.contains(needle), "DSDT lacks {needle}:\n{dsl}");
                    }
                    // Compiling the disassembly back resolves every name the AML refers to.
                    let output = std::process::Command::new("iasl")
                        .args(["-p", "recompiled"])
                        .arg(dir.join("DSDT.dsl"))
                        .current_dir(&dir)
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&output.stdout).to_string()
                        + &String::from_utf8_lossy(&output.stderr);
                    assert!(output.status.success(), "iasl DSDT.dsl: {text}");
                    assert!(text.contains(" 0 Errors"), "iasl DSDT.dsl: {text}");
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

/// Every table reachable from the RSDP at `rsdp` in guest memory (FACS and DSDT after the
/// FADT, as [`reachable`] orders them).
fn walk_memory(mem: &GuestMemoryMmap, rsdp: u64) -> Vec<(u64, Vec<u8>)> {
    let read = |address: u64, len: usize| {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(address)).unwrap();
        buf
    };
    let table = |address: u64| {
        let len = u32_at(&read(address, 8), 4) as usize;
        read(address, len)
    };
    let rsdp_bytes = read(rsdp, 20);
    assert_eq!(sum(&rsdp_bytes), 0);
    let rsdt_addr = u64::from(u32_at(&rsdp_bytes, 16));
    let rsdt = table(rsdt_addr);
    let mut found = vec![(rsdt_addr, rsdt.clone())];
    for entry in (36..rsdt.len()).step_by(4) {
        let address = u64::from(u32_at(&rsdt, entry));
        let t = table(address);
        if &t[..4] == b"FACP" {
            let facs = u64::from(u32_at(&t, 36));
            let dsdt = u64::from(u32_at(&t, 40));
            found.push((facs, read(facs, 64)));
            found.push((dsdt, table(dsdt)));
        }
        found.push((address, t));
    }
    for (_, t) in &found {
        if &t[..4] != b"FACS" {
            assert_eq!(sum(t), 0);
        }
    }
    found
}
