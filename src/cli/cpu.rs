//! `-cpu MODEL[,feature...]`: the models vmscope implements, QEMU's feature syntax
//! (`+flag`, `-flag`, `flag=on|off`, bare `flag`), and `-cpu help`.

use super::error::{CliError, ErrorKind, Warning};
use super::qemu_catalog::{QEMU_CPUID_FLAGS, QEMU_CPU_MODELS, QEMU_CPU_PROPERTIES};
use super::qemu_opts::parse_bool;
use super::Console;
use crate::config::{CpuModel, CpuModelKind};

/// The models vmscope implements, in QEMU's `-cpu help` order and wording (for the pc
/// machine QEMU resolves `kvm64`/`qemu64` to their `-v1` versions, hence "alias").
const MODELS: &[(&str, CpuModelKind, &str)] = &[
    (
        "kvm64",
        CpuModelKind::Kvm64,
        "(alias configured by machine type)",
    ),
    (
        "qemu64",
        CpuModelKind::Qemu64,
        "(alias configured by machine type)",
    ),
    (
        "host",
        CpuModelKind::Host,
        "processor with all supported host features ",
    ),
    (
        "max",
        CpuModelKind::Max,
        "Enables all features supported by the accelerator in the current host",
    ),
];

/// `-cpu help` output.
pub fn cpu_help() -> String {
    let mut out = String::from("Available CPUs:\n");
    for (name, _, text) in MODELS {
        out.push_str(&format!("x86 {name:<20}  {text}\n"));
    }
    out.push_str("\nRecognized CPUID flags:\n");
    // QEMU wraps the sorted flag names before a line would reach 75 columns.
    let mut len = 0;
    for name in QEMU_CPUID_FLAGS {
        if len + name.len() + 1 >= 75 {
            out.push('\n');
            len = 0;
        }
        out.push_str(if len == 0 { "  " } else { " " });
        out.push_str(name);
        len += name.len() + 1;
    }
    out.push_str("\n\n");
    out
}

/// Property aliases QEMU registers for feature flags whose names differ beyond `_`, `-`
/// and `.` spelling.
const FLAG_ALIASES: &[(&str, &str)] = &[
    ("ffxsr", "fxsr-opt"),
    ("i64", "lm"),
    ("pclmuldq", "pclmulqdq"),
    ("sse3", "pni"),
    ("xd", "nx"),
];

fn spelling(name: &str) -> String {
    name.replace(['_', '.'], "-")
}

/// The canonical flag name for a property name, if it is a feature flag.
fn canonical_flag(name: &str) -> Option<&'static str> {
    if let Some((_, target)) = FLAG_ALIASES.iter().find(|(alias, _)| *alias == name) {
        return QEMU_CPUID_FLAGS.iter().copied().find(|f| f == target);
    }
    let wanted = spelling(name);
    QEMU_CPUID_FLAGS
        .iter()
        .copied()
        .find(|flag| spelling(flag) == wanted)
}

fn is_cpu_property(name: &str) -> bool {
    QEMU_CPU_PROPERTIES.contains(&name) || canonical_flag(name).is_some()
}

/// A CPU model vmscope implements, or what it lacks.
pub enum CpuChoice {
    Model(CpuModel),
    Unsupported(String),
}

