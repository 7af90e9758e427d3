//! vmscope: a KVM virtual machine monitor that is a drop-in for `qemu-system-x86_64`.
//!
//! Data flows one way: [`cli`] parses QEMU's argv into a [`config::Config`], [`machine`]
//! builds the VM from it with devices from [`hw`] over [`block`] backends and [`chardev`]s,
//! and [`monitor`] drives the running machine through a narrow control handle.

pub mod block;
pub mod chardev;
pub mod cli;
pub mod config;
pub mod hw;
pub mod machine;
pub mod monitor;
pub mod process;
pub mod qga;
pub mod trace;

/// The name this process was started as (`qemu-system-x86_64` when installed under QEMU's
/// name), used as the prefix of error messages like QEMU's `error_report`.
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .map_or_else(|| "vmscope".to_string(), |arg0| cli::program_name(&arg0))
}
