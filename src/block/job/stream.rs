//! `block-stream`: copies into the active image everything the layers between it and the
//! base provide, then makes the base (or nothing) its backing file. Guest writes racing
//! with the copy win: the node only fills clusters the active image does not allocate.

use std::sync::Arc;

use super::{JobWork, StepError};
use crate::block::error::BlockResult;
use crate::block::node::{BlockNode, ImageFormat};

/// QEMU copies in chunks of this size (`STREAM_CHUNK`).
const CHUNK: u64 = 512 * 1024;

pub struct StreamWork {
    node: Arc<BlockNode>,
    /// Index of the base in the chain (the chain length when streaming everything).
    base_depth: usize,
    /// What the active image's header names as backing afterwards, and its format.
    new_backing: Option<(String, ImageFormat)>,
    len: u64,
}

impl StreamWork {
    pub fn new(
        node: Arc<BlockNode>,
        base_depth: usize,
        new_backing: Option<(String, ImageFormat)>,
    ) -> BlockResult<StreamWork> {
        let len = node.virtual_size()?;
        Ok(StreamWork {
            node,
            base_depth,
            new_backing,
            len,
        })
    }
}

impl JobWork for StreamWork {
    fn total_len(&self) -> u64 {
        self.len
    }

    fn is_trivial(&self) -> bool {
        // Nothing between the active image and the base.
        self.base_depth <= 1
    }

    fn step(&mut self, offset: u64) -> Result<(u64, u64), StepError> {
        let read_err = |error| StepError {
            write: false,
            error,
        };
        let n = CHUNK.min(self.len - offset);
        let (in_top, run) = self
            .node
            .allocated_in_layers(0, 1, offset, n)
            .map_err(read_err)?;
        if in_top {
            return Ok((run, 0));
        }
        let (above_base, run) = self
            .node
            .allocated_in_layers(1, self.base_depth, offset, run)
            .map_err(read_err)?;
        if !above_base {
            return Ok((run, 0));
        }
        self.node
            .stream_range(self.base_depth, offset, run)
            .map_err(|error| StepError { write: true, error })?;
        Ok((run, run))
    }

    fn finish(&mut self) -> BlockResult<()> {
        match &self.new_backing {
            Some((name, format)) => {
                self.node
                    .finish_stream(self.base_depth, Some(name), Some(*format))
            }
            None => self.node.finish_stream(self.base_depth, None, None),
        }
    }
}
