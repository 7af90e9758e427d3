//! The CPUID a vCPU reports: what KVM supports, narrowed to the `-cpu` model the way QEMU
//! narrows it, with the APIC id and the `-smp` topology filled in.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use super::cpu_features::{apply_overrides, UnknownFeature};
use crate::config::{CpuModel, CpuModelKind, SmpConfig};

// Leaf 1 EDX bits.
const EDX_FPU: u32 = 1 << 0;
const EDX_VME: u32 = 1 << 1;
const EDX_DE: u32 = 1 << 2;
const EDX_PSE: u32 = 1 << 3;
const EDX_TSC: u32 = 1 << 4;
const EDX_MSR: u32 = 1 << 5;
const EDX_PAE: u32 = 1 << 6;
const EDX_MCE: u32 = 1 << 7;
const EDX_CX8: u32 = 1 << 8;
const EDX_APIC: u32 = 1 << 9;
const EDX_SEP: u32 = 1 << 11;
const EDX_MTRR: u32 = 1 << 12;
const EDX_PGE: u32 = 1 << 13;
const EDX_MCA: u32 = 1 << 14;
const EDX_CMOV: u32 = 1 << 15;
const EDX_PAT: u32 = 1 << 16;
const EDX_PSE36: u32 = 1 << 17;
const EDX_CLFLUSH: u32 = 1 << 19;
const EDX_MMX: u32 = 1 << 23;
const EDX_FXSR: u32 = 1 << 24;
const EDX_SSE: u32 = 1 << 25;
const EDX_SSE2: u32 = 1 << 26;
const EDX_HTT: u32 = 1 << 28;
// Leaf 1 ECX bits.
const ECX_SSE3: u32 = 1 << 0;
const ECX_CX16: u32 = 1 << 13;
const ECX_X2APIC: u32 = 1 << 21;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 0x8000_0001 bits.
const EXT_EDX_SYSCALL: u32 = 1 << 11;
const EXT_EDX_NX: u32 = 1 << 20;
const EXT_EDX_LM: u32 = 1 << 29;
const EXT_ECX_LAHF_LM: u32 = 1 << 0;

/// QEMU's `PPRO_FEATURES`, the base of both legacy 64-bit models.
const PPRO_EDX: u32 = EDX_FPU
    | EDX_DE
    | EDX_PSE
    | EDX_TSC
    | EDX_MSR
    | EDX_MCE
    | EDX_CX8
    | EDX_PGE
    | EDX_CMOV
    | EDX_PAT
    | EDX_FXSR
    | EDX_MMX
    | EDX_SSE
    | EDX_SSE2
    | EDX_PAE
    | EDX_SEP
    | EDX_APIC;

/// A named legacy model's identity and feature words (QEMU's `builtin_x86_defs`).
struct LegacyModel {
    vendor: &'static [u8; 12],
    family: u32,
    model: u32,
    stepping: u32,
    max_basic_leaf: u32,
    max_extended_leaf: u32,
    leaf1_edx: u32,
    leaf1_ecx: u32,
    ext_edx: u32,
    ext_ecx: u32,
    brand: &'static str,
}

const QEMU64: LegacyModel = LegacyModel {
    vendor: b"AuthenticAMD",
    family: 15,
    model: 107,
    stepping: 1,
    max_basic_leaf: 0xd,
    max_extended_leaf: 0x8000_000a,
    leaf1_edx: PPRO_EDX | EDX_MTRR | EDX_CLFLUSH | EDX_MCA | EDX_PSE36,
    leaf1_ecx: ECX_SSE3 | ECX_CX16,
    ext_edx: EXT_EDX_LM | EXT_EDX_SYSCALL | EXT_EDX_NX,
    // QEMU lists SVM too but turns it off under KVM (`kvm_default_props`).
    ext_ecx: EXT_ECX_LAHF_LM,
    brand: "QEMU Virtual CPU version 2.5+",
};

