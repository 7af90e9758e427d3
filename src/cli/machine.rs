//! The machine: type selection, `-m`, `-smp` topology resolution, machine properties, and
//! accelerators, with QEMU 7.2's rules and messages for the `pc` (i440FX) machine.

use super::error::{CliError, ErrorKind, Location};
use super::keyval::{Dict, Node};
use super::numbers::{self, strtoi64};
use super::qemu_catalog::QEMU_MACHINES;
use super::qemu_opts::{desc, parse_bool, OptType, OptsList, OptsStore};
use super::Console;
use crate::config::{Accelerator, MemoryConfig, SmpConfig};

/// vmscope's only machine type and its alias.
pub const MACHINE_TYPE: &str = "pc-i440fx-7.2";
const MACHINE_ALIAS: &str = "pc";
const MACHINE_DESC: &str = "Standard PC (i440FX + PIIX, 1996)";
/// QEMU's `max_cpus` for the i440FX machine.
const MAX_CPUS: u32 = 255;

/// `-m` keys (`qemu_mem_opts`).
pub static MEMORY_OPTS: OptsList = OptsList {
    name: "memory",
    implied: Some("size"),
    merge: true,
    descs: &[
        desc("size", OptType::Size),
        desc("slots", OptType::Number),
        desc("maxmem", OptType::Size),
    ],
};

/// `-accel` (`qemu_accel_opts`): any key; checked against the accelerator later.
pub static ACCEL_OPTS: OptsList = OptsList {
    name: "accel",
    implied: Some("accel"),
    merge: false,
    descs: &[],
};

/// `-smp help` output (QEMU prints the smp-opts keys).
pub const SMP_OPTS_HELP: &str = "smp-opts options:\n  clusters=<num>\n  cores=<num>\n  cpus=<num>\n  dies=<num>\n  maxcpus=<num>\n  sockets=<num>\n  threads=<num>\n";

/// `-accel help` output: the accelerators vmscope runs on.
pub const ACCEL_HELP: &str = "Accelerators supported in QEMU binary:\nkvm\n";

/// `-machine help`, or `-machine TYPE,help` for a type's properties.
pub fn machine_help(kind: Option<&str>) -> String {
    if matches!(kind, Some(MACHINE_TYPE) | Some(MACHINE_ALIAS)) {
        let mut out = format!("{MACHINE_TYPE}-machine options:\n");
        for (name, ty, help) in MACHINE_PROPERTIES_HELP {
            let mut line = format!("  {name}=<{ty}>");
            if line.len() < 24 {
                line.push_str(&" ".repeat(24 - line.len()));
            }
            line.push_str(" - ");
            line.push_str(help);
            out.push_str(&line);
            out.push('\n');
        }
        return out;
    }
    format!(
        "Supported machines are:\n{MACHINE_ALIAS:<20} {MACHINE_DESC} (alias of {MACHINE_TYPE})\n{MACHINE_TYPE:<20} {MACHINE_DESC} (default)\n"
    )
}

/// The machine properties vmscope implements, for `-machine pc,help`.
const MACHINE_PROPERTIES_HELP: &[(&str, &str, &str)] = &[
    ("append", "string", "Linux kernel command line"),
    (
        "graphics",
        "bool",
        "Set on/off to enable/disable graphics emulation",
    ),
    (
        "hpet",
        "bool",
        "Enable/disable high precision event timer emulation",
    ),
    ("initrd", "string", "Linux initial ramdisk file"),
    ("kernel", "string", "Linux kernel image file"),
    (
        "memory",
        "MemorySizeConfiguration",
        "Memory size configuration",
    ),
    ("smp", "SMPConfiguration", "CPU topology"),
    ("usb", "bool", "Set on/off to enable/disable usb"),
];

/// The machine type asked for.
pub enum MachineChoice {
    Pc,
    /// A QEMU machine type vmscope does not build.
    Unsupported(String),
}

