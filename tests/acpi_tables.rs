//! vmscope's ACPI tables against the ones QEMU 7.2 gives a guest.
//!
//! QEMU runs the test kernel (`serial-echo`, which waits) with `-accel tcg`; its RAM is
//! saved with HMP `pmemsave`, and the tables SeaBIOS installed from QEMU's fw_cfg loader
//! are read from it by following the RSDP. vmscope's tables are built for the same machine
//! and linked by the same loader commands. Tables that describe the same hardware must be
//! identical but for the addresses and checksums the placement decides; the DSDT is compared
//! device by device on `iasl -d` output. vmscope's deliberate differences: no HPET (table
//! and device), no hotplug, floppy, parallel port, PS/2 mouse or VGA, no `\_S3`.
//!
//! Also: SeaBIOS on vmscope takes the tables from fw_cfg (its debug log says where it found
//! the FADT and that it parsed the DSDT), as on QEMU.

mod common;

use common::temp_dir::TempDir;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::guest_kernel::test_kernel;
use vmscope::machine::acpi::{AcpiFacts, AcpiTables, RSDP_FILE, TABLES_FILE};
use vmscope::machine::layout::RamSplit;

const RAM: u64 = 128 << 20;

fn iasl_available() -> bool {
    Command::new("iasl").arg("-v").output().is_ok()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Reads HMP output until the prompt.
fn until_prompt(stream: &mut UnixStream) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(b"(qemu) ") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "monitor closed: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// QEMU 7.2's RAM with `-smp smp`, once the test kernel runs.
fn qemu_ram(dir: &Path, smp: &str) -> Vec<u8> {
    let tag = smp.replace([',', '='], "-");
    let serial = dir.join(format!("serial-{tag}"));
    let socket = dir.join(format!("hmp-{tag}.sock"));
    let dump = dir.join(format!("ram-{tag}.bin"));
    let mut qemu = Command::new(common::qemu::binary())
        .args([
            "-accel",
            "tcg",
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "128",
        ])
        .args(["-smp", smp])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(test_kernel())
        .args(["-append", "serial-echo"])
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .contains("serial-echo: ready")
        || !socket.exists()
    {
        assert!(
            Instant::now() < deadline,
            "QEMU's test kernel did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut monitor = UnixStream::connect(&socket).unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    until_prompt(&mut monitor);
    monitor
        .write_all(format!("pmemsave 0 {RAM} \"{}\"\n", dump.display()).as_bytes())
        .unwrap();
    until_prompt(&mut monitor);
    monitor.write_all(b"quit\n").unwrap();
    let _ = qemu.wait();
    std::fs::read(&dump).unwrap()
}

/// Every table reachable from the RSDP in `ram` (an RSDP scan of the BIOS area, as an OS
/// does), by signature, in RSDT order, with the FACS and DSDT after the FADT.
fn tables_in(ram: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let rsdp = (0xe0000..0x100000)
        .step_by(16)
        .find(|&a| &ram[a..a + 8] == b"RSD PTR ")
        .expect("an RSDP in the BIOS area");
    let table = |address: u32| {
        let at = address as usize;
        let len = u32_at(ram, at + 4) as usize;
        (
            ram[at..at + 4].try_into().unwrap(),
            ram[at..at + len].to_vec(),
        )
    };
    let (_, rsdt) = table(u32_at(ram, rsdp + 16));
    let mut found = vec![(*b"RSDT", rsdt.clone())];
    for entry in (36..rsdt.len()).step_by(4) {
        let (signature, bytes) = table(u32_at(&rsdt, entry));
        if &signature == b"FACP" {
            let facs = u32_at(&bytes, 36) as usize;
            found.push((*b"FACS", ram[facs..facs + 64].to_vec()));
            found.push(table(u32_at(&bytes, 40)));
        }
        found.push((signature, bytes));
    }
    found
}

/// vmscope's tables for the same machine (`cpus` of `max_cpus` vCPUs, one per socket),
/// linked as firmware would place them.
fn our_tables(cpus: usize, max_cpus: u32) -> Vec<([u8; 4], Vec<u8>)> {
    let split = RamSplit::for_ram_size(RAM);
    let apic_ids: Vec<u32> = (0..max_cpus).collect();
    let tables = AcpiTables::build(&AcpiFacts {
        split: &split,
        apic_ids: &apic_ids,
        present: cpus,
    });
    let linked = tables
        .link(|file, _, _, _| {
            if file == RSDP_FILE {
                0xf_5000
            } else {
                0x7fe_0000
            }
        })
        .unwrap();
    let mut ram = vec![0u8; 0x800_0000];
    for (address, data) in linked.values() {
        ram[*address as usize..*address as usize + data.len()].copy_from_slice(data);
    }
    assert_eq!(linked[TABLES_FILE].0, 0x7fe_0000);
    tables_in(&ram)
}

fn get<'a>(tables: &'a [([u8; 4], Vec<u8>)], signature: &[u8; 4]) -> &'a [u8] {
    &tables
        .iter()
        .find(|(s, _)| s == signature)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(signature)))
        .1
}

