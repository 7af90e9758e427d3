//! Booting through firmware (no `-kernel`): the BIOS image mapped read-only at the top of
//! 4 GiB with its last 128 KiB aliased below 1 MiB, the i440FX PAM shadowing of
//! 0xC0000-0xFFFFF done with KVM memory slots, and the fw_cfg items SeaBIOS reads.
//!
//! KVM slot plan (the same for direct kernel boot, which starts with PAM all-RAM):
//! slot 0 = RAM [0, 0xC0000), slot 1 = RAM [1 MiB, low RAM end), slot 2 = RAM above 4 GiB,
//! slots 3..16 = the thirteen PAM segments, slot 16 = the BIOS ROM below 4 GiB.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::e820::{E820Entry, E820_RAM};
use super::layout::{RamSplit, HIGH_MEMORY_START, HIGH_RAM_START};
use crate::hw::pc::fw_cfg::{self, FwCfgBuilder};
use crate::hw::pc::pam::{self, PamAccess, ShadowControl, SEGMENT_COUNT};

/// The firmware QEMU 7.2's `pc` loads by default (Debian's SeaBIOS).
pub const DEFAULT_BIOS: &str = "bios-256k.bin";
/// Where firmware is looked for after the `-L` directories: QEMU's data directory, then
/// Debian's SeaBIOS package (which the former links to).
const SYSTEM_DATA_DIRS: &[&str] = &["/usr/share/qemu", "/usr/share/seabios"];

/// QEMU's `qemu_find_file` for firmware: `name` itself when readable, else the first
/// `data_dirs` entry (`-L`, in order), then the system directories, holding it. A name
/// found nowhere is returned unchanged, for the error to name it.
pub fn find_bios(name: &Path, data_dirs: &[PathBuf]) -> PathBuf {
    if std::fs::File::open(name).is_ok() {
        return name.to_path_buf();
    }
    data_dirs
        .iter()
        .cloned()
        .chain(SYSTEM_DATA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|path| std::fs::File::open(path).is_ok())
        .unwrap_or_else(|| name.to_path_buf())
}
/// The part of the BIOS that also appears below 1 MiB (QEMU's "isa-bios").
const ISA_BIOS_MAX: u64 = 128 << 10;
/// Start of the PAM-controlled area.
pub const SHADOW_START: u64 = 0xc0000;

pub const SLOT_LOW_RAM: u32 = 0;
pub const SLOT_RAM_ABOVE_1M: u32 = 1;
pub const SLOT_HIGH_RAM: u32 = 2;
const SLOT_FIRST_PAM: u32 = 3;
const SLOT_BIOS: u32 = SLOT_FIRST_PAM + SEGMENT_COUNT as u32;

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("could not load PC BIOS '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not load PC BIOS '{path}': its size ({size} bytes) is not a non-zero multiple of 64 KiB up to 16 MiB")]
    BadSize { path: PathBuf, size: usize },
    #[error("the pc machine needs at least 1 MiB of RAM")]
    TooLittleRam,
    #[error("cannot set up the BIOS ROM: {0}")]
    Memory(String),
    #[error("KVM: {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The BIOS image in its own read-only memory.
pub struct BiosRom {
    memory: GuestMemoryMmap,
    size: u64,
}

impl BiosRom {
    /// Reads `path` (QEMU's rules: a multiple of 64 KiB).
    pub fn load(path: &Path) -> Result<BiosRom, FirmwareError> {
        let image = std::fs::read(path).map_err(|source| FirmwareError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if image.is_empty() || image.len() % 0x10000 != 0 || image.len() > 16 << 20 {
            return Err(FirmwareError::BadSize {
                path: path.to_path_buf(),
                size: image.len(),
            });
        }
        let size = image.len() as u64;
        let memory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(Self::base_for(size)), image.len())])
                .map_err(|e| FirmwareError::Memory(e.to_string()))?;
        memory
            .write_slice(&image, GuestAddress(Self::base_for(size)))
            .map_err(|e| FirmwareError::Memory(e.to_string()))?;
        Ok(BiosRom { memory, size })
    }

    fn base_for(size: u64) -> u64 {
        HIGH_RAM_START - size
    }

    /// Where the image ends up: ending at 4 GiB.
    pub fn base(&self) -> u64 {
        Self::base_for(self.size)
    }

    /// Host address of the byte at guest address `addr` inside the ROM.
    fn host_address(&self, addr: u64) -> Option<u64> {
        self.memory
            .get_host_address(GuestAddress(addr))
            .ok()
            .map(|p| p as u64)
    }

    /// The guest range below 1 MiB that aliases the end of the ROM.
    fn isa_alias(&self) -> (u64, u64) {
        let len = self.size.min(ISA_BIOS_MAX);
        (HIGH_MEMORY_START - len, len)
    }

    /// Maps the ROM read-only at the top of 4 GiB.
    pub fn register(&self, vm: &VmFd) -> Result<(), FirmwareError> {
        let host = self
            .host_address(self.base())
            .ok_or_else(|| FirmwareError::Memory("ROM mapping lost".into()))?;
        let region = kvm_userspace_memory_region {
            slot: SLOT_BIOS,
            flags: KVM_MEM_READONLY,
            guest_phys_addr: self.base(),
            memory_size: self.size,
            userspace_addr: host,
        };
        // SAFETY: the ROM mapping is owned by this BiosRom, which the machine keeps (inside
        // its ShadowSlots) for as long as the VM exists; the slot overlaps no other.
        unsafe { vm.set_user_memory_region(region) }.map_err(|source| FirmwareError::Kvm {
            what: "mapping the BIOS ROM",
            source,
        })
    }
}

