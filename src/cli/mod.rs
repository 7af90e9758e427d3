//! QEMU's argv grammar, parsed with nom into a typed [`crate::config::Config`].
