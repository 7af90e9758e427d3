//! Block backends and the node graph (raw, qcow2, chains). Knows nothing about devices or KVM.
//!
//! Entry points: [`open_node`] opens an image and its backing chain as a [`BlockNode`]
//! (the thing a disk device reads and writes); [`qcow2::create`] makes images and overlays
//! ([`create_overlay`] for `snapshot_blkdev`).

pub mod aio;
pub mod drive;
pub mod error;
pub mod host_file;
pub mod job;
pub mod node;
pub mod open;
pub mod options;
pub mod qcow2;
pub mod qemu_drivers;
pub mod raw;
pub mod zero_scan;

pub use error::{BlockError, BlockResult};
pub use node::{BlockNode, BlockStatus, ImageFormat, Layer, LayerMapping};
pub use open::open_node;
pub use options::{AioMode, CacheMode, DetectZeroes, OpenOptions, Qcow2CacheOptions};

use std::path::Path;

/// Creates a qcow2 overlay at `path` backed by `backing` (as named in its header, so
/// `mode=absolute-paths` passes an absolute name) of format `backing_format`, with the
/// backing image's virtual size. Used by `snapshot_blkdev` / `blockdev-snapshot-sync`.
pub fn create_overlay(
    path: &Path,
    backing: &str,
    backing_format: ImageFormat,
    virtual_size: u64,
) -> BlockResult<()> {
    qcow2::create(
        path,
        &qcow2::Qcow2CreateOptions {
            size: virtual_size,
            backing_file: Some(backing.to_string()),
            backing_format: Some(backing_format.name().to_string()),
            ..Default::default()
        },
    )
}
