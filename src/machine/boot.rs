//! Direct kernel boot (`-kernel`, `-initrd`, `-append`): loads an ELF with a PVH note or a
//! bzImage into guest memory, writes what the boot protocol hands over (PVH `hvm_start_info`
//! or the Linux zero page), and describes the register state the boot vCPU starts in.

use std::fs::File;
use std::path::PathBuf;

use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::e820::E820Entry;
use super::layout::{RamSplit, HIGH_MEMORY_START};
use crate::config::KernelBoot;

/// Boot GDT: null, null, code64 (0x10), data (0x18), 32-bit code (0x20 is the TSS slot
/// after them would clash, so the 32-bit code segment lives at 0x28).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`, then its memory map, then the module list.
const PVH_START_INFO_ADDR: u64 = 0x6000;
const PVH_MEMMAP_ADDR: u64 = PVH_START_INFO_ADDR + 0x40;
const PVH_MODLIST_ADDR: u64 = 0x6c00;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Identity-mapping page tables for the 64-bit entry: PML4, PDPT, then four page directories.
pub const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line accepted (the PVH protocol has no limit of its own).
const CMDLINE_MAX: usize = 0x10000;
/// QEMU keeps the top 128 KiB of low RAM free for ACPI data when placing the initrd.
const INITRD_TOP_RESERVE: u64 = 0x20000;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const LINUX_BOOT_FLAG: u16 = 0xaa55;
const LINUX_HDRS_MAGIC: u32 = 0x5372_6448;
/// `xloadflags` bit: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `type_of_loader` for a boot loader without an assigned id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `loadflags` bit: the protected-mode code is loaded at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh { entry: u64, start_info: u64 },
    /// Linux 64-bit boot protocol: long mode on identity-mapped page tables, RSI = zero page.
    Linux64 { entry: u64, zero_page: u64 },
    /// Firmware: the x86 reset state, real mode at F000:FFF0 with CS base 0xFFFF0000.
    ResetVector,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("could not open kernel '{path}': {source}")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not load initial ram disk '{path}': {source}")]
    OpenInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Error loading uncompressed kernel without PVH ELF Note")]
    ElfWithoutPvhNote,
    #[error("kernel '{path}' is neither an ELF image with a PVH note nor a Linux bzImage")]
    UnknownKernelFormat { path: PathBuf },
    #[error("linux kernel too old to boot directly: it has no 64-bit entry point (boot protocol {version:#x})")]
    No64BitEntry { version: u16 },
    #[error("could not load kernel '{path}': {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("kernel command line is too long ({len} bytes, limit {limit})")]
    CmdlineTooLong { len: usize, limit: usize },
    #[error("initial ram disk '{path}' ({size} bytes) does not fit in guest memory")]
    InitrdTooLarge { path: PathBuf, size: u64 },
    #[error("writing boot data into guest memory failed: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

/// Loads the kernel (and initrd, command line) and returns the boot vCPU's entry.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    boot: &KernelBoot,
    split: &RamSplit,
    e820: &[E820Entry],
    rsdp_addr: u64,
) -> Result<BootEntry, BootError> {
    let mut kernel = File::open(&boot.kernel).map_err(|source| BootError::OpenKernel {
        path: boot.kernel.clone(),
        source,
    })?;
    let format = sniff_format(&mut kernel)
        .map_err(|source| BootError::OpenKernel {
            path: boot.kernel.clone(),
            source,
        })?
        .ok_or_else(|| BootError::UnknownKernelFormat {
            path: boot.kernel.clone(),
        })?;
    let cmdline_size = write_cmdline(mem, &boot.cmdline)?;
    let load_error = |e: linux_loader::loader::Error| BootError::Load {
        path: boot.kernel.clone(),
        reason: e.to_string(),
    };
    match format {
        KernelFormat::Elf => {
            let loaded = Elf::load(
                mem,
                None,
                &mut kernel,
                Some(GuestAddress(HIGH_MEMORY_START)),
            )
            .map_err(load_error)?;
            let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
                return Err(BootError::ElfWithoutPvhNote);
            };
            let initrd = load_initrd(mem, boot, split, u64::from(u32::MAX))?;
            write_pvh_start_info(mem, e820, rsdp_addr, initrd)?;
            Ok(BootEntry::Pvh {
                entry: entry.raw_value(),
                start_info: PVH_START_INFO_ADDR,
            })
        }
        KernelFormat::BzImage => {
            let loaded = BzImage::load(
                mem,
                None,
                &mut kernel,
                Some(GuestAddress(HIGH_MEMORY_START)),
            )
            .map_err(load_error)?;
            let header = loaded.setup_header.ok_or_else(|| BootError::Load {
                path: boot.kernel.clone(),
                reason: "no setup header".into(),
            })?;
            if header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry {
                    version: header.version,
                });
            }
            let initrd = load_initrd(mem, boot, split, u64::from(header.initrd_addr_max))?;
            let mut params = boot_params {
                hdr: header,
                acpi_rsdp_addr: rsdp_addr,
                ..Default::default()
            };
            params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
            params.hdr.boot_flag = LINUX_BOOT_FLAG;
            params.hdr.header = LINUX_HDRS_MAGIC;
            params.hdr.loadflags |= LOADED_HIGH;
            params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
            params.hdr.cmdline_size = cmdline_size as u32;
            if let Some((addr, size)) = initrd {
                params.hdr.ramdisk_image = addr as u32;
                params.hdr.ramdisk_size = size as u32;
            }
            for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
                slot.addr = entry.addr;
                slot.size = entry.size;
                slot.r#type = entry.kind;
            }
            params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))?;
            write_identity_page_tables(mem)?;
            Ok(BootEntry::Linux64 {
                entry: loaded.kernel_load.raw_value() + 0x200,
                zero_page: ZERO_PAGE_ADDR,
            })
        }
    }
}

