//! Where drives sit on the `pc` machine's two IDE buses, as QEMU 7.2 decides it: `if=ide`
//! drives (and `-hda`, `-cdrom`...) are connected when the machine is built, then
//! `-device ide-hd` / `ide-cd` take `if=none` drives (or, for `ide-cd`, none: an empty
//! tray) on a given or the first free position, with QEMU's errors; and without
//! `-nodefaults` an empty CD-ROM drive `ide1-cd0` appears where nothing else was asked for.
//! Each placed drive is given the name of the device QEMU attaches it to (`query-block`'s
//! `qdev`).

use crate::block::drive::{DriveKind, DriveSlot, DriveSpec};
use crate::block::OpenOptions;
use crate::config::DriveConfig;

use super::error::{CliError, ErrorKind};
use super::qemu_opts::Opts;

const BUSES: u32 = 2;
const UNITS: u32 = 2;

/// The occupied IDE positions.
#[derive(Default)]
pub struct IdePlacement {
    used: [[bool; UNITS as usize]; BUSES as usize],
    /// Drives taken by `-device` options so far.
    taken_by_devices: Vec<String>,
}

/// QOM path of the `index`-th IDE device QEMU's `pc` creates for `if=ide` drives: devices
/// created by the board before them (CPUs, chipset functions, and without `-nodefaults`
/// the default ISA devices) are numbered first.
fn board_device_path(cpus: u32, no_defaults: bool, index: u32) -> String {
    let before = if no_defaults { 17 } else { 22 };
    format!("/machine/unattached/device[{}]", before + cpus + index)
}

impl IdePlacement {
    /// Marks the `if=ide` drives' positions and names their devices, in QEMU's creation
    /// order (bus 0 master first).
    pub fn place_board_drives(&mut self, drives: &mut [DriveConfig], cpus: u32, no_defaults: bool) {
        let mut order: Vec<(u32, u32, usize)> = drives
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d.spec.slot {
                DriveSlot::Ide { bus, unit } => Some((bus, unit, i)),
                DriveSlot::Unattached => None,
            })
            .collect();
        order.sort();
        for (rank, (bus, unit, i)) in (0u32..).zip(order) {
            self.used[bus as usize][unit as usize] = true;
            drives[i].spec.device = Some(board_device_path(cpus, no_defaults, rank));
        }
    }

    /// `-device ide-hd` / `ide-cd` (QEMU's `ide_dev_initfn` checks). `anonymous_index` is
    /// the device's number among `-device` options without `id=`.
    pub fn attach_device(
        &mut self,
        opts: &Opts,
        drives: &mut Vec<DriveConfig>,
        anonymous_index: usize,
    ) -> Result<(), CliError> {
        let err = |text: String| CliError::at(&opts.location, ErrorKind::message(text));
        let driver = opts.get("driver").unwrap_or_default();
        let kind = if driver == "ide-cd" {
            DriveKind::Cdrom
        } else {
            DriveKind::Disk
        };
        for (key, _) in opts.items() {
            if !matches!(key, "driver" | "id" | "drive" | "bus" | "unit") {
                return Err(CliError::at(
                    &opts.location,
                    ErrorKind::Unsupported(format!("property '{key}' of device '{driver}'")),
                ));
            }
        }
        let device_name = opts
            .id
            .clone()
            .unwrap_or_else(|| format!("/machine/peripheral-anon/device[{anonymous_index}]"));
        let drive_index = match opts.get("drive") {
            Some(id) => {
                let Some(i) = drives.iter().position(|d| d.spec.id == id) else {
                    return Err(err(format!(
                        "Property '{driver}.drive' can't find value '{id}'"
                    )));
                };
                let drive = &drives[i].spec;
                if self.taken_by_devices.iter().any(|t| t == id) {
                    return Err(err(format!(
                        "Drive '{id}' is already in use by another device"
                    )));
                }
                if matches!(drive.slot, DriveSlot::Ide { .. }) {
                    return Err(err(format!(
                        "Drive '{id}' is already in use because it has been automatically \
                         connected to another device (did you need 'if=none' in the drive \
                         options?)"
                    )));
                }
                Some(i)
            }
            None if kind == DriveKind::Disk => return Err(err("No drive specified".into())),
            None => None,
        };
        if let Some(i) = drive_index {
            if kind == DriveKind::Disk && drives[i].spec.file.is_none() {
                return Err(err("Device needs media, but drive is empty".into()));
            }
        }
        let bus = match opts.get("bus") {
            Some(name) => match name {
                "ide.0" => 0,
                "ide.1" => 1,
                other => return Err(err(format!("Bus '{other}' not found"))),
            },
            // The first bus with room; when both are full, the first (and its error).
            None => (0..BUSES)
                .find(|&b| self.used[b as usize].contains(&false))
                .unwrap_or(0),
        };
        let unit = match opts.get("unit") {
            Some(text) => {
                let unit: u32 = text.parse().map_err(|_| {
                    CliError::at(&opts.location, ErrorKind::invalid_value("unit", "uint32"))
                })?;
                if unit >= UNITS {
                    return Err(err(format!(
                        "Can't create IDE unit {unit}, bus supports only {UNITS} units"
                    )));
                }
                unit
            }
            None => u32::from(self.used[bus as usize][0]),
        };
        if self.used[bus as usize][unit as usize] {
            return Err(err(format!("IDE unit {unit} is in use")));
        }
        self.used[bus as usize][unit as usize] = true;
        let slot = DriveSlot::Ide { bus, unit };
        match drive_index {
            Some(i) => {
                self.taken_by_devices.push(drives[i].spec.id.clone());
                let spec = &mut drives[i].spec;
                spec.slot = slot;
                spec.kind = kind;
                spec.device = Some(device_name);
                if kind == DriveKind::Cdrom {
                    spec.open.read_only = true;
                }
            }
            // An `ide-cd` without a drive gets an empty one, named after the device.
            None => drives.push(DriveConfig {
                spec: DriveSpec {
                    id: device_name.clone(),
                    file: None,
                    kind,
                    slot,
                    open: OpenOptions {
                        read_only: true,
                        ..Default::default()
                    },
                    snapshot: false,
                    device: Some(device_name),
                },
                origin: opts.location.text(),
            }),
        }
        Ok(())
    }
}

