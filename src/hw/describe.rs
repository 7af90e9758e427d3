//! How the machine's devices and address spaces describe themselves by QEMU's names, for
//! the monitor's `info qtree` and `info mtree`. Device models and the machine build these
//! values from their own state; the monitor only formats them, so the listing cannot drift
//! from what is actually wired.
//!
//! Two shapes: a qdev tree ([`QdevBus`] / [`QdevDevice`]: QEMU type names, ids, properties
//! printed as QEMU prints them, child buses) and a memory-region graph ([`MemoryMap`]:
//! regions with QEMU's names, priorities and aliases, and the address spaces rooted in
//! them).

/// A bus and the devices on it, in the order QEMU prints them (newest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdevBus {
    /// `pci.0`, `isa.0`, `ide.0`, `main-system-bus`.
    pub name: String,
    /// QEMU's bus type as `info qtree` shows it: `System`, `PCI`, `ISA`, `IDE`.
    pub bus_type: &'static str,
    pub devices: Vec<QdevDevice>,
}

/// One device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdevDevice {
    /// QEMU's type name (`i8042`, `PIIX4_PM`, `kvm-ioapic`).
    pub type_name: &'static str,
    /// The qdev id; empty when the device has none (QEMU prints `id ""`).
    pub id: String,
    pub gpios: Vec<Gpio>,
    pub props: Vec<QdevProp>,
    /// What the bus adds after the properties (`class ...`/`bar N: ...` of a PCI function,
    /// `mmio base/size` of a system-bus device), without indentation.
    pub bus_lines: Vec<String>,
    /// Child buses, in print order.
    pub buses: Vec<QdevBus>,
}

impl QdevDevice {
    /// A device of type `type_name` without id, GPIOs, properties or buses.
    pub fn new(type_name: &'static str) -> QdevDevice {
        QdevDevice {
            type_name,
            id: String::new(),
            gpios: Vec::new(),
            props: Vec::new(),
            bus_lines: Vec::new(),
            buses: Vec::new(),
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> QdevDevice {
        self.id = id.into();
        self
    }

    pub fn gpio_in(mut self, name: &'static str, count: u32) -> QdevDevice {
        self.gpios.push(Gpio::input(name, count));
        self
    }

    pub fn gpio_out(mut self, name: &'static str, count: u32) -> QdevDevice {
        self.gpios.push(Gpio::output(name, count));
        self
    }

    pub fn prop(mut self, prop: QdevProp) -> QdevDevice {
        self.props.push(prop);
        self
    }

    pub fn bus_line(mut self, line: String) -> QdevDevice {
        self.bus_lines.push(line);
        self
    }

    pub fn bus(mut self, bus: QdevBus) -> QdevDevice {
        self.buses.push(bus);
        self
    }
}

/// A named GPIO list (`gpio-in "" 24`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpio {
    pub output: bool,
    pub name: &'static str,
    pub count: u32,
}

impl Gpio {
    pub fn input(name: &'static str, count: u32) -> Gpio {
        Gpio {
            output: false,
            name,
            count,
        }
    }

    pub fn output(name: &'static str, count: u32) -> Gpio {
        Gpio {
            output: true,
            name,
            count,
        }
    }
}

/// A property and its value, already in QEMU's printed form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdevProp {
    pub name: &'static str,
    pub value: String,
}

impl QdevProp {
    /// An unsigned integer: `112 (0x70)`.
    pub fn uint(name: &'static str, value: u64) -> QdevProp {
        QdevProp {
            name,
            value: format!("{value} (0x{value:x})"),
        }
    }

    /// A signed integer: `-1 (0xffffffffffffffff)`.
    pub fn int(name: &'static str, value: i64) -> QdevProp {
        QdevProp {
            name,
            value: format!("{value} (0x{:x})", value as u64),
        }
    }

    pub fn bool(name: &'static str, value: bool) -> QdevProp {
        QdevProp {
            name,
            value: value.to_string(),
        }
    }

    /// A string, a chardev or drive name, or an enumeration value: quoted.
    pub fn string(name: &'static str, value: &str) -> QdevProp {
        QdevProp {
            name,
            value: format!("\"{value}\""),
        }
    }

    /// A size: `2147483648 (2 GiB)`.
    pub fn size(name: &'static str, value: u64) -> QdevProp {
        QdevProp {
            name,
            value: format!("{value} ({})", size_to_str(value)),
        }
    }

    /// A PCI device address property: `01.3` (function omitted when 0 is not QEMU's way:
    /// it always prints both).
    pub fn pci_addr(devfn: u8) -> QdevProp {
        QdevProp {
            name: "addr",
            value: format!("{:02x}.{:x}", devfn >> 3, devfn & 7),
        }
    }
}

