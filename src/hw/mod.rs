//! Device models, each behind a port/MMIO handler and an interrupt line.

pub mod bus;
pub mod i8042;
pub mod ide;
pub mod pc;
pub mod pci;
pub mod pm;
pub mod serial;
