//! qcow2 v2/v3: reading, writing, creation and checking.

pub mod cache;
pub mod check;
pub mod compress;
pub mod create;
pub mod header;
pub mod image;
pub mod refcount;
pub mod snapshot;

pub use cache::{MetadataCache, TableKind};
pub use check::{check, CheckReport};
pub use create::{create, Preallocation, Qcow2CreateOptions};
pub use header::{CompressionType, Header};
pub use image::{resolve_cache_sizes, CacheSizes, ClusterMapping, Qcow2Extent, Qcow2Image};
pub use snapshot::InternalSnapshot;