const KVM64: LegacyModel = LegacyModel {
    vendor: b"GenuineIntel",
    family: 15,
    model: 6,
    stepping: 1,
    max_basic_leaf: 0xd,
    max_extended_leaf: 0x8000_0008,
    leaf1_edx: PPRO_EDX | EDX_VME | EDX_MTRR | EDX_CLFLUSH | EDX_MCA | EDX_PSE36,
    leaf1_ecx: ECX_SSE3 | ECX_CX16,
    ext_edx: EXT_EDX_LM | EXT_EDX_SYSCALL | EXT_EDX_NX,
    ext_ecx: 0,
    brand: "Common KVM processor",
};

/// Where a vCPU sits in the topology, and the APIC id that encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTopology {
    /// Bits of the APIC id holding the thread number.
    pub thread_bits: u32,
    /// Bits holding the core number (above the thread bits).
    pub core_bits: u32,
    /// Bits holding the die number (above the core bits).
    pub die_bits: u32,
    pub threads_per_core: u32,
    pub cores_per_die: u32,
    pub dies_per_socket: u32,
}

impl CpuTopology {
    pub fn new(smp: &SmpConfig) -> CpuTopology {
        CpuTopology {
            thread_bits: bits_for(smp.threads),
            core_bits: bits_for(smp.cores),
            die_bits: bits_for(smp.dies),
            threads_per_core: smp.threads,
            cores_per_die: smp.cores,
            dies_per_socket: smp.dies,
        }
    }

    /// The APIC id of the `index`-th vCPU, numbering threads fastest, then cores, dies, sockets.
    pub fn apic_id(&self, index: u32) -> u32 {
        let thread = index % self.threads_per_core;
        let core = (index / self.threads_per_core) % self.cores_per_die;
        let die = (index / (self.threads_per_core * self.cores_per_die)) % self.dies_per_socket;
        let socket = index / (self.threads_per_core * self.cores_per_die * self.dies_per_socket);
        thread
            | core << self.thread_bits
            | die << (self.thread_bits + self.core_bits)
            | socket << (self.thread_bits + self.core_bits + self.die_bits)
    }

    fn logical_per_socket(&self) -> u32 {
        self.threads_per_core * self.cores_per_die * self.dies_per_socket
    }
}

