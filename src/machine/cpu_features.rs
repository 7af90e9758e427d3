//! `-cpu MODEL,+flag,-flag`: QEMU's CPUID feature names and where each lives, applied on
//! top of a model's CPUID table.
//!
//! As QEMU does without `enforce`, a flag turned on that KVM cannot provide is dropped with a
//! warning naming its CPUID location. A name vmscope has no entry for is refused instead of
//! being ignored.

use kvm_bindings::kvm_cpuid_entry2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// (QEMU name, leaf, subleaf, register, bit).
const FLAGS: &[(&str, u32, u32, Reg, u32)] = &[
    ("fpu", 1, 0, Reg::Edx, 0),
    ("vme", 1, 0, Reg::Edx, 1),
    ("de", 1, 0, Reg::Edx, 2),
    ("pse", 1, 0, Reg::Edx, 3),
    ("tsc", 1, 0, Reg::Edx, 4),
    ("msr", 1, 0, Reg::Edx, 5),
    ("pae", 1, 0, Reg::Edx, 6),
    ("mce", 1, 0, Reg::Edx, 7),
    ("cx8", 1, 0, Reg::Edx, 8),
    ("apic", 1, 0, Reg::Edx, 9),
    ("sep", 1, 0, Reg::Edx, 11),
    ("mtrr", 1, 0, Reg::Edx, 12),
    ("pge", 1, 0, Reg::Edx, 13),
    ("mca", 1, 0, Reg::Edx, 14),
    ("cmov", 1, 0, Reg::Edx, 15),
    ("pat", 1, 0, Reg::Edx, 16),
    ("pse36", 1, 0, Reg::Edx, 17),
    ("clflush", 1, 0, Reg::Edx, 19),
    ("mmx", 1, 0, Reg::Edx, 23),
    ("fxsr", 1, 0, Reg::Edx, 24),
    ("sse", 1, 0, Reg::Edx, 25),
    ("sse2", 1, 0, Reg::Edx, 26),
    ("ss", 1, 0, Reg::Edx, 27),
    ("ht", 1, 0, Reg::Edx, 28),
    ("pni", 1, 0, Reg::Ecx, 0),
    ("pclmulqdq", 1, 0, Reg::Ecx, 1),
    ("monitor", 1, 0, Reg::Ecx, 3),
    ("vmx", 1, 0, Reg::Ecx, 5),
    ("ssse3", 1, 0, Reg::Ecx, 9),
    ("fma", 1, 0, Reg::Ecx, 12),
    ("cx16", 1, 0, Reg::Ecx, 13),
    ("pdcm", 1, 0, Reg::Ecx, 15),
    ("pcid", 1, 0, Reg::Ecx, 17),
    ("sse4.1", 1, 0, Reg::Ecx, 19),
    ("sse4.2", 1, 0, Reg::Ecx, 20),
    ("x2apic", 1, 0, Reg::Ecx, 21),
    ("movbe", 1, 0, Reg::Ecx, 22),
    ("popcnt", 1, 0, Reg::Ecx, 23),
    ("tsc-deadline", 1, 0, Reg::Ecx, 24),
    ("aes", 1, 0, Reg::Ecx, 25),
    ("xsave", 1, 0, Reg::Ecx, 26),
    ("avx", 1, 0, Reg::Ecx, 28),
    ("f16c", 1, 0, Reg::Ecx, 29),
    ("rdrand", 1, 0, Reg::Ecx, 30),
    ("hypervisor", 1, 0, Reg::Ecx, 31),
    ("fsgsbase", 7, 0, Reg::Ebx, 0),
    ("bmi1", 7, 0, Reg::Ebx, 3),
    ("hle", 7, 0, Reg::Ebx, 4),
    ("avx2", 7, 0, Reg::Ebx, 5),
    ("smep", 7, 0, Reg::Ebx, 7),
    ("bmi2", 7, 0, Reg::Ebx, 8),
    ("erms", 7, 0, Reg::Ebx, 9),
    ("invpcid", 7, 0, Reg::Ebx, 10),
    ("rtm", 7, 0, Reg::Ebx, 11),
    ("avx512f", 7, 0, Reg::Ebx, 16),
    ("rdseed", 7, 0, Reg::Ebx, 18),
    ("adx", 7, 0, Reg::Ebx, 19),
    ("smap", 7, 0, Reg::Ebx, 20),
    ("clflushopt", 7, 0, Reg::Ebx, 23),
    ("clwb", 7, 0, Reg::Ebx, 24),
    ("sha-ni", 7, 0, Reg::Ebx, 29),
    ("umip", 7, 0, Reg::Ecx, 2),
    ("pku", 7, 0, Reg::Ecx, 3),
    ("la57", 7, 0, Reg::Ecx, 16),
    ("rdpid", 7, 0, Reg::Ecx, 22),
    ("md-clear", 7, 0, Reg::Edx, 10),
    ("spec-ctrl", 7, 0, Reg::Edx, 26),
    ("arch-capabilities", 7, 0, Reg::Edx, 29),
    ("ssbd", 7, 0, Reg::Edx, 31),
    ("xsaveopt", 0xd, 1, Reg::Eax, 0),
    ("xsavec", 0xd, 1, Reg::Eax, 1),
    ("xgetbv1", 0xd, 1, Reg::Eax, 2),
    ("xsaves", 0xd, 1, Reg::Eax, 3),
    ("syscall", 0x8000_0001, 0, Reg::Edx, 11),
    ("nx", 0x8000_0001, 0, Reg::Edx, 20),
    ("mmxext", 0x8000_0001, 0, Reg::Edx, 22),
    ("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    ("rdtscp", 0x8000_0001, 0, Reg::Edx, 27),
    ("lm", 0x8000_0001, 0, Reg::Edx, 29),
    ("lahf-lm", 0x8000_0001, 0, Reg::Ecx, 0),
    ("svm", 0x8000_0001, 0, Reg::Ecx, 2),
    ("cr8legacy", 0x8000_0001, 0, Reg::Ecx, 4),
    ("abm", 0x8000_0001, 0, Reg::Ecx, 5),
    ("sse4a", 0x8000_0001, 0, Reg::Ecx, 6),
    ("misalignsse", 0x8000_0001, 0, Reg::Ecx, 7),
    ("3dnowprefetch", 0x8000_0001, 0, Reg::Ecx, 8),
    ("topoext", 0x8000_0001, 0, Reg::Ecx, 22),
    ("invtsc", 0x8000_0007, 0, Reg::Edx, 8),
];

/// QEMU's alternative spellings of the same flags.
const ALIASES: &[(&str, &str)] = &[
    ("sse3", "pni"),
    ("xd", "nx"),
    ("sse4-1", "sse4.1"),
    ("sse4-2", "sse4.2"),
    ("sse4_1", "sse4.1"),
    ("sse4_2", "sse4.2"),
    ("lahf_lm", "lahf-lm"),
];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("-cpu: CPU feature '{0}' is not supported yet by vmscope")]
pub struct UnknownFeature(pub String);