/// Puts the PAM segments into KVM slots as the i440FX's PAM registers say.
pub struct ShadowSlots {
    vm: Arc<VmFd>,
    /// Host address of guest RAM address 0 (low RAM is one host mapping).
    ram_host: u64,
    rom: Option<BiosRom>,
    /// Per segment: the access applied last, and whether a KVM slot is mapped for it.
    current: Mutex<[(Option<PamAccess>, bool); SEGMENT_COUNT]>,
    /// The first failure to change a slot, reported by [`ShadowSlots::take_error`].
    error: Mutex<Option<String>>,
    /// Once the machine runs, failures go here instead (they stop the VM).
    reporter: OnceLock<Box<dyn Fn(String) + Send + Sync>>,
}

impl ShadowSlots {
    pub fn new(
        vm: Arc<VmFd>,
        memory: &GuestMemoryMmap,
        rom: Option<BiosRom>,
    ) -> Result<ShadowSlots, FirmwareError> {
        let ram_host = memory
            .get_host_address(GuestAddress(0))
            .map_err(|e| FirmwareError::Memory(e.to_string()))? as u64;
        // The PAM segments alias low RAM up to 1 MiB: it must be there.
        if memory.last_addr().0 < HIGH_MEMORY_START - 1 {
            return Err(FirmwareError::TooLittleRam);
        }
        Ok(ShadowSlots {
            vm,
            ram_host,
            rom,
            current: Mutex::new([(None, false); SEGMENT_COUNT]),
            error: Mutex::new(None),
            reporter: OnceLock::new(),
        })
    }

    /// From now on a failed remap (a guest PAM write KVM refused) is passed to `report`.
    pub fn report_errors_to(&self, report: Box<dyn Fn(String) + Send + Sync>) {
        let _ = self.reporter.set(report);
    }

    /// Why a PAM change could not be applied, if one could not.
    pub fn take_error(&self) -> Option<String> {
        self.error.lock().unwrap().take()
    }

    fn set_slot(
        &self,
        slot: u32,
        guest: u64,
        len: u64,
        host: u64,
        flags: u32,
    ) -> Result<(), kvm_ioctls::Error> {
        let region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: guest,
            memory_size: len,
            userspace_addr: host,
        };
        // SAFETY: `host` lies inside guest RAM or the ROM, both mappings that live as long as
        // the VM (the machine owns them and this object); a zero size deletes the slot. PAM
        // segments overlap no other slot.
        unsafe { self.vm.set_user_memory_region(region) }
    }

    /// Maps segment `index` for `access`; `mapped` tells whether its slot exists now and
    /// is updated. KVM cannot change a slot's flags in place, so the old slot is deleted.
    fn map_segment(
        &self,
        index: usize,
        access: PamAccess,
        mapped: &mut bool,
    ) -> Result<(), kvm_ioctls::Error> {
        let segment = pam::segments()[index];
        let slot = SLOT_FIRST_PAM + index as u32;
        if *mapped {
            self.set_slot(slot, segment.start, 0, 0, 0)?;
            *mapped = false;
        }
        let ram = self.ram_host + segment.start;
        *mapped = true;
        let result = match access {
            PamAccess::Ram => self.set_slot(slot, segment.start, segment.len, ram, 0),
            PamAccess::ReadOnlyRam => {
                self.set_slot(slot, segment.start, segment.len, ram, KVM_MEM_READONLY)
            }
            PamAccess::Pci => {
                // The ROM alias where the BIOS reaches below 1 MiB; elsewhere nothing on PCI
                // answers: reads float, writes are lost.
                let rom_host = self.rom.as_ref().and_then(|rom| {
                    let (alias_start, _) = rom.isa_alias();
                    let offset_from_top = HIGH_MEMORY_START - segment.start;
                    (segment.start >= alias_start)
                        .then(|| rom.host_address(HIGH_RAM_START - offset_from_top))
                        .flatten()
                });
                match rom_host {
                    Some(host) => {
                        self.set_slot(slot, segment.start, segment.len, host, KVM_MEM_READONLY)
                    }
                    None => {
                        *mapped = false;
                        Ok(())
                    }
                }
            }
        };
        if result.is_err() {
            *mapped = false;
        }
        result
    }
}