/// Bits needed to number `count` items (QEMU's `apicid_bitwidth_for_count`).
fn bits_for(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Whether the model reports AMD's vendor string (QEMU reserves AMD's HyperTransport window
/// for those).
pub fn is_amd_model(supported: &CpuId, model: CpuModelKind) -> bool {
    match model {
        CpuModelKind::Qemu64 => QEMU64.vendor == b"AuthenticAMD",
        CpuModelKind::Kvm64 => KVM64.vendor == b"AuthenticAMD",
        CpuModelKind::Host | CpuModelKind::Max => supported
            .as_slice()
            .iter()
            .find(|e| e.function == 0)
            .is_some_and(|e| {
                let vendor: Vec<u8> = [e.ebx, e.edx, e.ecx]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                vendor == b"AuthenticAMD"
            }),
    }
}

/// Builds the CPUID table of one vCPU from KVM's supported table.
///
/// Returns QEMU's warnings for requested flags KVM cannot provide; a flag name vmscope does
/// not know is an error.
pub fn vcpu_cpuid(
    supported: &CpuId,
    model: &CpuModel,
    topology: &CpuTopology,
    apic_id: u32,
) -> Result<(CpuId, Vec<String>), UnknownFeature> {
    let legacy = match model.kind {
        CpuModelKind::Qemu64 => Some(&QEMU64),
        CpuModelKind::Kvm64 => Some(&KVM64),
        CpuModelKind::Host | CpuModelKind::Max => None,
    };
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .copied()
        .filter(|e| match legacy {
            // A legacy model has no leaves beyond its levels (and no leaf 7 features).
            Some(m) if e.function < 0x4000_0000 => e.function <= m.max_basic_leaf,
            Some(m) if e.function >= 0x8000_0000 => e.function <= m.max_extended_leaf,
            _ => true,
        })
        // QEMU describes topology with leaf 0xB only; a stale host 0x1F would contradict it.
        .filter(|e| e.function != 0x1f)
        .collect();

    if let Some(m) = legacy {
        entries
            .iter_mut()
            .for_each(|entry| apply_legacy_model(entry, m));
    }
    let warnings = apply_overrides(&mut entries, supported.as_slice(), &model.feature_overrides)?;
    for entry in entries.iter_mut() {
        apply_topology(entry, topology, apic_id);
    }
    let table = CpuId::from_entries(&entries).expect("filtered table is no larger than KVM's");
    Ok((table, warnings))
}

fn apply_legacy_model(entry: &mut kvm_cpuid_entry2, m: &LegacyModel) {
    match entry.function {
        0 => {
            entry.eax = m.max_basic_leaf;
            entry.ebx = u32::from_le_bytes(m.vendor[0..4].try_into().unwrap());
            entry.edx = u32::from_le_bytes(m.vendor[4..8].try_into().unwrap());
            entry.ecx = u32::from_le_bytes(m.vendor[8..12].try_into().unwrap());
        }
        1 => {
            entry.eax = signature(m.family, m.model, m.stepping);
            entry.edx &= m.leaf1_edx;
            // x2APIC and the hypervisor bit are QEMU's KVM defaults for every model.
            entry.ecx &= m.leaf1_ecx | ECX_X2APIC | ECX_HYPERVISOR;
        }
        7 => {
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        0x8000_0000 => {
            entry.eax = m.max_extended_leaf;
            entry.ebx = u32::from_le_bytes(m.vendor[0..4].try_into().unwrap());
            entry.edx = u32::from_le_bytes(m.vendor[4..8].try_into().unwrap());
            entry.ecx = u32::from_le_bytes(m.vendor[8..12].try_into().unwrap());
        }
        0x8000_0001 => {
            entry.edx &= m.ext_edx;
            entry.ecx &= m.ext_ecx;
        }
        0x8000_0002..=0x8000_0004 => {
            let mut brand = [0u8; 48];
            brand[..m.brand.len()].copy_from_slice(m.brand.as_bytes());
            let chunk = (entry.function - 0x8000_0002) as usize * 16;
            let word = |i: usize| {
                u32::from_le_bytes(brand[chunk + i * 4..chunk + i * 4 + 4].try_into().unwrap())
            };
            entry.eax = word(0);
            entry.ebx = word(1);
            entry.ecx = word(2);
            entry.edx = word(3);
        }
        _ => {}
    }
}

/// The family/model/stepping encoding of leaf 1 EAX.
fn signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (base_family, ext_family) = if family > 0xf {
        (0xf, family - 0xf)
    } else {
        (family, 0)
    };
    ext_family << 20 | (model >> 4) << 16 | base_family << 8 | (model & 0xf) << 4 | stepping
}

fn apply_topology(entry: &mut kvm_cpuid_entry2, topo: &CpuTopology, apic_id: u32) {
    let logical = topo.logical_per_socket();
    match entry.function {
        1 => {
            entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | ((logical & 0xff) << 16);
            if logical > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        4 => {
            // Deterministic cache parameters: cores per package and threads sharing the cache.
            let cores = topo.cores_per_die * topo.dies_per_socket;
            let cache_level = (entry.eax >> 5) & 0x7;
            let sharing = if cache_level <= 2 {
                topo.threads_per_core
            } else {
                logical
            };
            entry.eax = (entry.eax & 0x3ff)
                | ((sharing.saturating_sub(1) & 0xfff) << 14)
                | ((cores.saturating_sub(1) & 0x3f) << 26);
        }
        0xb => {
            entry.edx = apic_id;
            match entry.index {
                0 => {
                    entry.eax = topo.thread_bits;
                    entry.ebx = topo.threads_per_core;
                    entry.ecx = 1 << 8;
                }
                1 => {
                    entry.eax = topo.thread_bits + topo.core_bits + topo.die_bits;
                    entry.ebx = logical;
                    entry.ecx = (2 << 8) | 1;
                }
                index => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = index;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(cpus: u32, sockets: u32, cores: u32, threads: u32) -> SmpConfig {
        SmpConfig {
            cpus,
            sockets,
            dies: 1,
            cores,
            threads,
            max_cpus: cpus,
        }
    }

    #[test]
    fn apic_ids_pack_threads_then_cores_then_sockets() {
        let topo = CpuTopology::new(&smp(12, 2, 3, 2));
        assert_eq!(topo.thread_bits, 1);
        assert_eq!(topo.core_bits, 2);
        let ids: Vec<u32> = (0..12).map(|i| topo.apic_id(i)).collect();
        // Socket 1 starts at 1 << (1 + 2); core 2 of socket 0 thread 1 is 0b101.
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn one_cpu_per_socket_gives_contiguous_ids() {
        let topo = CpuTopology::new(&smp(4, 4, 1, 1));
        assert_eq!(
            (0..4).map(|i| topo.apic_id(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    fn model(kind: CpuModelKind) -> CpuModel {
        CpuModel {
            kind,
            feature_overrides: vec![],
        }
    }

    #[test]
    fn feature_overrides_apply_on_top_of_the_model() {
        let topo = CpuTopology::new(&smp(1, 1, 1, 1));
        let qemu64_avx = CpuModel {
            kind: CpuModelKind::Qemu64,
            feature_overrides: vec![("avx".into(), true), ("x2apic".into(), false)],
        };
        let (cpuid, warnings) = vcpu_cpuid(&fake_supported(), &qemu64_avx, &topo, 0).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            leaf(&cpuid, 1).unwrap().ecx,
            ECX_SSE3 | ECX_CX16 | ECX_HYPERVISOR | (1 << 28)
        );
    }

    fn fake_supported() -> CpuId {
        let mut entries = vec![];
        for function in [0u32, 1, 4, 7, 0xb, 0xd, 0x14, 0x1f] {
            entries.push(kvm_cpuid_entry2 {
                function,
                eax: 0x20,
                ebx: 0xffff_ffff,
                ecx: 0xffff_ffff,
                edx: 0xffff_ffff,
                ..Default::default()
            });
        }
        for function in [
            0x8000_0000u32,
            0x8000_0001,
            0x8000_0002,
            0x8000_0008,
            0x8000_001f,
        ] {
            entries.push(kvm_cpuid_entry2 {
                function,
                eax: 0xffff_ffff,
                ebx: 0xffff_ffff,
                ecx: 0xffff_ffff,
                edx: 0xffff_ffff,
                ..Default::default()
            });
        }
        CpuId::from_entries(&entries).unwrap()
    }

    fn leaf(cpuid: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    #[test]
    fn qemu64_is_an_amd_family_15_model_without_avx_or_leaf7_features() {
        let topo = CpuTopology::new(&smp(1, 1, 1, 1));
        let cpuid = vcpu_cpuid(&fake_supported(), &model(CpuModelKind::Qemu64), &topo, 0)
            .unwrap()
            .0;
        let l0 = leaf(&cpuid, 0).unwrap();
        assert_eq!(l0.eax, 0xd);
        let vendor: Vec<u8> = [l0.ebx, l0.edx, l0.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(&vendor, b"AuthenticAMD");
        let l1 = leaf(&cpuid, 1).unwrap();
        assert_eq!(l1.eax, 0x0006_0fb1, "family 15 model 107 stepping 1");
        assert_eq!(l1.ecx, ECX_SSE3 | ECX_CX16 | ECX_X2APIC | ECX_HYPERVISOR);
        assert_eq!(leaf(&cpuid, 7).unwrap().ebx, 0);
        assert!(leaf(&cpuid, 0x14).is_none(), "beyond qemu64's level 0xd");
        assert!(leaf(&cpuid, 0x8000_001f).is_none(), "beyond xlevel");
        assert!(leaf(&cpuid, 0x1f).is_none());
    }

    #[test]
    fn host_model_keeps_kvm_features_but_sets_topology() {
        let topo = CpuTopology::new(&smp(4, 1, 4, 1));
        let cpuid = vcpu_cpuid(&fake_supported(), &model(CpuModelKind::Host), &topo, 3)
            .unwrap()
            .0;
        let l1 = leaf(&cpuid, 1).unwrap();
        assert_eq!(l1.ebx >> 24, 3, "APIC id");
        assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processors per package");
        assert_eq!(l1.ecx, 0xffff_ffff);
        let l4 = leaf(&cpuid, 4).unwrap();
        assert_eq!(l4.eax >> 26, 3, "cores per package - 1");
        let lb = leaf(&cpuid, 0xb).unwrap();
        assert_eq!(lb.edx, 3);
        assert_eq!(leaf(&cpuid, 7).unwrap().ebx, 0xffff_ffff);
    }
}
