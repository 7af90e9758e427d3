//! PCI: the configuration space of a function, the configuration mechanism #1 host interface
//! (ports 0xCF8/0xCFC) and the bus of functions behind it, and the dynamic I/O space where
//! firmware places port windows (BARs and chipset bases such as the PIIX4 PM block).

pub mod bar;
pub mod config;
pub mod host;
pub mod io_space;
pub mod msix;

pub use config::ConfigSpace;
pub use host::{PciBus, PciConfigPorts, PCI_CONFIG_ADDRESS, PCI_CONFIG_PORT_COUNT};
pub use io_space::IoSpace;

/// A PCI function: its configuration space, read and written a dword at a time.
///
/// `offset` is dword aligned and below 256; byte and word accesses are merged by the caller
/// (see [`host`]), with `mask` telling which bytes of the dword the guest wrote.
pub trait PciFunction: Send + Sync {
    fn config_read(&self, offset: u8) -> u32;
    fn config_write(&self, offset: u8, value: u32, mask: u32);
    /// Back to power-on state (system reset).
    fn reset(&self) {}
    /// How the function names itself in `info qtree` / `info mtree`: QEMU's type name, its
    /// own properties, BARs and GPIOs. A function without one is listed as undescribed.
    fn describe(&self) -> Option<crate::hw::describe::PciDescription> {
        None
    }
}

/// Bus/device/function of a function on bus 0, as `device << 3 | function`.
pub const fn devfn(device: u8, function: u8) -> u8 {
    (device << 3) | function
}
