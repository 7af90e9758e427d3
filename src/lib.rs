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
pub mod qga;
pub mod trace;