/// QEMU's `parse_cpu_option` and the x86 feature parsing, with its error texts.
pub fn parse_cpu(option: &str, console: &mut Console) -> Result<CpuChoice, CliError> {
    let err = |text: String| CliError::new(ErrorKind::message(text));
    if option.is_empty() {
        return Err(err("-cpu option cannot be empty".into()));
    }
    let (model, features) = match option.split_once(',') {
        Some((m, f)) => (m, f),
        None => (option, ""),
    };
    if !QEMU_CPU_MODELS.contains(&model) {
        return Err(err(format!("unable to find CPU model '{model}'")));
    }
    let typename = format!("{model}-x86_64-cpu");
    let mut assignments: Vec<(String, String)> = Vec::new();
    let mut plus: Vec<String> = Vec::new();
    let mut minus: Vec<String> = Vec::new();
    let mut ambiguous = false;
    // strtok: empty items are skipped.
    for item in features.split(',').filter(|s| !s.is_empty()) {
        if let Some(name) = item.strip_prefix('+') {
            plus.push(name.to_string());
            continue;
        }
        if let Some(name) = item.strip_prefix('-') {
            minus.push(name.to_string());
            continue;
        }
        let (name, value) = item.split_once('=').unwrap_or((item, "on"));
        let name = name.replace('_', "-");
        for (list, sign) in [(&plus, '+'), (&minus, '-')] {
            if list.contains(&name) {
                console.warn(Warning::new(
                    &super::error::Location::none(),
                    format!(
                        "Ambiguous CPU model string. Don't mix both \"{sign}{name}\" and \"{name}={value}\""
                    ),
                ));
                ambiguous = true;
            }
        }
        assignments.push((name, value.to_string()));
    }
    if ambiguous {
        console.warn(Warning::new(
            &super::error::Location::none(),
            "Compatibility of ambiguous CPU model strings won't be kept on future QEMU versions",
        ));
    }

    let mut unsupported: Option<String> = None;
    let mut overrides: Vec<(String, bool)> = Vec::new();
    // Global properties are applied first, in order, when the CPU object is created.
    for (name, value) in &assignments {
        let global = |text: String| {
            err(format!(
                "can't apply global {typename}.{name}={value}: {text}"
            ))
        };
        if !is_cpu_property(name) {
            return Err(global(format!("Property '{typename}.{name}' not found")));
        }
        match canonical_flag(name) {
            Some(flag) => match parse_bool(value) {
                Ok(on) => overrides.push((flag.to_string(), on)),
                Err(()) => return Err(global(format!("Parameter '{name}' expects 'on' or 'off'"))),
            },
            None => {
                unsupported.get_or_insert(format!("CPU property '{name}'"));
            }
        }
    }
    // Then `+flag`, then `-flag`, so a later `-flag` wins as in QEMU.
    for (list, on) in [(&plus, true), (&minus, false)] {
        for name in list {
            match canonical_flag(name) {
                Some(flag) => overrides.push((flag.to_string(), on)),
                None if QEMU_CPU_PROPERTIES.contains(&name.as_str()) => {
                    unsupported.get_or_insert(format!("CPU property '{name}'"));
                }
                None => return Err(err(format!("Property '{typename}.{name}' not found"))),
            }
        }
    }
    if let Some(what) = unsupported {
        return Ok(CpuChoice::Unsupported(what));
    }
    match MODELS.iter().find(|(name, _, _)| *name == model) {
        Some((_, kind, _)) => Ok(CpuChoice::Model(CpuModel {
            kind: *kind,
            feature_overrides: overrides,
        })),
        None => Ok(CpuChoice::Unsupported(format!("CPU model '{model}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(option: &str) -> Result<CpuModel, String> {
        let mut console = Console::capture("q");
        match parse_cpu(option, &mut console) {
            Ok(CpuChoice::Model(m)) => Ok(m),
            Ok(CpuChoice::Unsupported(what)) => Err(format!("unsupported {what}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn models_and_features() {
        assert_eq!(
            cpu("max,la57=off"),
            Ok(CpuModel {
                kind: CpuModelKind::Max,
                feature_overrides: vec![("la57".into(), false)]
            })
        );
        assert_eq!(cpu("host").unwrap().kind, CpuModelKind::Host);
        assert_eq!(
            cpu("qemu64,-x2apic,+sse4_2,lahf_lm")
                .unwrap()
                .feature_overrides,
            vec![
                ("lahf-lm".into(), true),
                ("sse4.2".into(), true),
                ("x2apic".into(), false)
            ]
        );
        assert_eq!(
            cpu("kvm64,+xd").unwrap().feature_overrides,
            vec![("nx".into(), true)]
        );
    }

    #[test]
    fn errors_match_qemu() {
        assert_eq!(
            cpu("bogus").unwrap_err(),
            "unable to find CPU model 'bogus'"
        );
        assert_eq!(cpu(",la57=off").unwrap_err(), "unable to find CPU model ''");
        assert_eq!(cpu("").unwrap_err(), "-cpu option cannot be empty");
        assert_eq!(
            cpu("max,bogus=off").unwrap_err(),
            "can't apply global max-x86_64-cpu.bogus=off: Property 'max-x86_64-cpu.bogus' not found"
        );
        assert_eq!(
            cpu("max,la57=maybe").unwrap_err(),
            "can't apply global max-x86_64-cpu.la57=maybe: Parameter 'la57' expects 'on' or 'off'"
        );
        assert_eq!(
            cpu("max,+bogus").unwrap_err(),
            "Property 'max-x86_64-cpu.bogus' not found"
        );
        assert_eq!(
            cpu("Haswell").unwrap_err(),
            "unsupported CPU model 'Haswell'"
        );
        assert_eq!(
            cpu("max,family=6").unwrap_err(),
            "unsupported CPU property 'family'"
        );
    }

    #[test]
    fn help_lists_models_and_wraps_flags_like_qemu() {
        let help = cpu_help();
        assert!(help.starts_with(
            "Available CPUs:\nx86 kvm64                 (alias configured by machine type)\n"
        ));
        assert!(help.contains("\nRecognized CPUID flags:\n  3dnow 3dnowext 3dnowprefetch abm ace2 ace2-en acpi adx aes amd-no-ssb\n  amd-ssbd"));
        assert!(help
            .lines()
            .filter(|l| l.starts_with("  "))
            .all(|l| l.len() < 77));
    }
}
