//! `block-commit` (and HMP `commit`): copies what layers `top..base` provide into the
//! base. Intermediate commit rewrites the backing file of the layer above `top` once the
//! data is flushed in the base; active commit (`top` = the active image) goes `ready`
//! and, on `block-job-complete`, copies what the guest wrote meanwhile with guest writes
//! held off, then makes the base the active image.

use std::sync::Arc;

use super::{JobWork, StepError};
use crate::block::error::BlockResult;
use crate::block::node::BlockNode;

/// QEMU's commit buffer size: the largest chunk copied at once.
const CHUNK: u64 = 512 * 1024;

pub struct CommitWork {
    node: Arc<BlockNode>,
    top: usize,
    base: usize,
    len: u64,
    /// Active commit: where the scan is (progress counts copied bytes only).
    cursor: u64,
    size: u64,
}

/// Copies every range allocated in layers `top..base` into `base`.
fn copy_all(node: &BlockNode, top: usize, base: usize) -> BlockResult<()> {
    let size = node.virtual_size()?;
    let mut off = 0;
    while off < size {
        let (allocated, run) = node.allocated_in_layers(top, base, off, CHUNK.min(size - off))?;
        if allocated {
            node.commit_range(top, base, off, run)?;
        }
        off += run.max(1);
    }
    Ok(())
}

/// Copies what the guest wrote since the last call into `base`.
fn copy_dirty(node: &BlockNode, base: usize) -> BlockResult<()> {
    for (off, len) in node.take_dirty() {
        node.commit_range(0, base, off, len)?;
    }
    Ok(())
}

/// Bytes allocated in layers `top..base`.
fn allocated_bytes(node: &BlockNode, top: usize, base: usize) -> BlockResult<u64> {
    let size = node.virtual_size()?;
    let (mut off, mut total) = (0, 0);
    while off < size {
        let (allocated, run) = node.allocated_in_layers(top, base, off, size - off)?;
        if allocated {
            total += run;
        }
        off += run.max(1);
    }
    Ok(total)
}

impl CommitWork {
    /// Prepares a commit of layers `top..base` into `base` (reopened read-write here).
    pub fn new(node: Arc<BlockNode>, top: usize, base: usize) -> BlockResult<CommitWork> {
        node.reopen_layer_read_write(base)?;
        if top == 0 {
            // What the guest writes from now on is copied again at completion (and while
            // the job waits for it).
            node.start_dirty_tracking(CHUNK / 8);
        }
        let size = node.virtual_size()?;
        let len = if top == 0 {
            allocated_bytes(&node, top, base)?
        } else {
            size
        };
        Ok(CommitWork {
            node,
            top,
            base,
            len,
            cursor: 0,
            size,
        })
    }
}

impl JobWork for CommitWork {
    fn total_len(&self) -> u64 {
        self.len
    }

    fn step(&mut self, offset: u64) -> Result<(u64, u64), StepError> {
        let read_err = |error| StepError {
            write: false,
            error,
        };
        if self.top == 0 {
            // Active commit: scan the disk, progress is what was copied.
            loop {
                if self.cursor >= self.size {
                    return Ok((self.len - offset, 0));
                }
                let max = CHUNK.min(self.size - self.cursor);
                let (allocated, run) = self
                    .node
                    .allocated_in_layers(0, self.base, self.cursor, max)
                    .map_err(read_err)?;
                let at = self.cursor;
                self.cursor += run.max(1);
                if allocated {
                    self.node
                        .commit_range(0, self.base, at, run)
                        .map_err(|error| StepError { write: true, error })?;
                    let progress = run.min(self.len - offset);
                    return Ok((progress, run));
                }
            }
        }
        let n = CHUNK.min(self.len - offset);
        let (allocated, run) = self
            .node
            .allocated_in_layers(self.top, self.base, offset, n)
            .map_err(read_err)?;
        if !allocated {
            return Ok((run, 0));
        }
        self.node
            .commit_range(self.top, self.base, offset, run)
            .map_err(|error| StepError { write: true, error })?;
        Ok((run, run))
    }

    fn waits_for_completion(&self) -> bool {
        self.top == 0
    }

    fn sync_while_ready(&mut self) -> BlockResult<()> {
        if self.top == 0 {
            copy_dirty(&self.node, self.base)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> BlockResult<()> {
        if self.top == 0 {
            let base = self.base;
            return self
                .node
                .complete_active_commit(base, |node| copy_dirty(node, base));
        }
        self.node.flush_layer(self.base)?;
        self.node.finish_commit(self.top, self.base)
    }
}

/// HMP `commit DEVICE`: QEMU's synchronous `bdrv_commit` — the active image's data goes
/// into its backing file, then the active image is emptied (the chain stays).
pub struct HmpCommit;

impl HmpCommit {
    pub fn run(node: &BlockNode) -> BlockResult<()> {
        if node.chain_len() < 2 {
            // QEMU: nothing to commit without a backing file.
            return Ok(());
        }
        node.reopen_layer_read_write(1)?;
        let _no_io = node.io_gate_exclusive();
        copy_all(node, 0, 1)?;
        // The data is durable in the backing file before the overlay forgets it.
        node.flush_layer(1)?;
        node.make_top_empty()
    }
}

impl Drop for CommitWork {
    fn drop(&mut self) {
        if self.top == 0 {
            self.node.stop_dirty_tracking();
        }
    }
}