/// QEMU's `size_to_str`: the value in the largest binary unit that keeps it at or above
/// one, with three significant digits (`%0.3g`), then ` B`, ` KiB`, ...
pub fn size_to_str(value: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    // The unit is chosen from value / (1000/1024), so 1000 B already shows as 0.977 KiB.
    let scaled = value as f64 / (1000.0 / 1024.0);
    let exponent = if scaled == 0.0 {
        0
    } else {
        // frexp's exponent: scaled = m * 2^e with m in [0.5, 1).
        scaled.log2().floor() as i32 + 1
    };
    let index = ((exponent - 1) / 10).clamp(0, 6) as usize;
    let divided = value as f64 / (1u64 << (index * 10)) as f64;
    format!("{} {}B", format_g3(divided), SUFFIXES[index])
}

/// C's `%0.3g` for the non-negative values [`size_to_str`] produces.
fn format_g3(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let exponent = value.abs().log10().floor() as i32;
    // Rounding to three digits may carry into the next power of ten (999.5 -> 1e3).
    let rounded_exponent = {
        let digits = (value / 10f64.powi(exponent - 2)).round();
        if digits >= 1000.0 {
            exponent + 1
        } else {
            exponent
        }
    };
    if !(-4..3).contains(&rounded_exponent) {
        let mantissa = value / 10f64.powi(rounded_exponent);
        let text = trim_fraction(format!("{mantissa:.2}"));
        let sign = if rounded_exponent < 0 { '-' } else { '+' };
        return format!("{text}e{sign}{:02}", rounded_exponent.abs());
    }
    let decimals = (2 - rounded_exponent).max(0) as usize;
    trim_fraction(format!("{value:.decimals$}"))
}

fn trim_fraction(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// QEMU's names of the PCI classes the `pc` machine's functions use
/// (`pci_class_descriptions`); others print as `Class XXXX`.
fn pci_class_name(class: u16) -> Option<&'static str> {
    Some(match class {
        0x0100 => "SCSI controller",
        0x0101 => "IDE controller",
        0x0200 => "Ethernet controller",
        0x0300 => "VGA controller",
        0x0600 => "Host bridge",
        0x0601 => "ISA bridge",
        0x0604 => "PCI bridge",
        0x0680 => "Bridge",
        0x0780 => "Communication controller",
        0x0c03 => "USB controller",
        _ => return None,
    })
}

/// What a PCI function says about itself (see `PciFunction::describe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDescription {
    /// QEMU's type name (`i440FX`, `piix3-ide`).
    pub type_name: &'static str,
    /// The device's own properties, printed before the common PCI ones.
    pub props: Vec<QdevProp>,
    pub gpios: Vec<Gpio>,
    pub bars: Vec<PciBarInfo>,
    /// Whether the function ever masters the bus (DMA) once its command register lets it.
    pub bus_master: bool,
}

impl PciDescription {
    /// A function with no properties, GPIOs or BARs that never masters the bus.
    pub fn new(type_name: &'static str) -> PciDescription {
        PciDescription {
            type_name,
            props: Vec::new(),
            gpios: Vec::new(),
            bars: Vec::new(),
            bus_master: false,
        }
    }
}

/// A BAR a PCI function declares: its index, whether it is I/O, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBarInfo {
    pub index: u8,
    pub io: bool,
    pub size: u64,
}

/// QEMU's "unmapped" BAR address: what `info qtree` shows until the guest maps the BAR.
const PCI_BAR_UNMAPPED: u64 = u64::MAX;

/// Reads a dword of a function's configuration space (offset dword aligned).
pub type ConfigRead<'a> = &'a dyn Fn(u8) -> u32;