/// `select_machine`: removes `type` from the machine options.
pub fn select_machine(machine: &mut Dict) -> Result<MachineChoice, CliError> {
    let kind = match machine.remove("type") {
        None => return Ok(MachineChoice::Pc),
        Some(Node::Str(kind)) => kind,
        Some(Node::Dict(_)) => {
            return Err(CliError::new(ErrorKind::message(
                "unsupported machine type",
            )))
        }
    };
    if kind == MACHINE_TYPE || kind == MACHINE_ALIAS {
        Ok(MachineChoice::Pc)
    } else if QEMU_MACHINES.contains(&kind.as_str()) {
        Ok(MachineChoice::Unsupported(format!("machine type '{kind}'")))
    } else {
        Err(CliError::new(ErrorKind::message(
            "unsupported machine type",
        )))
    }
}

/// `parse_memory_options`: `-m` becomes the machine's `memory` property; a bare number
/// means MiB.
pub fn parse_memory_options(memory: &OptsStore, machine: &mut Dict) -> Result<(), CliError> {
    let Some(opts) = memory.entries.first() else {
        return Ok(());
    };
    let mut prop = Dict::default();
    if opts.get_size("size", 0) != 0 {
        let text = opts.get("size").unwrap_or_default();
        if text.ends_with(|c: char| c.is_ascii_digit()) {
            prop.put_str("size", &format!("{text}M"));
        } else {
            prop.put_str("size", text);
        }
    }
    if let Some(max) = opts.get("maxmem") {
        prop.put_str("max-size", max);
    }
    if let Some(slots) = opts.get("slots") {
        prop.put_str("slots", slots);
    }
    let mut wrapper = Dict::default();
    wrapper.put_dict("memory", prop);
    machine
        .merge(&wrapper, "")
        .map_err(|e| CliError::at(&opts.location, e))
}

/// The machine properties vmscope uses, resolved.
#[derive(Debug, Default)]
pub struct MachineProperties {
    pub memory: MemoryConfig,
    pub smp: SmpConfig,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    /// `firmware=` (`-bios`).
    pub firmware: Option<String>,
    /// `graphics=off` (`-nographic`).
    pub nographic: bool,
    /// `boot.order`, `boot.reboot-timeout`.
    pub boot: crate::config::BootConfig,
    /// Valid properties vmscope does not implement: (property, what).
    pub unsupported: Vec<(String, String)>,
}

/// What `qemu_apply_legacy_machine_options` takes out of the machine options.
#[derive(Debug, Default)]
pub struct LegacyOptions {
    pub accelerators: Option<String>,
    pub kernel_irqchip: Option<String>,
    /// (property, what vmscope lacks).
    pub unsupported: Vec<(String, String)>,
}

/// `keyval_dashify` and `qemu_apply_legacy_machine_options`.
pub fn take_legacy_options(machine: &mut Dict) -> Result<LegacyOptions, CliError> {
    let keys: Vec<String> = machine.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys.iter().filter(|k| k.contains('_')) {
        let dashed = key.replace('_', "-");
        if machine.get(&dashed).is_some() {
            return Err(CliError::new(ErrorKind::message(format!(
                "Conflict between '{key}' and '{dashed}'"
            ))));
        }
        if let Some(node) = machine.remove(key) {
            match node {
                Node::Str(s) => machine.put_str(&dashed, &s),
                Node::Dict(d) => machine.put_dict(&dashed, d),
            }
        }
    }
    let mut legacy = LegacyOptions::default();
    let take_str = |machine: &mut Dict, key: &str| -> Option<String> {
        match machine.get(key) {
            Some(Node::Str(s)) => {
                let s = s.clone();
                machine.remove(key);
                Some(s)
            }
            _ => None,
        }
    };
    legacy.accelerators = take_str(machine, "accel");
    if take_str(machine, "igd-passthru").is_some() {
        legacy
            .unsupported
            .push(("igd-passthru".into(), "Xen IGD passthrough".into()));
    }
    if take_str(machine, "kvm-shadow-mem").is_some() {
        legacy.unsupported.push((
            "kvm-shadow-mem".into(),
            "accelerator property 'kvm-shadow-mem'".into(),
        ));
    }
    legacy.kernel_irqchip = take_str(machine, "kernel-irqchip");
    if take_str(machine, "memory-backend").is_some() {
        legacy
            .unsupported
            .push(("memory-backend".into(), "memory backends".into()));
    }
    Ok(legacy)
}