/// `iasl -d` of a table: the disassembly without its header comment.
fn disassemble(dir: &Path, name: &str, table: &[u8]) -> String {
    let file = dir.join(format!("{name}.dat"));
    std::fs::write(&file, table).unwrap();
    let output = Command::new("iasl")
        .arg("-d")
        .arg(&file)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "iasl -d {name}");
    let text = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
    text[text.find("DefinitionBlock").unwrap()..].to_string()
}

/// The first block that starts at a line containing `header` (that line and everything up
/// to its closing brace, indentation removed) and contains `containing`.
fn block(text: &str, header: &str, containing: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    (0..lines.len())
        .filter(|&i| lines[i].contains(header))
        .map(|start| {
            let mut depth = 0i32;
            let mut out = Vec::new();
            for (i, line) in lines[start..].iter().enumerate() {
                out.push(line.trim());
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                let opens_next = lines.get(start + i + 1).map(|l| l.trim()) == Some("{");
                if depth == 0 && (out.len() > 1 || !opens_next) {
                    break;
                }
            }
            out.join("\n")
        })
        .find(|block| block.contains(containing))
}

#[test]
fn fixed_tables_and_dsdt_devices_match_qemus() {
    if !iasl_available() {
        eprintln!("SKIPPED: iasl (acpica-tools) is not installed");
        return;
    }
    let dir = TempDir::new("acpi-diff");
    // Possible but absent vCPUs (maxcpus) are listed disabled.
    for (smp, cpus, max_cpus) in [("1", 1, 1), ("4", 4, 4), ("2,maxcpus=4", 2, 4)] {
        let qemu = tables_in(&qemu_ram(&dir.0, smp));
        let ours = our_tables(cpus, max_cpus);

        // The same tables but QEMU's HPET, in the same order.
        let signatures = |tables: &[([u8; 4], Vec<u8>)]| -> Vec<String> {
            tables
                .iter()
                .map(|(s, _)| String::from_utf8_lossy(s).into_owned())
                .filter(|s| s != "HPET")
                .collect()
        };
        assert_eq!(signatures(&ours), signatures(&qemu));

        // Identical bytes, checksums included.
        for signature in [b"APIC", b"FACS", b"WAET"] {
            assert_eq!(
                get(&ours, signature),
                get(&qemu, signature),
                "{} with -smp {smp}",
                String::from_utf8_lossy(signature)
            );
        }
        // The FADT: all but the checksum and the FACS/DSDT addresses.
        let mask = |fadt: &[u8]| {
            let mut fadt = fadt.to_vec();
            fadt[9] = 0;
            fadt[36..44].fill(0);
            fadt
        };
        assert_eq!(mask(get(&ours, b"FACP")), mask(get(&qemu, b"FACP")));

        // The DSDT, device by device.
        let ours_dsl = disassemble(&dir.0, "ours", get(&ours, b"DSDT"));
        let qemu_dsl = disassemble(&dir.0, "qemu", get(&qemu, b"DSDT"));
        let mut compared = 0;
        for (header, containing) in [
            ("Name (_CRS, ResourceTemplate ()", "WordBusNumber"),
            ("Method (IQST, 1", ""),
            ("Method (IQCR, 1", ""),
            ("Device (LNKA)", ""),
            ("Device (LNKB)", ""),
            ("Device (LNKC)", ""),
            ("Device (LNKD)", ""),
            ("Device (LNKS)", ""),
            ("Device (GPE0)", ""),
            ("Device (FWCF)", ""),
            ("OperationRegion (P40C", ""),
            ("Field (PCI0.S08.P40C", ""),
            ("Device (KBD)", ""),
            ("Device (COM1)", ""),
            ("Device (RTC)", ""),
            ("Name (_S4,", ""),
            ("Name (_S5,", ""),
            ("Name (_HID, \"ACPI0006\"", ""),
            ("Name (_MAT, Buffer (0x08)", ""),
            ("Device (PCI0)", ""),
        ] {
            let ours_block = block(&ours_dsl, header, containing);
            let qemu_block = block(&qemu_dsl, header, containing);
            assert!(qemu_block.is_some(), "QEMU's DSDT has no {header}");
            assert_eq!(ours_block, qemu_block, "{header} with -smp {smp}");
            compared += 1;
        }
        assert_eq!(compared, 20);
    }
}