/// A PCI function on bus 0 as `info qtree` shows it: `type_name`, `own_props` (the
/// device's own properties, printed first), the common PCI properties, and the bus lines
/// read from the function's configuration space as it is now (class, ids, BAR addresses).
pub fn pci_device(
    type_name: &'static str,
    devfn: u8,
    config: ConfigRead,
    own_props: Vec<QdevProp>,
    bars: &[PciBarInfo],
) -> QdevDevice {
    let dword = |offset: u8| config(offset);
    let ids = dword(0x00);
    let class = (dword(0x08) >> 16) as u16;
    let header_type = (dword(0x0c) >> 16) as u8;
    let subsystem = dword(0x2c);
    let command = dword(0x04) as u16;
    let mut device = QdevDevice::new(type_name);
    device.props = own_props;
    for prop in [
        QdevProp::pci_addr(devfn),
        QdevProp::string("romfile", ""),
        QdevProp::uint("romsize", u64::from(u32::MAX)),
        QdevProp::uint("rombar", 1),
        QdevProp::bool("multifunction", header_type & 0x80 != 0),
        QdevProp::bool("x-pcie-lnksta-dllla", true),
        QdevProp::bool("x-pcie-extcap-init", true),
        QdevProp::string("failover_pair_id", ""),
        QdevProp::uint("acpi-index", 0),
    ] {
        device.props.push(prop);
    }
    let class_text = match pci_class_name(class) {
        Some(name) => name.to_string(),
        None => format!("Class {class:04x}"),
    };
    device.bus_lines.push(format!(
        "class {class_text}, addr 00:{:02x}.{:x}, pci id {:04x}:{:04x} (sub {:04x}:{:04x})",
        devfn >> 3,
        devfn & 7,
        ids & 0xffff,
        ids >> 16,
        subsystem & 0xffff,
        subsystem >> 16
    ));
    for bar in bars {
        let address = bar_address(config, command, bar);
        device.bus_lines.push(format!(
            "bar {}: {} at 0x{address:x} [0x{:x}]",
            bar.index,
            if bar.io { "i/o" } else { "mem" },
            address.wrapping_add(bar.size).wrapping_sub(1)
        ));
    }
    device
}

/// Where `bar` decodes now, by QEMU's rules: unmapped while the command register disables
/// its space, at address 0, or when it would wrap.
pub fn bar_address(config: ConfigRead, command: u16, bar: &PciBarInfo) -> u64 {
    let enabled = if bar.io {
        command & 0x1 != 0
    } else {
        command & 0x2 != 0
    };
    if !enabled || bar.size == 0 {
        return PCI_BAR_UNMAPPED;
    }
    let raw = u64::from(config(0x10 + 4 * bar.index));
    let address = raw & !(bar.size - 1) & if bar.io { !0x3 } else { !0xf };
    let last = address + bar.size - 1;
    if address == 0 || last <= address || last >= u64::from(u32::MAX) {
        return PCI_BAR_UNMAPPED;
    }
    if bar.io && last > 0xffff {
        return PCI_BAR_UNMAPPED;
    }
    address
}

/// What a region is, as `info mtree` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Device registers or a container.
    Io,
    Ram,
    Rom,
}

impl RegionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::Io => "i/o",
            RegionKind::Ram => "ram",
            RegionKind::Rom => "rom",
        }
    }
}

/// Index of a region in its [`MemoryMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub usize);

/// One region (QEMU's MemoryRegion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    /// Offset in the container (for roots: 0).
    pub addr: u64,
    /// Size in bytes; `1 << 64` for a region covering the whole 64-bit space.
    pub size: u128,
    pub priority: i32,
    pub kind: RegionKind,
    pub enabled: bool,
    /// An alias shows part of another region: the target and the offset in it.
    pub alias: Option<(RegionId, u64)>,
    /// In QEMU's list order: higher priority first, and among equals the newest first.
    pub subregions: Vec<RegionId>,
}

/// An address space: its name and root region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSpaceInfo {
    pub name: String,
    pub root: RegionId,
}

/// The machine's regions and address spaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryMap {
    pub regions: Vec<Region>,
    /// In the order `info mtree` prints their groups (QEMU's order is a hash order that
    /// changes between runs; this is one of them).
    pub address_spaces: Vec<AddressSpaceInfo>,
}

/// The whole 64-bit space, as a region size.
pub const WHOLE_64BIT_SPACE: u128 = 1 << 64;

impl MemoryMap {
    /// A new region (not placed anywhere yet).
    pub fn region(&mut self, name: &str, size: u128, kind: RegionKind, priority: i32) -> RegionId {
        self.regions.push(Region {
            name: name.to_string(),
            addr: 0,
            size,
            priority,
            kind,
            enabled: true,
            alias: None,
            subregions: Vec::new(),
        });
        RegionId(self.regions.len() - 1)
    }

    /// A new alias of `target` at `offset` in it; the kind is the target's.
    pub fn alias(
        &mut self,
        name: &str,
        target: RegionId,
        offset: u64,
        size: u128,
        priority: i32,
    ) -> RegionId {
        let kind = self.regions[target.0].kind;
        let id = self.region(name, size, kind, priority);
        self.regions[id.0].alias = Some((target, offset));
        id
    }

    /// Places `child` at `addr` in `container`, where QEMU's list would put it: before the
    /// first subregion of lower or equal priority.
    pub fn add_subregion(&mut self, container: RegionId, addr: u64, child: RegionId) {
        self.regions[child.0].addr = addr;
        let priority = self.regions[child.0].priority;
        let list = &self.regions[container.0].subregions;
        let at = list
            .iter()
            .position(|other| priority >= self.regions[other.0].priority)
            .unwrap_or(list.len());
        self.regions[container.0].subregions.insert(at, child);
    }