impl ShadowControl for ShadowSlots {
    fn apply(&self, access: &[PamAccess; SEGMENT_COUNT]) {
        let mut current = self.current.lock().unwrap();
        for (index, wanted) in access.iter().enumerate() {
            let (applied, mapped) = &mut current[index];
            if *applied == Some(*wanted) {
                continue;
            }
            *applied = None;
            match self.map_segment(index, *wanted, mapped) {
                Ok(()) => *applied = Some(*wanted),
                Err(e) => {
                    let message = format!(
                        "KVM: remapping {:#x} for PAM: {e}",
                        pam::segments()[index].start
                    );
                    match self.reporter.get() {
                        Some(report) => report(message),
                        None => {
                            self.error.lock().unwrap().get_or_insert(message);
                        }
                    }
                }
            }
        }
    }
}

/// The RAM slots around the PAM area and the 4 GiB hole.
pub fn ram_slots(split: &RamSplit) -> Vec<(u32, u64, u64)> {
    let mut slots = vec![(SLOT_LOW_RAM, 0, SHADOW_START.min(split.below_4g))];
    if split.below_4g > HIGH_MEMORY_START {
        slots.push((
            SLOT_RAM_ABOVE_1M,
            HIGH_MEMORY_START,
            split.below_4g - HIGH_MEMORY_START,
        ));
    }
    if split.above_4g > 0 {
        slots.push((SLOT_HIGH_RAM, HIGH_RAM_START, split.above_4g));
    }
    slots
}

/// What fw_cfg tells the firmware about this machine.
pub struct FwCfgFacts<'a> {
    /// The ACPI tables' files (`etc/acpi/*`, `etc/table-loader`), by name.
    pub acpi_files: Vec<(&'static str, Vec<u8>)>,
    pub split: &'a RamSplit,
    /// The memory map's RAM entries and reservations QEMU puts in `etc/e820`.
    pub e820: Vec<E820Entry>,
    pub cpus: u16,
    /// One past the highest possible APIC id (QEMU's `apic_id_limit`), as `FW_CFG_MAX_CPUS`.
    pub apic_id_limit: u16,
    pub nographic: bool,
    /// `-boot reboot-timeout` in milliseconds, -1 for never.
    pub reboot_timeout: i32,
    /// `-boot menu=on`.
    pub boot_menu: bool,
    /// `-boot splash-time=`: the menu prompt's duration in ms (`etc/boot-menu-wait`).
    pub splash_time: Option<u16>,
}

