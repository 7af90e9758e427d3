//! Helpers shared by the integration tests: the test kernel, running a machine (QEMU 7.2 or
//! vmscope) with a timeout and scripted serial input, and the /dev/kvm bookkeeping.
//!
//! Each test binary compiles this module on its own and uses a subset of it.
#![allow(dead_code)]

pub mod boot_disk;
pub mod guest_kernel;
pub mod iso9660;
pub mod kvm;
pub mod machine_run;
pub mod qemu;
pub mod temp_dir;
