//! Errors of the block layer. Messages follow QEMU's wording where a user sees them.

use std::io;
use std::path::PathBuf;

/// Anything that can go wrong opening, reading or writing an image.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The host file could not be opened.
    #[error("Could not open '{}': {}", path.display(), describe_io(source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A host I/O call failed.
    #[error("{context}: {}", describe_io(source))]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The image's metadata is malformed or hostile.
    #[error("{0}")]
    Corrupt(String),
    /// The image is valid but uses something vmscope does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// An option was given a value QEMU would refuse.
    #[error("{0}")]
    InvalidOption(String),
    /// A write was attempted on a read-only node.
    #[error("Block node is read-only")]
    ReadOnly,
    /// An access beyond the virtual disk.
    #[error("Request out of range: offset {offset} length {len} on a {size}-byte disk")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// The backing chain loops back on itself.
    #[error("Backing file '{0}' creates an infinite loop.")]
    BackingLoop(String),
}

impl BlockError {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        BlockError::Io {
            context: context.into(),
            source,
        }
    }
}

/// QEMU prints `strerror()` texts without Rust's " (os error N)" suffix.
pub fn describe_io(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
        None => e.to_string(),
    }
}

pub type BlockResult<T> = Result<T, BlockError>;