/// The fw_cfg items QEMU 7.2's `pc` provides that vmscope implements.
pub fn fw_cfg_items(facts: &FwCfgFacts) -> FwCfgBuilder {
    let mut builder = FwCfgBuilder::new();
    builder
        .add_bytes(fw_cfg::FW_CFG_UUID, vec![0; 16])
        .add_u64(fw_cfg::FW_CFG_RAM_SIZE, facts.split.total())
        .add_u16(fw_cfg::FW_CFG_NOGRAPHIC, u16::from(facts.nographic))
        .add_u16(fw_cfg::FW_CFG_NB_CPUS, facts.cpus)
        .add_u16(fw_cfg::FW_CFG_MAX_CPUS, facts.apic_id_limit)
        .add_u16(fw_cfg::FW_CFG_BOOT_MENU, u16::from(facts.boot_menu))
        // No NUMA nodes: the node count, then one zero per possible APIC id.
        .add_bytes(
            fw_cfg::FW_CFG_NUMA,
            vec![0; 8 * (1 + usize::from(facts.apic_id_limit))],
        )
        .add_u16(fw_cfg::FW_CFG_ACPI_TABLES, 0)
        .add_u16(fw_cfg::FW_CFG_SMBIOS_ENTRIES, 0)
        // KVM's in-kernel irqchip routes the PIT to IOAPIC pin 2.
        .add_u32(fw_cfg::FW_CFG_IRQ0_OVERRIDE, 1)
        .add_file("bootorder", Vec::new())
        .add_file(
            "etc/boot-fail-wait",
            facts.reboot_timeout.to_le_bytes().to_vec(),
        );
    let entries: Vec<(u64, u64, u32)> = facts
        .e820
        .iter()
        .map(|e| (e.addr, e.size, e.kind))
        .collect();
    builder.add_file("etc/e820", fw_cfg::e820_file(&entries));
    if let Some(ms) = facts.splash_time {
        builder.add_file("etc/boot-menu-wait", ms.to_le_bytes().to_vec());
    }
    for (name, data) in &facts.acpi_files {
        builder.add_file(name, data.clone());
    }
    // With FW_CFG_NOGRAPHIC set SeaBIOS uses COM1 as its console by itself (QEMU adds no
    // `etc/sercon-port`).
    builder
}

/// QEMU's `etc/e820`: RAM below and above 4 GiB, plus the reservations (AMD's
/// HyperTransport window) that the machine's own map has outside RAM.
pub fn qemu_e820(split: &RamSplit, machine_map: &[E820Entry]) -> Vec<E820Entry> {
    let mut entries: Vec<E820Entry> = split
        .ranges()
        .into_iter()
        .map(|(addr, size)| E820Entry {
            addr,
            size,
            kind: E820_RAM,
        })
        .collect();
    entries.extend(
        machine_map
            .iter()
            .filter(|e| e.kind != E820_RAM && e.addr >= HIGH_RAM_START),
    );
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::e820::memory_map;

    #[test]
    fn ram_slots_leave_the_pam_area_out() {
        let split = RamSplit::for_ram_size(4 << 30);
        assert_eq!(
            ram_slots(&split),
            vec![
                (0, 0, 0xc0000),
                (1, 0x100000, (3 << 30) - 0x100000),
                (2, 1 << 32, 1 << 30)
            ]
        );
    }

    #[test]
    fn e820_file_has_ram_and_the_amd_window() {
        let split = RamSplit::for_ram_size(128 << 20);
        let amd = qemu_e820(&split, &memory_map(&split, true));
        assert_eq!(amd.len(), 2);
        assert_eq!((amd[0].addr, amd[0].size, amd[0].kind), (0, 128 << 20, 1));
        assert_eq!((amd[1].addr, amd[1].kind), (0xfd_0000_0000, 2));
        assert_eq!(qemu_e820(&split, &memory_map(&split, false)).len(), 1);
    }

    #[test]
    fn bios_is_found_in_data_dirs_in_order() {
        let base = std::env::temp_dir().join(format!("vmscope-bios-dirs-{}", std::process::id()));
        let (first, second) = (base.join("first"), base.join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(second.join("my.bin"), [0u8; 16]).unwrap();
        let dirs = [first.clone(), second.clone()];
        assert_eq!(find_bios(Path::new("my.bin"), &dirs), second.join("my.bin"));
        std::fs::write(first.join("my.bin"), [0u8; 16]).unwrap();
        assert_eq!(find_bios(Path::new("my.bin"), &dirs), first.join("my.bin"));
        assert_eq!(
            find_bios(Path::new("absent.bin"), &dirs),
            PathBuf::from("absent.bin")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn bios_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("vmscope-bios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("odd.bin");
        std::fs::write(&odd, [0u8; 1000]).unwrap();
        let err = BiosRom::load(&odd).err().unwrap().to_string();
        assert!(err.contains("not a non-zero multiple of 64 KiB"), "{err}");
        let missing = BiosRom::load(&dir.join("missing.bin"))
            .err()
            .unwrap()
            .to_string();
        assert!(missing.starts_with("could not load PC BIOS"), "{missing}");
        let good = dir.join("good.bin");
        std::fs::write(&good, vec![0x90u8; 0x20000]).unwrap();
        let rom = BiosRom::load(&good).unwrap();
        assert_eq!(rom.base(), 0xfffe_0000);
        assert_eq!(rom.isa_alias(), (0xe0000, 0x20000));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