enum KernelFormat {
    Elf,
    BzImage,
}

/// Tells an ELF image from a bzImage by their magic numbers; `None` for anything else.
fn sniff_format(kernel: &mut File) -> std::io::Result<Option<KernelFormat>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut head = Vec::with_capacity(0x210);
    kernel.seek(SeekFrom::Start(0))?;
    kernel.by_ref().take(0x210).read_to_end(&mut head)?;
    kernel.seek(SeekFrom::Start(0))?;
    if head.starts_with(b"\x7fELF") {
        return Ok(Some(KernelFormat::Elf));
    }
    if head.len() >= 0x206 && head[0x202..0x206] == LINUX_HDRS_MAGIC.to_le_bytes() {
        return Ok(Some(KernelFormat::BzImage));
    }
    Ok(None)
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BootError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            limit: CMDLINE_MAX - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))?;
    Ok(cmdline.len())
}

/// Places the initrd as high in low RAM as the kernel accepts, page aligned.
fn load_initrd(
    mem: &GuestMemoryMmap,
    boot: &KernelBoot,
    split: &RamSplit,
    addr_max: u64,
) -> Result<Option<(u64, u64)>, BootError> {
    let Some(path) = &boot.initrd else {
        return Ok(None);
    };
    let data = std::fs::read(path).map_err(|source| BootError::OpenInitrd {
        path: path.clone(),
        source,
    })?;
    let size = data.len() as u64;
    let top = split
        .below_4g
        .saturating_sub(INITRD_TOP_RESERVE)
        .min(addr_max.saturating_add(1));
    let addr = top.checked_sub(size).map(|a| a & !0xfff);
    match addr {
        Some(addr) if addr >= HIGH_MEMORY_START => {
            mem.write_slice(&data, GuestAddress(addr))?;
            Ok(Some((addr, size)))
        }
        _ => Err(BootError::InitrdTooLarge {
            path: path.clone(),
            size,
        }),
    }
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    rsdp_addr: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let mut memmap = Vec::with_capacity(e820.len() * 24);
    for entry in e820 {
        memmap.extend_from_slice(&entry.addr.to_le_bytes());
        memmap.extend_from_slice(&entry.size.to_le_bytes());
        memmap.extend_from_slice(&entry.kind.to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.write_slice(&memmap, GuestAddress(PVH_MEMMAP_ADDR))?;

    let mut nr_modules = 0u32;
    if let Some((addr, size)) = initrd {
        let mut module = Vec::with_capacity(32);
        module.extend_from_slice(&addr.to_le_bytes());
        module.extend_from_slice(&size.to_le_bytes());
        module.extend_from_slice(&[0u8; 16]);
        mem.write_slice(&module, GuestAddress(PVH_MODLIST_ADDR))?;
        nr_modules = 1;
    }

    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&XEN_HVM_START_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version 1: has the memory map
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&nr_modules.to_le_bytes());
    info.extend_from_slice(&(if nr_modules > 0 { PVH_MODLIST_ADDR } else { 0 }).to_le_bytes());
    info.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    info.extend_from_slice(&rsdp_addr.to_le_bytes());
    info.extend_from_slice(&PVH_MEMMAP_ADDR.to_le_bytes());
    info.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&info, GuestAddress(PVH_START_INFO_ADDR))?;
    Ok(())
}

/// Identity-maps the first 4 GiB with 2 MiB pages for the 64-bit Linux entry.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE_PAGE: u64 = 0x80;
    mem.write_obj(PDPT_ADDR | PRESENT_WRITABLE, GuestAddress(PML4_ADDR))?;
    for dir in 0..4u64 {
        let pd = PD_ADDR + dir * 0x1000;
        mem.write_obj(pd | PRESENT_WRITABLE, GuestAddress(PDPT_ADDR + dir * 8))?;
        let mut entries = Vec::with_capacity(4096);
        for i in 0..512u64 {
            let page = (dir << 30) | (i << 21);
            entries.extend_from_slice(&(page | PRESENT_WRITABLE | HUGE_PAGE).to_le_bytes());
        }
        mem.write_slice(&entries, GuestAddress(pd))?;
    }
    Ok(())
}
