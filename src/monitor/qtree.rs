//! `info qtree`: the machine's qdev tree ([`QdevBus`], built by the machine) in QEMU 7.2's
//! layout: a bus, its type, its devices with their GPIO lists, properties and bus-specific
//! lines, and their child buses, each level indented by two more spaces.

use crate::hw::describe::{QdevBus, QdevDevice};

/// The text of `info qtree` for `root` (lines end in `\n`).
pub fn format_qtree(root: &QdevBus) -> String {
    let mut out = String::new();
    print_bus(&mut out, root, 0);
    out
}

fn print_bus(out: &mut String, bus: &QdevBus, indent: usize) {
    let pad = " ".repeat(indent);
    out.push_str(&format!("{pad}bus: {}\n", bus.name));
    out.push_str(&format!("{pad}  type {}\n", bus.bus_type));
    for device in &bus.devices {
        print_device(out, device, indent + 2);
    }
}

fn print_device(out: &mut String, device: &QdevDevice, indent: usize) {
    let pad = " ".repeat(indent);
    out.push_str(&format!(
        "{pad}dev: {}, id \"{}\"\n",
        device.type_name, device.id
    ));
    for gpio in &device.gpios {
        let direction = if gpio.output { "gpio-out" } else { "gpio-in" };
        out.push_str(&format!(
            "{pad}  {direction} \"{}\" {}\n",
            gpio.name, gpio.count
        ));
    }
    for prop in &device.props {
        out.push_str(&format!("{pad}  {} = {}\n", prop.name, prop.value));
    }
    for line in &device.bus_lines {
        out.push_str(&format!("{pad}  {line}\n"));
    }
    for bus in &device.buses {
        print_bus(out, bus, indent + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::describe::QdevProp;

    #[test]
    fn nesting_and_fields() {
        let root = QdevBus {
            name: "main-system-bus".into(),
            bus_type: "System",
            devices: vec![QdevDevice::new("i440FX-pcihost")
                .gpio_in("", 2)
                .prop(QdevProp::bool("bypass-iommu", false))
                .bus(QdevBus {
                    name: "pci.0".into(),
                    bus_type: "PCI",
                    devices: vec![QdevDevice::new("i440FX")
                        .with_id("x")
                        .bus_line("class Host bridge".into())],
                })],
        };
        assert_eq!(
            format_qtree(&root),
            "bus: main-system-bus\n  type System\n  dev: i440FX-pcihost, id \"\"\n    \
             gpio-in \"\" 2\n    bypass-iommu = false\n    bus: pci.0\n      type PCI\n      \
             dev: i440FX, id \"x\"\n        class Host bridge\n"
        );
    }
}