fn register(entry: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut entry.eax,
        Reg::Ebx => &mut entry.ebx,
        Reg::Ecx => &mut entry.ecx,
        Reg::Edx => &mut entry.edx,
    }
}

/// Applies the overrides to `entries` (a model's table). `supported` is what KVM can do;
/// returns QEMU-worded warnings for flags turned on that KVM lacks.
pub fn apply_overrides(
    entries: &mut [kvm_cpuid_entry2],
    supported: &[kvm_cpuid_entry2],
    overrides: &[(String, bool)],
) -> Result<Vec<String>, UnknownFeature> {
    let mut warnings = Vec::new();
    for (name, on) in overrides {
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| alias == name)
            .map_or(name.as_str(), |(_, real)| real);
        let &(_, leaf, subleaf, reg, bit) = FLAGS
            .iter()
            .find(|(flag, ..)| *flag == canonical)
            .ok_or_else(|| UnknownFeature(name.clone()))?;
        let mask = 1u32 << bit;
        let kvm_has = supported
            .iter()
            .find(|e| e.function == leaf && e.index == subleaf)
            .is_some_and(|e| {
                let mut e = *e;
                *register(&mut e, reg) & mask != 0
            });
        let target = entries
            .iter_mut()
            .find(|e| e.function == leaf && e.index == subleaf);
        match (on, target) {
            (true, Some(entry)) if kvm_has => *register(entry, reg) |= mask,
            (true, _) => warnings.push(format!(
                "warning: host doesn't support requested feature: CPUID.{leaf:02X}H:{}.{canonical} [bit {bit}]",
                format!("{reg:?}").to_uppercase()
            )),
            (false, Some(entry)) => *register(entry, reg) &= !mask,
            (false, None) => {}
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn flags_turn_on_and_off_within_what_kvm_supports() {
        let supported = [entry(1, (1 << 28) | (1 << 21)), entry(7, 1 << 16)];
        let mut model = [entry(1, 1 << 21), entry(7, 0)];
        let warnings = apply_overrides(
            &mut model,
            &supported,
            &[
                ("avx".into(), true),
                ("x2apic".into(), false),
                ("sse3".into(), true),
                ("la57".into(), true),
            ],
        )
        .unwrap();
        assert_eq!(model[0].ecx, 1 << 28, "avx on, x2apic off");
        assert_eq!(model[1].ecx, 1 << 16, "la57 on");
        assert_eq!(
            warnings,
            ["warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]"]
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        let mut model = [entry(1, 0)];
        assert_eq!(
            apply_overrides(&mut model, &[], &[("kvm-pv-eoi".into(), true)]),
            Err(UnknownFeature("kvm-pv-eoi".into()))
        );
    }
}
