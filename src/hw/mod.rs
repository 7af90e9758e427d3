//! Device models, each behind a port/MMIO handler and an interrupt line.

pub mod bus;
pub mod describe;
pub mod i8042;
pub mod ide;
pub mod irq;
pub mod mmio;
pub mod pc;
pub mod pci;
pub mod pm;
pub mod ps2;
pub mod serial;
pub mod virtual_clock;
