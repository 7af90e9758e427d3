//! Device models, each behind a port/MMIO handler and an interrupt line.
