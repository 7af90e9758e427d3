//! Direct boot of a real Linux bzImage (Debian's `linux-image-amd64`, installed by
//! scripts/setup-debian.sh): the zero page and entry state follow the 64-bit boot protocol,
//! and the kernel, entered that way, finds its command line and acts on it.
//!
//! A stock Linux cannot finish booting on these machines (see spec/environment.md), so the
//! end-to-end check stops at the decompressor's early console, which parses
//! `earlyprintk=serial,ttyS0,BAUD` from the command line found through the zero page and
//! programs COM1's divisor latch for that baud rate.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmscope::config::{Config, KernelBoot};
use vmscope::machine::boot::{load_kernel, BootEntry, ZERO_PAGE_ADDR};
use vmscope::machine::e820::memory_map;
use vmscope::machine::layout::RamSplit;
use vmscope::machine::Machine;

fn debian_kernel() -> PathBuf {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("/boot is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels
        .pop()
        .expect("no /boot/vmlinuz-*: install Debian's linux-image-amd64 (scripts/setup-debian.sh)")
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

#[test]
fn zero_page_follows_the_64_bit_boot_protocol() {
    let kernel = debian_kernel();
    let image = std::fs::read(&kernel).unwrap();
    let initrd = std::env::temp_dir().join(format!("vmscope-initrd-{}", std::process::id()));
    std::fs::write(&initrd, vec![0x5a; 123_457]).unwrap();

    let split = RamSplit::for_ram_size(512 << 20);
    let memory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), split.below_4g as usize)]).unwrap();
    let e820 = memory_map(&split, true);
    let cmdline = "console=ttyS0 root=/dev/vda quiet";
    let boot = KernelBoot {
        kernel: kernel.clone(),
        initrd: Some(initrd.clone()),
        cmdline: cmdline.into(),
    };
    let entry = load_kernel(&memory, &boot, &split, &e820, 0xe0000).unwrap();
    std::fs::remove_file(&initrd).unwrap();

    assert_eq!(
        entry,
        BootEntry::Linux64 {
            entry: 0x10_0200,
            zero_page: ZERO_PAGE_ADDR
        }
    );
    let mut zp = vec![0u8; 4096];
    memory
        .read_slice(&mut zp, GuestAddress(ZERO_PAGE_ADDR))
        .unwrap();
    // The setup header is the image's own, with the loader's fields filled in.
    let setup_sects = image[0x1f1] as usize;
    assert_eq!(zp[0x1f1], image[0x1f1]);
    assert_eq!(u16_at(&zp, 0x1fe), 0xaa55, "boot_flag");
    assert_eq!(&zp[0x202..0x206], b"HdrS");
    assert_eq!(
        u16_at(&zp, 0x206),
        u16_at(&image, 0x206),
        "protocol version"
    );
    assert_eq!(zp[0x210], 0xff, "type_of_loader");
    assert_eq!(zp[0x211] & 1, 1, "LOADED_HIGH");
    assert_eq!(u64_at(&zp, 0x070), 0xe0000, "acpi_rsdp_addr");

    let cmd_line_ptr = u32_at(&zp, 0x228) as u64;
    let mut found = vec![0u8; cmdline.len() + 1];
    memory
        .read_slice(&mut found, GuestAddress(cmd_line_ptr))
        .unwrap();
    assert_eq!(&found[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(found[cmdline.len()], 0, "NUL-terminated");
    assert_eq!(u32_at(&zp, 0x238) as usize, cmdline.len(), "cmdline_size");

    let ramdisk_image = u32_at(&zp, 0x218) as u64;
    let ramdisk_size = u32_at(&zp, 0x21c);
    assert_eq!(ramdisk_size, 123_457);
    assert_eq!(ramdisk_image % 4096, 0);
    assert!(ramdisk_image + u64::from(ramdisk_size) <= split.below_4g);
    let mut rd = vec![0u8; ramdisk_size as usize];
    memory
        .read_slice(&mut rd, GuestAddress(ramdisk_image))
        .unwrap();
    assert!(rd.iter().all(|&b| b == 0x5a));

    // The e820 table is the machine's map.
    assert_eq!(zp[0x1e8] as usize, e820.len());
    for (i, entry) in e820.iter().enumerate() {
        let at = 0x2d0 + i * 20;
        assert_eq!(
            (u64_at(&zp, at), u64_at(&zp, at + 8), u32_at(&zp, at + 16)),
            (entry.addr, entry.size, entry.kind)
        );
    }

    // The protected-mode kernel is at 1 MiB, byte for byte.
    let pm_offset = (setup_sects + 1) * 512;
    let mut loaded = vec![0u8; 64 * 1024];
    memory
        .read_slice(&mut loaded, GuestAddress(0x10_0000))
        .unwrap();
    assert_eq!(&loaded[..], &image[pm_offset..pm_offset + loaded.len()]);
}

#[test]
fn the_kernel_entered_in_long_mode_reads_its_command_line() {
    if !common::kvm::require("the_kernel_entered_in_long_mode_reads_its_command_line") {
        return;
    }
    let config = Config {
        kernel_boot: Some(KernelBoot {
            kernel: debian_kernel(),
            initrd: None,
            cmdline: "earlyprintk=serial,ttyS0,9600 console=ttyS0".into(),
        }),
        ..Config::default()
    };
    let mut machine = Machine::new(&config, Box::new(std::io::sink()), Box::new(|| {})).unwrap();
    let serial = machine.serial();
    machine.start(false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // 115200 / 9600 = 12, 8 data bits, no parity, 1 stop bit.
    while serial.line_settings() != (12, 0x03) {
        assert!(
            Instant::now() < deadline,
            "the decompressor never programmed COM1 for 9600 baud: {:?}",
            serial.line_settings()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    machine.shutdown();
    common::kvm::record_use("the_kernel_entered_in_long_mode_reads_its_command_line");
}
