//! `-device`: the devices a user can add, `-device help` / `-device ?`, and QEMU's checks of
//! a device's driver name.

use super::error::{CliError, ErrorKind};
use super::qemu_catalog::QEMU_DEVICES;
use super::qemu_opts::{Opts, OptsList};

/// `-device` accepts any key while the command line is read (`qemu_device_opts`).
pub static DEVICE_OPTS: OptsList = OptsList {
    name: "device",
    implied: Some("driver"),
    merge: false,
    descs: &[],
};

/// QEMU's device categories, in its `-device help` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceCategory {
    Bridge,
    Usb,
    Storage,
    Network,
    Input,
    Display,
    Sound,
    Misc,
    Cpu,
    Watchdog,
    Uncategorized,
}

impl DeviceCategory {
    const ORDER: [(DeviceCategory, &'static str); 11] = [
        (DeviceCategory::Bridge, "Controller/Bridge/Hub"),
        (DeviceCategory::Usb, "USB"),
        (DeviceCategory::Storage, "Storage"),
        (DeviceCategory::Network, "Network"),
        (DeviceCategory::Input, "Input"),
        (DeviceCategory::Display, "Display"),
        (DeviceCategory::Sound, "Sound"),
        (DeviceCategory::Misc, "Misc"),
        (DeviceCategory::Cpu, "CPU"),
        (DeviceCategory::Watchdog, "Watchdog"),
        (DeviceCategory::Uncategorized, "Uncategorized"),
    ];
}

/// A device model a user can add with `-device`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceInfo {
    pub name: &'static str,
    pub category: DeviceCategory,
    pub bus: Option<&'static str>,
    pub alias: Option<&'static str>,
    pub desc: Option<&'static str>,
}

/// The devices vmscope lets a user add with `-device`. Empty until the device issues
/// (virtio-blk, virtio-serial, ...) land: each adds its entry here and its handling in
/// `cli/build.rs`.
pub static VMSCOPE_DEVICES: &[DeviceInfo] = &[DeviceInfo {
    name: "isa-debugcon",
    category: DeviceCategory::Misc,
    bus: Some("ISA"),
    alias: None,
    desc: None,
}];

/// `-device isa-debugcon,chardev=ID[,iobase=N][,readback=0xe9][,id=..]`.
pub fn isa_debugcon(opts: &Opts) -> Result<crate::config::DebugconConfig, CliError> {
    let at = |kind| CliError::at(&opts.location, kind);
    let mut iobase = crate::hw::pc::debugcon::DEBUGCON_DEFAULT_IOBASE;
    let mut chardev = None;
    for (key, value) in opts.items() {
        match key {
            "driver" | "id" => {}
            "chardev" => chardev = Some(value.to_string()),
            "iobase" => {
                let number = super::numbers::strtou64(value, 0)
                    .ok()
                    .filter(|&n| n <= u64::from(u32::MAX))
                    .ok_or_else(|| at(ErrorKind::invalid_value("iobase", "integer")))?;
                iobase = u16::try_from(number).map_err(|_| {
                    at(ErrorKind::message(format!(
                        "isa-debugcon: I/O port {number:#x} is beyond 0xffff"
                    )))
                })?;
            }
            // The value reads return; vmscope implements QEMU's default only.
            "readback" if super::numbers::strtou64(value, 0) == Ok(0xe9) => {}
            "readback" => {
                return Err(at(ErrorKind::Unsupported(
                    "isa-debugcon readback other than 0xe9".into(),
                )))
            }
            other => {
                return Err(at(ErrorKind::message(format!(
                    "Property 'isa-debugcon.{other}' not found"
                ))))
            }
        }
    }
    let Some(chardev) = chardev else {
        return Err(at(ErrorKind::message(
            "Can't create debugcon device, empty char device",
        )));
    };
    Ok(crate::config::DebugconConfig { chardev, iobase })
}

/// `-device help` output for `devices` (QEMU's `qdev_print_devinfos`).
pub fn device_help(devices: &[DeviceInfo]) -> String {
    let mut sorted: Vec<&DeviceInfo> = devices.iter().collect();
    sorted.sort_by_key(|d| d.name);
    let mut out = String::new();
    for (category, title) in DeviceCategory::ORDER {
        let mut printed = false;
        for (i, dev) in sorted.iter().enumerate() {
            if dev.category != category {
                continue;
            }
            if !printed {
                // QEMU separates groups with an empty line, except before the very first
                // device of its sorted list.
                let sep = if i > 0 { "\n" } else { "" };
                out.push_str(&format!("{sep}{title} devices:\n"));
                printed = true;
            }
            out.push_str(&format!("name \"{}\"", dev.name));
            if let Some(bus) = dev.bus {
                out.push_str(&format!(", bus {bus}"));
            }
            if let Some(alias) = dev.alias {
                out.push_str(&format!(", alias \"{alias}\""));
            }
            if let Some(desc) = dev.desc {
                out.push_str(&format!(", desc \"{desc}\""));
            }
            out.push('\n');
        }
    }
    out
}

/// Whether `opts` asks for the device list (`-device help`, `-device ?`).
pub fn wants_help(opts: &Opts) -> bool {
    matches!(opts.get("driver"), Some("help") | Some("?"))
}

/// QEMU's `qdev_device_add` driver checks; returns what vmscope lacks for a valid device.
pub fn check_device(opts: &Opts) -> Result<String, CliError> {
    let at = |kind| CliError::at(&opts.location, kind);
    let Some(driver) = opts.get("driver") else {
        return Err(at(ErrorKind::MissingParameter("driver".into())));
    };
    if !QEMU_DEVICES.contains(&driver) {
        return Err(at(ErrorKind::message(format!(
            "'{driver}' is not a valid device model name"
        ))));
    }
    Ok(format!("device '{driver}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_layout_matches_qemu() {
        let dev = |name, category, bus, alias, desc| DeviceInfo {
            name,
            category,
            bus,
            alias,
            desc,
        };
        let devices = [
            dev(
                "virtio-net-pci",
                DeviceCategory::Network,
                Some("PCI"),
                Some("virtio-net"),
                None,
            ),
            dev(
                "ide-hd",
                DeviceCategory::Storage,
                Some("IDE"),
                None,
                Some("virtual IDE disk"),
            ),
            dev(
                "virtio-keyboard-pci",
                DeviceCategory::Input,
                Some("PCI"),
                Some("virtio-keyboard"),
                None,
            ),
        ];
        assert_eq!(
            device_help(&devices),
            "Storage devices:\nname \"ide-hd\", bus IDE, desc \"virtual IDE disk\"\n\n\
             Network devices:\nname \"virtio-net-pci\", bus PCI, alias \"virtio-net\"\n\n\
             Input devices:\nname \"virtio-keyboard-pci\", bus PCI, alias \"virtio-keyboard\"\n"
        );
        assert_eq!(
            device_help(VMSCOPE_DEVICES),
            "Misc devices:\nname \"isa-debugcon\", bus ISA\n"
        );
    }
}