    pub fn set_enabled(&mut self, id: RegionId, enabled: bool) {
        self.regions[id.0].enabled = enabled;
    }

    pub fn add_address_space(&mut self, name: &str, root: RegionId) {
        self.address_spaces.push(AddressSpaceInfo {
            name: name.to_string(),
            root,
        });
    }

    pub fn get(&self, id: RegionId) -> &Region {
        &self.regions[id.0]
    }
}

/// A port range a device decodes, under QEMU's region name; `children` are at offsets
/// inside it (QEMU's `rtc-index` inside `rtc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRegion {
    pub name: &'static str,
    pub base: u16,
    pub len: u16,
    pub priority: i32,
    pub children: Vec<PortRegion>,
}

impl PortRegion {
    /// A leaf region at priority 0.
    pub const fn new(name: &'static str, base: u16, len: u16) -> PortRegion {
        PortRegion {
            name,
            base,
            len,
            priority: 0,
            children: Vec::new(),
        }
    }

    pub fn with_priority(mut self, priority: i32) -> PortRegion {
        self.priority = priority;
        self
    }

    pub fn with_child(mut self, child: PortRegion) -> PortRegion {
        self.children.push(child);
        self
    }
}

impl MemoryMap {
    /// Adds `regions` (I/O, with their children) to `container` at their bases; returns
    /// their ids in order.
    pub fn add_port_regions(
        &mut self,
        container: RegionId,
        regions: &[PortRegion],
    ) -> Vec<RegionId> {
        regions
            .iter()
            .map(|region| {
                let id = self.region(
                    region.name,
                    u128::from(region.len),
                    RegionKind::Io,
                    region.priority,
                );
                self.add_port_regions(id, &region.children);
                self.add_subregion(container, u64::from(region.base), id);
                id
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_qemus_size_to_str() {
        assert_eq!(size_to_str(0), "0 B");
        assert_eq!(size_to_str(512), "512 B");
        assert_eq!(size_to_str(1000), "0.977 KiB");
        assert_eq!(size_to_str(4096), "4 KiB");
        assert_eq!(size_to_str(2 << 30), "2 GiB");
        assert_eq!(size_to_str(u64::from(u32::MAX)), "4 GiB");
        assert_eq!(size_to_str(1536), "1.5 KiB");
    }

    #[test]
    fn properties_print_like_qemu() {
        assert_eq!(QdevProp::uint("iobase", 0x70).value, "112 (0x70)");
        assert_eq!(QdevProp::int("x", -1).value, "-1 (0xffffffffffffffff)");
        assert_eq!(QdevProp::string("drive", "ide0-hd0").value, "\"ide0-hd0\"");
        assert_eq!(QdevProp::pci_addr(0x0b).value, "01.3");
        assert_eq!(
            QdevProp::size("pci-hole64-size", 2 << 30).value,
            "2147483648 (2 GiB)"
        );
    }

    #[test]
    fn pci_lines_follow_the_configuration_space() {
        // piix3-ide at 00:01.1: BAR4 at 0xc000 once I/O decoding is on.
        let config = |command: u32| {
            move |offset: u8| match offset {
                0x00 => 0x7010_8086,
                0x04 => command,
                0x08 => 0x0101_8000,
                0x0c => 0,
                0x20 => 0xc001,
                0x2c => 0x1100_1af4,
                _ => 0,
            }
        };
        let bar = PciBarInfo {
            index: 4,
            io: true,
            size: 16,
        };
        let off = pci_device("piix3-ide", 0x09, &config(0), Vec::new(), &[bar]);
        assert_eq!(
            off.bus_lines,
            [
                "class IDE controller, addr 00:01.1, pci id 8086:7010 (sub 1af4:1100)",
                "bar 4: i/o at 0xffffffffffffffff [0xe]",
            ]
        );
        assert!(off.props.contains(&QdevProp::pci_addr(0x09)));
        assert!(off.props.contains(&QdevProp::bool("multifunction", false)));
        let on = pci_device("piix3-ide", 0x09, &config(1), Vec::new(), &[bar]);
        assert_eq!(on.bus_lines[1], "bar 4: i/o at 0xc000 [0xc00f]");
    }

    #[test]
    fn equal_priorities_list_newest_first() {
        let mut map = MemoryMap::default();
        let root = map.region("io", 0x10000, RegionKind::Io, 0);
        let a = map.region("a", 1, RegionKind::Io, 0);
        let b = map.region("b", 1, RegionKind::Io, 0);
        let c = map.region("c", 1, RegionKind::Io, 1);
        map.add_subregion(root, 0, a);
        map.add_subregion(root, 0, b);
        map.add_subregion(root, 0, c);
        assert_eq!(map.get(root).subregions, vec![c, b, a]);
    }
}