/// SeaBIOS's debug log (isa-debugcon at 0x402) from a firmware boot with nothing to boot,
/// ended by `-no-reboot`.
fn seabios_log(binary: &Path, extra: &[&str], dir: &Path, tag: &str) -> String {
    let log = dir.join(format!("seabios-{tag}.log"));
    let status = Command::new(binary)
        .args(extra)
        .args(["-display", "none", "-nodefaults", "-m", "128", "-no-reboot"])
        .args(["-boot", "reboot-timeout=0"])
        .arg("-chardev")
        .arg(format!("file,id=debuglog,path={}", log.display()))
        .args(["-device", "isa-debugcon,chardev=debuglog,iobase=0x402"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{binary:?}");
    std::fs::read_to_string(&log).unwrap()
}

/// The log lines about ACPI, hex numbers and lengths masked.
fn acpi_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("table(") || l.contains("ACPI") || l.contains("RSDP"))
        .map(|l| {
            l.split(' ')
                .map(|word| match word.find("0x") {
                    Some(at) => format!("{}0x?", &word[..at]),
                    None if word.trim_end_matches(')').parse::<u32>().is_ok() => "N".into(),
                    None => word.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn seabios_installs_the_tables_from_the_loader_like_on_qemu() {
    let name = "seabios_installs_the_tables_from_the_loader_like_on_qemu";
    if !common::kvm::require(name) {
        return;
    }
    let dir = TempDir::new("acpi-seabios");
    let qemu = seabios_log(common::qemu::binary(), &["-accel", "tcg"], &dir.0, "qemu");
    let ours = seabios_log(
        Path::new(env!("CARGO_BIN_EXE_vmscope")),
        &[],
        &dir.0,
        "vmscope",
    );
    // The FADT lies in etc/acpi/tables, which SeaBIOS allocated at the top of low RAM
    // (128 MiB - 128 KiB); SeaBIOS then parsed the DSDT (for its own device probing).
    for log in [&qemu, &ours] {
        // With QEMU's loader present SeaBIOS puts the PM block where the FADT says.
        assert!(log.contains("Moving pm_base to 0x600"), "{log}");
        assert!(log.contains("table(50434146)=0x07fe"), "{log}");
        assert!(log.contains("ACPI: parse DSDT at 0x07fe0040"), "{log}");
    }
    assert_eq!(acpi_lines(&ours), acpi_lines(&qemu));
    common::kvm::record_use(name);
}