/// QEMU's default CD-ROM drive (`default_cdrom`): with defaults on, an empty `ide1-cd0` at
/// bus 1 unit 0, unless a drive took that position or an `ide-cd` device was given. It is
/// added before the board connects its drives, so it is named and placed like them.
pub fn add_default_cdrom(drives: &mut Vec<DriveConfig>, ide_cd_device_given: bool) {
    let taken = drives
        .iter()
        .any(|d| d.spec.slot == DriveSlot::Ide { bus: 1, unit: 0 });
    if ide_cd_device_given || taken {
        return;
    }
    drives.push(DriveConfig {
        spec: DriveSpec {
            id: "ide1-cd0".into(),
            file: None,
            kind: DriveKind::Cdrom,
            slot: DriveSlot::Ide { bus: 1, unit: 0 },
            open: OpenOptions {
                read_only: true,
                ..Default::default()
            },
            snapshot: false,
            device: None,
        },
        origin: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::device::DEVICE_OPTS;
    use crate::cli::error::Location;
    use crate::cli::qemu_opts::{OptsStore, Parsed};
    use crate::cli::Console;

    fn device(text: &str) -> Opts {
        let mut store = OptsStore::new(&DEVICE_OPTS);
        let mut console = Console::capture("q");
        let location = Location::words(["-device", text]);
        match store.parse_noisily(text, true, &location, &mut console) {
            Ok(Parsed::Opts(i)) => store.entries.swap_remove(i),
            other => panic!("{text}: {other:?}"),
        }
    }

    fn drive(id: &str, slot: DriveSlot, file: bool) -> DriveConfig {
        DriveConfig {
            spec: DriveSpec {
                id: id.into(),
                file: file.then(|| "disk.img".into()),
                kind: DriveKind::Disk,
                slot,
                open: OpenOptions::default(),
                snapshot: false,
                device: None,
            },
            origin: None,
        }
    }

    fn attach(
        placement: &mut IdePlacement,
        text: &str,
        drives: &mut Vec<DriveConfig>,
    ) -> Result<(), String> {
        placement
            .attach_device(&device(text), drives, 0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn board_drives_are_named_in_qemus_creation_order() {
        let mut drives = vec![
            drive("ide0-hd1", DriveSlot::Ide { bus: 0, unit: 1 }, true),
            drive("ide0-hd0", DriveSlot::Ide { bus: 0, unit: 0 }, true),
            drive("x", DriveSlot::Unattached, true),
        ];
        IdePlacement::default().place_board_drives(&mut drives, 4, true);
        assert_eq!(
            drives[1].spec.device.as_deref(),
            Some("/machine/unattached/device[21]")
        );
        assert_eq!(
            drives[0].spec.device.as_deref(),
            Some("/machine/unattached/device[22]")
        );
        assert_eq!(drives[2].spec.device, None);
    }

    #[test]
    fn devices_take_free_positions_and_report_qemus_errors() {
        let mut drives = vec![
            drive("ide0-hd0", DriveSlot::Ide { bus: 0, unit: 0 }, true),
            drive("x", DriveSlot::Unattached, true),
            drive("y", DriveSlot::Unattached, true),
            drive("empty", DriveSlot::Unattached, false),
        ];
        let mut p = IdePlacement::default();
        p.place_board_drives(&mut drives, 1, true);
        assert_eq!(
            attach(&mut p, "ide-hd", &mut drives),
            Err("-device ide-hd: No drive specified".into())
        );
        assert_eq!(
            attach(&mut p, "ide-hd,drive=nope", &mut drives),
            Err(
                "-device ide-hd,drive=nope: Property 'ide-hd.drive' can't find value 'nope'".into()
            )
        );
        assert!(attach(&mut p, "ide-hd,drive=ide0-hd0", &mut drives)
            .unwrap_err()
            .contains("automatically connected to another device"));
        assert_eq!(
            attach(&mut p, "ide-hd,drive=empty", &mut drives),
            Err("-device ide-hd,drive=empty: Device needs media, but drive is empty".into())
        );
        assert_eq!(
            attach(&mut p, "ide-hd,drive=x,bus=ide.0,unit=0", &mut drives),
            Err("-device ide-hd,drive=x,bus=ide.0,unit=0: IDE unit 0 is in use".into())
        );
        assert_eq!(
            attach(&mut p, "ide-hd,drive=x,bus=ide.2", &mut drives),
            Err("-device ide-hd,drive=x,bus=ide.2: Bus 'ide.2' not found".into())
        );
        assert_eq!(
            attach(&mut p, "ide-hd,drive=x,unit=2", &mut drives),
            Err(
                "-device ide-hd,drive=x,unit=2: Can't create IDE unit 2, bus supports only 2 units"
                    .into()
            )
        );
        // Bus 0 has a free slave position.
        attach(&mut p, "ide-hd,drive=x,id=disk1", &mut drives).unwrap();
        assert_eq!(drives[1].spec.slot, DriveSlot::Ide { bus: 0, unit: 1 });
        assert_eq!(drives[1].spec.device.as_deref(), Some("disk1"));
        assert_eq!(
            attach(&mut p, "ide-hd,drive=x", &mut drives),
            Err("-device ide-hd,drive=x: Drive 'x' is already in use by another device".into())
        );
        // An ide-cd without a drive gets an empty one on the next free bus.
        attach(&mut p, "ide-cd", &mut drives).unwrap();
        let cd = drives.last().unwrap();
        assert_eq!(cd.spec.slot, DriveSlot::Ide { bus: 1, unit: 0 });
        assert_eq!(cd.spec.id, "/machine/peripheral-anon/device[0]");
        assert!(cd.spec.file.is_none() && cd.spec.open.read_only);
        attach(&mut p, "ide-hd,drive=y", &mut drives).unwrap();
        assert_eq!(drives[2].spec.slot, DriveSlot::Ide { bus: 1, unit: 1 });
        // Everything is full: QEMU tries bus 0's slave position.
        assert_eq!(
            attach(&mut p, "ide-cd", &mut drives),
            Err("-device ide-cd: IDE unit 1 is in use".into())
        );
        assert!(attach(&mut p, "ide-hd,drive=y,serial=abc", &mut drives)
            .unwrap_err()
            .contains("not supported yet by vmscope (property 'serial'"));
    }

    #[test]
    fn the_default_cdrom_fills_bus_1_master_unless_taken() {
        let mut drives = vec![drive("ide0-hd0", DriveSlot::Ide { bus: 0, unit: 0 }, true)];
        add_default_cdrom(&mut drives, false);
        assert_eq!(drives.len(), 2);
        assert_eq!(drives[1].spec.id, "ide1-cd0");
        IdePlacement::default().place_board_drives(&mut drives, 1, false);
        assert_eq!(
            drives[1].spec.device.as_deref(),
            Some("/machine/unattached/device[24]")
        );
        let mut drives = vec![drive("ide1-cd0", DriveSlot::Ide { bus: 1, unit: 0 }, true)];
        add_default_cdrom(&mut drives, false);
        assert_eq!(drives.len(), 1);
        let mut drives = Vec::new();
        add_default_cdrom(&mut drives, true);
        assert!(drives.is_empty());
    }
}