/// The i440FX machine's properties QEMU 7.2 knows, with their types.
const PC_PROPERTIES: &[(&str, PropType)] = &[
    ("acpi", PropType::OnOffAuto),
    ("append", PropType::Str),
    ("boot", PropType::Struct),
    ("bus-lock-ratelimit", PropType::Uint),
    ("confidential-guest-support", PropType::Str),
    ("default-bus-bypass-iommu", PropType::Bool),
    ("dt-compatible", PropType::Str),
    ("dtb", PropType::Str),
    ("dump-guest-core", PropType::Bool),
    ("dumpdtb", PropType::Str),
    ("firmware", PropType::Str),
    ("graphics", PropType::Bool),
    ("hpet", PropType::Bool),
    ("i8042", PropType::Bool),
    ("initrd", PropType::Str),
    ("kernel", PropType::Str),
    ("max-fw-size", PropType::Size),
    ("max-ram-below-4g", PropType::Size),
    ("mem-merge", PropType::Bool),
    ("memory-encryption", PropType::Str),
    ("memory", PropType::Struct),
    ("phandle-start", PropType::Int),
    ("pic", PropType::OnOffAuto),
    ("pit", PropType::OnOffAuto),
    ("sata", PropType::Bool),
    ("sgx-epc", PropType::Struct),
    ("smbios-entry-point-type", PropType::Str),
    ("smbus", PropType::Bool),
    ("smm", PropType::OnOffAuto),
    ("smp", PropType::Struct),
    ("suppress-vmdesc", PropType::Bool),
    ("usb", PropType::Bool),
    ("vmport", PropType::OnOffAuto),
    ("x-oem-id", PropType::Str),
    ("x-oem-table-id", PropType::Str),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PropType {
    Str,
    Bool,
    OnOffAuto,
    Size,
    Uint,
    Int,
    Struct,
}

/// `qemu_apply_machine_options`: sets each remaining property on the machine.
pub fn apply_machine_options(
    machine: &Dict,
    console: &mut Console,
) -> Result<MachineProperties, CliError> {
    let mut props = MachineProperties::default();
    let err = |kind| CliError::new(kind);
    for (key, node) in machine.iter() {
        let Some((_, ty)) = PC_PROPERTIES.iter().find(|(name, _)| *name == key) else {
            return Err(err(ErrorKind::message(format!(
                "Property '{MACHINE_TYPE}-machine.{key}' not found"
            ))));
        };
        let value = match (ty, node) {
            (PropType::Struct, Node::Dict(_)) => None,
            (PropType::Struct, Node::Str(_)) => {
                return Err(err(ErrorKind::message(format!(
                    "Invalid parameter type for '{key}', expected: object"
                ))))
            }
            (_, Node::Dict(_)) => {
                return Err(err(ErrorKind::message(format!(
                    "Parameters '{key}.*' are unexpected"
                ))))
            }
            (_, Node::Str(s)) => Some(s.as_str()),
        };
        if let Some(value) = value {
            check_scalar(key, *ty, value)?;
        }
        match (key, value) {
            ("boot", _) => {
                if let Some(Node::Dict(d)) = machine.get("boot") {
                    check_boot(d)?;
                    props.boot = boot_config(d, &mut props.unsupported)?;
                }
            }
            ("memory", _) => {
                if let Some(Node::Dict(d)) = machine.get("memory") {
                    let mut lacking = Vec::new();
                    props.memory = memory_size(d, &mut lacking, console)?;
                    for what in lacking {
                        props.unsupported.push(("memory".into(), what));
                    }
                }
            }
            ("smp", _) => {
                if let Some(Node::Dict(d)) = machine.get("smp") {
                    props.smp = smp_topology(d, console)?;
                }
            }
            ("kernel", Some(v)) => props.kernel = Some(v.to_string()),
            ("initrd", Some(v)) => props.initrd = Some(v.to_string()),
            ("append", Some(v)) => props.append = Some(v.to_string()),
            // vmscope draws nothing either way; off tells the firmware to use the serial
            // console, as QEMU does.
            ("graphics", Some(v)) => props.nographic = parse_bool(v) == Ok(false),
            ("graphics", None) => {}
            ("firmware", Some(v)) => props.firmware = Some(v.to_string()),
            // vmscope's pc machine has no HPET and no USB controller.
            ("hpet", Some(v)) | ("usb", Some(v)) if parse_bool(v) == Ok(false) => {}
            ("hpet", _) => props.unsupported.push(("hpet".into(), "HPET".into())),
            ("usb", _) => props.unsupported.push(("usb".into(), "USB".into())),
            (other, _) => props
                .unsupported
                .push((other.to_string(), format!("machine property '{other}'"))),
        }
    }
    Ok(props)
}

fn check_scalar(key: &str, ty: PropType, value: &str) -> Result<(), CliError> {
    let bad = |expected: &str| CliError::new(ErrorKind::invalid_value(key, expected));
    match ty {
        PropType::Bool if parse_bool(value).is_err() => Err(bad("'on' or 'off'")),
        PropType::OnOffAuto if !matches!(value, "on" | "off" | "auto") => {
            Err(CliError::new(ErrorKind::ValueNotAccepted {
                name: key.to_string(),
                value: value.to_string(),
            }))
        }
        PropType::Size if numbers::strtosz(value).is_err() => Err(bad("size")),
        PropType::Uint if numbers::strtou64(value, 0).is_err() => Err(bad("uint64")),
        PropType::Int if strtoi64(value, 0).is_err() => Err(bad("integer")),
        _ => Ok(()),
    }
}

/// Visits a size member of a keyval struct (`memory.size`), warning like QEMU about a hex
/// value with a suffix.
fn size_member(
    dict: &Dict,
    prefix: &str,
    key: &str,
    console: &mut Console,
) -> Result<Option<u64>, CliError> {
    let Some(node) = dict.get(key) else {
        return Ok(None);
    };
    let full = format!("{prefix}.{key}");
    let Node::Str(text) = node else {
        return Err(CliError::new(ErrorKind::message(format!(
            "Invalid parameter type for '{full}', expected: string"
        ))));
    };
    match numbers::strtosz(text) {
        Ok(size) => {
            if size.hex_with_suffix {
                console.warn(super::error::Warning::new(
                    &Location::none(),
                    format!("Using a multiplier suffix on hex numbers is deprecated: {text}"),
                ));
            }
            Ok(Some(size.bytes))
        }
        Err(_) => Err(CliError::new(ErrorKind::invalid_value(&full, "size"))),
    }
}

/// QEMU's `BootConfiguration` members.
fn check_boot(dict: &Dict) -> Result<(), CliError> {
    const MEMBERS: &[(&str, PropType)] = &[
        ("order", PropType::Str),
        ("once", PropType::Str),
        ("menu", PropType::Bool),
        ("splash", PropType::Str),
        ("splash-time", PropType::Int),
        ("reboot-timeout", PropType::Int),
        ("strict", PropType::Bool),
    ];
    for (name, ty) in MEMBERS {
        if let Some(Node::Str(value)) = dict.get(name) {
            let full = format!("boot.{name}");
            match ty {
                PropType::Bool if parse_bool(value).is_err() => {
                    return Err(CliError::new(ErrorKind::invalid_value(
                        &full,
                        "'on' or 'off'",
                    )))
                }
                PropType::Int if strtoi64(value, 0).is_err() => {
                    return Err(CliError::new(ErrorKind::invalid_value(&full, "integer")))
                }
                _ => {}
            }
        }
    }
    let names: Vec<&str> = MEMBERS.iter().map(|(n, _)| *n).collect();
    check_members(dict, "boot", &names)
}

/// The `-boot` members vmscope implements, checked as QEMU 7.2 checks them (for the `pc`
/// machine); the others are recorded as unsupported unless set to their default.
fn boot_config(
    dict: &Dict,
    unsupported: &mut Vec<(String, String)>,
) -> Result<crate::config::BootConfig, CliError> {
    let mut boot = crate::config::BootConfig::default();
    let text = |name: &str| match dict.get(name) {
        Some(Node::Str(value)) => Some(value.as_str()),
        _ => None,
    };
    let message = |text: String| CliError::new(ErrorKind::message(text));
    if let Some(order) = text("order") {
        for (i, device) in order.char_indices() {
            if !('a'..='p').contains(&device) {
                return Err(message(format!("Invalid boot device '{device}'")));
            }
            if order[..i].contains(device) {
                return Err(message(format!("Boot device '{device}' was given twice")));
            }
        }
        if order.len() > 3 {
            return Err(message("Too many boot devices for PC".into()));
        }
        if let Some(device) = order.chars().find(|c| !"abcdn".contains(*c)) {
            return Err(message(format!("Invalid boot device for PC: '{device}'")));
        }
        boot.order = order.to_string();
    }
    if let Some(value) = text("reboot-timeout") {
        let timeout = strtoi64(value, 0).unwrap_or(i64::MIN);
        if !(-1..=0xffff).contains(&timeout) {
            return Err(message(
                "reboot timeout is invalid,it should be a value between -1 and 65535".into(),
            ));
        }
        boot.reboot_timeout = timeout as i32;
    }
    boot.menu = text("menu").is_some_and(|v| parse_bool(v) == Ok(true));
    if let Some(value) = text("splash-time") {
        // QEMU's fw_cfg_bootsplash checks the range when it builds fw_cfg.
        let time = strtoi64(value, 0).unwrap_or(i64::MIN);
        if !(0..=0xffff).contains(&time) {
            return Err(message(
                "splash-time is invalid,it should be a value between 0 and 65535".into(),
            ));
        }
        boot.splash_time = Some(time as u16);
    }
    for (name, what) in [
        ("once", "-boot once"),
        ("splash", "a boot splash picture"),
        ("strict", "-boot strict"),
    ] {
        if text(name).is_some() {
            unsupported.push(("boot".into(), what.into()));
        }
    }
    Ok(boot)
}

/// Rejects members a QAPI struct does not have (`Parameter 'smp.foo' is unexpected`).
fn check_members(dict: &Dict, prefix: &str, known: &[&str]) -> Result<(), CliError> {
    for (key, node) in dict.iter() {
        if !known.contains(&key) {
            let what = match node {
                Node::Dict(_) => format!("Parameters '{prefix}.{key}.*' are unexpected"),
                Node::Str(_) => format!("Parameter '{prefix}.{key}' is unexpected"),
            };
            return Err(CliError::new(ErrorKind::message(what)));
        }
    }
    Ok(())
}

/// `machine_set_mem` for QEMU's `MemorySizeConfiguration`.
fn memory_size(
    dict: &Dict,
    unsupported: &mut Vec<String>,
    console: &mut Console,
) -> Result<MemoryConfig, CliError> {
    let size = size_member(dict, "memory", "size", console)?;
    let max_size = size_member(dict, "memory", "max-size", console)?;
    let slots = match dict.get("slots") {
        None => None,
        Some(Node::Str(s)) => Some(
            numbers::strtou64(s, 0)
                .map_err(|_| CliError::new(ErrorKind::invalid_value("memory.slots", "uint64")))?,
        ),
        Some(Node::Dict(_)) => {
            return Err(CliError::new(ErrorKind::message(
                "Invalid parameter type for 'memory.slots', expected: string",
            )))
        }
    };
    check_members(dict, "memory", &["size", "max-size", "slots"])?;
    let default = MemoryConfig::default().size;
    // QEMU rounds RAM up to 8 KiB.
    let size = size.unwrap_or(default);
    let Some(size) = size.checked_add(8191).map(|s| s & !8191) else {
        return Err(CliError::new(ErrorKind::message("ram size too large")));
    };
    match (max_size, slots) {
        (Some(max), slots) => {
            if max < size {
                return Err(CliError::new(ErrorKind::message(format!(
                    "invalid value of maxmem: maximum memory size (0x{max:x}) must be at least the initial memory size (0x{size:x})"
                ))));
            }
            if slots.unwrap_or(0) != 0 && max == size {
                return Err(CliError::new(ErrorKind::message(format!(
                    "invalid value of maxmem: memory slots were specified but maximum memory size (0x{max:x}) is equal to the initial memory size (0x{size:x})"
                ))));
            }
            if max != size || slots.unwrap_or(0) != 0 {
                unsupported.push("memory hotplug (maxmem, slots)".into());
            }
        }
        (None, Some(_)) => {
            return Err(CliError::new(ErrorKind::message(
                "slots specified but no max-size",
            )))
        }
        (None, None) => {}
    }
    Ok(MemoryConfig { size })
}

/// QEMU 7.2's `machine_parse_smp_config` for the pc machine (dies supported, clusters not),
/// with QEMU's C integer behaviour: values are truncated to 32 bits and printed as `%d`.
fn smp_topology(dict: &Dict, console: &mut Console) -> Result<SmpConfig, CliError> {
    const MEMBERS: [&str; 7] = [
        "cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus",
    ];
    let mut given: [Option<u32>; 7] = [None; 7];
    for (slot, name) in given.iter_mut().zip(MEMBERS) {
        match dict.get(name) {
            None => {}
            Some(Node::Str(text)) => {
                let value = strtoi64(text, 0).map_err(|_| {
                    CliError::new(ErrorKind::invalid_value(&format!("smp.{name}"), "integer"))
                })?;
                // QEMU stores the int64 in an unsigned int.
                *slot = Some(value as u32);
            }
            Some(Node::Dict(_)) => {
                return Err(CliError::new(ErrorKind::message(format!(
                    "Invalid parameter type for 'smp.{name}', expected: integer"
                ))))
            }
        }
    }
    check_members(dict, "smp", &MEMBERS)?;
    if given.contains(&Some(0)) {
        console.warn(super::error::Warning::new(
            &Location::none(),
            "Deprecated CPU topology (considered invalid): CPU topology parameters must be greater than zero",
        ));
    }
    let [cpus, sockets, dies, clusters, cores, threads, maxcpus] = given.map(|v| v.unwrap_or(0));
    if clusters > 1 {
        return Err(CliError::new(ErrorKind::message(
            "clusters not supported by this machine's CPU topology",
        )));
    }
    let dies = dies.max(1);
    let clusters = clusters.max(1);
    let (mut sockets, mut cores, mut threads, mut maxcpus) = (sockets, cores, threads, maxcpus);
    let div = |a: u32, b: u32| a.checked_div(b).unwrap_or(0);
    if cpus == 0 && maxcpus == 0 {
        sockets = sockets.max(1);
        cores = cores.max(1);
        threads = threads.max(1);
    } else {
        if maxcpus == 0 {
            maxcpus = cpus;
        }
        // Since QEMU 6.2 cores are preferred over sockets.
        if cores == 0 {
            sockets = sockets.max(1);
            threads = threads.max(1);
            cores = div(
                maxcpus,
                sockets
                    .wrapping_mul(dies)
                    .wrapping_mul(clusters)
                    .wrapping_mul(threads),
            );
        } else if sockets == 0 {
            threads = threads.max(1);
            sockets = div(
                maxcpus,
                dies.wrapping_mul(clusters)
                    .wrapping_mul(cores)
                    .wrapping_mul(threads),
            );
        }
        if threads == 0 {
            threads = div(
                maxcpus,
                sockets
                    .wrapping_mul(dies)
                    .wrapping_mul(clusters)
                    .wrapping_mul(cores),
            );
        }
    }
    let product = sockets
        .wrapping_mul(dies)
        .wrapping_mul(clusters)
        .wrapping_mul(cores)
        .wrapping_mul(threads);
    if maxcpus == 0 {
        maxcpus = product;
    }
    let cpus = if cpus == 0 { maxcpus } else { cpus };
    let hierarchy =
        format!("sockets ({sockets}) * dies ({dies}) * cores ({cores}) * threads ({threads})");
    if product != maxcpus {
        return Err(CliError::new(ErrorKind::message(format!(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: {hierarchy} != maxcpus ({maxcpus})"
        ))));
    }
    if maxcpus < cpus {
        return Err(CliError::new(ErrorKind::message(format!(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: {hierarchy} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
        ))));
    }
    if maxcpus > MAX_CPUS {
        return Err(CliError::new(ErrorKind::message(format!(
            "Invalid SMP CPUs {}. The max CPUs supported by machine '{MACHINE_TYPE}' is {MAX_CPUS}",
            maxcpus as i32
        ))));
    }
    Ok(SmpConfig {
        cpus,
        sockets,
        dies,
        cores,
        threads,
        max_cpus: maxcpus,
    })
}

/// Accelerator names QEMU 7.2's Debian build knows.
const QEMU_ACCELERATORS: &[&str] = &["kvm", "tcg"];

/// Properties of vmscope's KVM accelerator: only the in-kernel irqchip, which it always
/// uses.
fn check_accel_property(accel: &str, key: &str, value: &str) -> Result<Option<String>, CliError> {
    const KVM_PROPS: &[&str] = &[
        "kernel-irqchip",
        "kvm-shadow-mem",
        "dirty-ring-size",
        "notify-vmexit",
        "notify-window",
    ];
    const TCG_PROPS: &[&str] = &["thread", "tb-size", "split-wx"];
    let known = if accel == "kvm" { KVM_PROPS } else { TCG_PROPS };
    if !known.contains(&key) {
        return Err(CliError::new(ErrorKind::message(format!(
            "Property '{accel}-accel.{key}' not found"
        ))));
    }
    if accel == "tcg" && key == "thread" && !matches!(value, "single" | "multi") {
        return Err(CliError::new(ErrorKind::message(format!(
            "Invalid 'thread' setting {value}"
        ))));
    }
    if accel == "kvm" && key == "kernel-irqchip" {
        return match value {
            "on" => Ok(None),
            "off" | "split" => Ok(Some(format!("kernel-irqchip={value}"))),
            _ => Err(CliError::new(ErrorKind::ValueNotAccepted {
                name: key.to_string(),
                value: value.to_string(),
            })),
        };
    }
    Ok(Some(format!("accelerator property '{key}'")))
}

/// The accelerators, in the order QEMU would try them, and what vmscope lacks.
pub struct Accelerators {
    pub list: Vec<Accelerator>,
    /// (location, what) of valid settings vmscope does not implement.
    pub unsupported: Vec<(Location, String)>,
}

fn accelerator(name: &str) -> Accelerator {
    if name == "kvm" {
        Accelerator::Kvm
    } else {
        Accelerator::Tcg
    }
}

/// `configure_accelerators`. Without any accelerator option vmscope uses KVM (QEMU named
/// `qemu-system-x86_64` would default to TCG, which vmscope does not implement).
pub fn configure_accelerators(
    accel: &OptsStore,
    legacy: &LegacyOptions,
    console: &mut Console,
) -> Result<Accelerators, CliError> {
    let mut out = Accelerators {
        list: Vec::new(),
        unsupported: Vec::new(),
    };
    if !accel.entries.is_empty() && legacy.accelerators.is_some() {
        return Err(CliError::new(ErrorKind::message(
            "The -accel and \"-machine accel=\" options are incompatible",
        )));
    }
    let mut invalid: Vec<(Location, ErrorKind)> = Vec::new();
    if accel.entries.is_empty() {
        let names = legacy.accelerators.as_deref().unwrap_or("kvm");
        for name in names.split(':') {
            if QEMU_ACCELERATORS.contains(&name) {
                out.list.push(accelerator(name));
            } else {
                invalid.push((
                    Location::none(),
                    ErrorKind::message(format!("invalid accelerator {name}")),
                ));
            }
        }
        if let Some(value) = &legacy.kernel_irqchip {
            if let Some(what) = check_accel_property("kvm", "kernel-irqchip", value)? {
                out.unsupported.push((Location::none(), what));
            }
        }
    } else {
        // QEMU stops at the first accelerator that initialises; it never looks at the
        // options of later ones.
        for opts in &accel.entries {
            let name = opts.get("accel").unwrap_or_default();
            if !QEMU_ACCELERATORS.contains(&name) {
                invalid.push((
                    opts.location.clone(),
                    ErrorKind::message(format!("invalid accelerator {name}")),
                ));
                continue;
            }
            for (key, value) in opts.items() {
                if key == "accel" {
                    continue;
                }
                if let Some(what) =
                    check_accel_property(name, key, value).map_err(|e| e.located(&opts.location))?
                {
                    out.unsupported.push((opts.location.clone(), what));
                }
            }
            out.list.push(accelerator(name));
            break;
        }
    }
    if out.list.is_empty() {
        let mut lines = invalid.into_iter();
        return Err(match lines.next() {
            None => CliError::new(ErrorKind::message("no accelerator found")),
            Some((location, first)) => {
                lines.fold(CliError::at(&location, first), |e, (l, k)| e.then_at(&l, k))
            }
        });
    }
    if !invalid.is_empty() {
        for (location, line) in &invalid {
            console.error_line(&CliError::at(location, line.clone()).to_string());
        }
        let name = match out.list[0] {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        };
        console.error_line(&format!("falling back to {name}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::keyval;
    use super::*;

    fn smp(params: &str) -> Result<SmpConfig, String> {
        let (dict, _) = keyval::parse(params, Some("cpus")).unwrap();
        let mut console = Console::capture("q");
        smp_topology(&dict, &mut console).map_err(|e| e.to_string())
    }

    fn topo(
        cpus: u32,
        sockets: u32,
        dies: u32,
        cores: u32,
        threads: u32,
        max_cpus: u32,
    ) -> SmpConfig {
        SmpConfig {
            cpus,
            sockets,
            dies,
            cores,
            threads,
            max_cpus,
        }
    }

    #[test]
    fn smp_resolution_prefers_cores() {
        assert_eq!(smp("4"), Ok(topo(4, 1, 1, 4, 1, 4)));
        assert_eq!(smp("sockets=1,cores=4"), Ok(topo(4, 1, 1, 4, 1, 4)));
        assert_eq!(smp("sockets=2,cores=2"), Ok(topo(4, 2, 1, 2, 1, 4)));
        assert_eq!(smp("8,sockets=2"), Ok(topo(8, 2, 1, 4, 1, 8)));
        assert_eq!(smp("8,cores=2"), Ok(topo(8, 4, 1, 2, 1, 8)));
        assert_eq!(smp("2,maxcpus=4"), Ok(topo(2, 1, 1, 4, 1, 4)));
        assert_eq!(smp("4,dies=2"), Ok(topo(4, 1, 2, 2, 1, 4)));
        assert_eq!(smp("4,clusters=1"), Ok(topo(4, 1, 1, 4, 1, 4)));
        assert_eq!(smp("0"), Ok(topo(1, 1, 1, 1, 1, 1)));
    }

    #[test]
    fn smp_errors_match_qemu() {
        assert_eq!(
            smp("4,sockets=3").unwrap_err(),
            "Invalid CPU topology: product of the hierarchy must match maxcpus: sockets (3) * dies (1) * cores (1) * threads (1) != maxcpus (4)"
        );
        assert_eq!(
            smp("2,sockets=4").unwrap_err(),
            "Invalid CPU topology: product of the hierarchy must match maxcpus: sockets (4) * dies (1) * cores (0) * threads (1) != maxcpus (2)"
        );
        assert_eq!(
            smp("4,maxcpus=2").unwrap_err(),
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)"
        );
        assert_eq!(
            smp("300").unwrap_err(),
            "Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-i440fx-7.2' is 255"
        );
        assert_eq!(
            smp("-1").unwrap_err(),
            "Invalid SMP CPUs -1. The max CPUs supported by machine 'pc-i440fx-7.2' is 255"
        );
        assert_eq!(
            smp("99999999999").unwrap_err(),
            "Invalid SMP CPUs 1215752191. The max CPUs supported by machine 'pc-i440fx-7.2' is 255"
        );
        assert_eq!(
            smp("foo").unwrap_err(),
            "Parameter 'smp.cpus' expects integer"
        );
        assert_eq!(
            smp("4,foo=1").unwrap_err(),
            "Parameter 'smp.foo' is unexpected"
        );
        assert_eq!(
            smp("4,clusters=2").unwrap_err(),
            "clusters not supported by this machine's CPU topology"
        );
        assert!(smp("4,sockets=65536,threads=65536").is_err());
    }

    #[test]
    fn machine_help_lists_pc_only() {
        assert_eq!(
            machine_help(None),
            "Supported machines are:\npc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\npc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)\n"
        );
    }
}
