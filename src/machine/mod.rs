//! Assembles a VM from the configuration: KVM VM and vCPUs, memory map, boot, run state.
