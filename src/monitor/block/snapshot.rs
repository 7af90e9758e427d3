//! Live external snapshots: `blockdev-snapshot-sync`, HMP `snapshot_blkdev` and
//! `transaction`. Each snapshot is prepared first (checks, overlay created and opened) and
//! the overlays are put on top only when every action of the transaction is prepared, so a
//! transaction is all or nothing. The pivot itself happens inside the node, with guest
//! writes held off for its duration (see `BlockNode::push_overlay`).

use std::path::Path;
use std::sync::Arc;

use crate::block::error::{describe_io, BlockError};
use crate::block::node::{BlockNode, ImageFormat, Layer};
use crate::block::options::{OpenOptions, Qcow2CacheOptions};
use crate::block::qemu_drivers::QEMU_FORMATS;
use crate::monitor::commands::{CommandError, MonitorCommands};

/// `NewImageMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewImageMode {
    /// `existing`: the overlay file is there already (HMP `-n`).
    Existing,
    /// `absolute-paths` (the default): create it, naming the current image as backing.
    AbsolutePaths,
}

/// The arguments of `blockdev-snapshot-sync` (one transaction action).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub device: Option<String>,
    pub node_name: Option<String>,
    pub snapshot_file: String,
    pub snapshot_node_name: Option<String>,
    pub format: Option<String>,
    pub mode: NewImageMode,
}

/// A snapshot ready to be put on top.
struct Prepared {
    node: Arc<BlockNode>,
    overlay: Layer,
}

fn generic(e: impl std::fmt::Display) -> CommandError {
    CommandError::generic(e.to_string())
}

impl MonitorCommands {
    /// `blockdev-snapshot-sync` / `snapshot_blkdev`.
    pub fn blockdev_snapshot_sync(&self, request: &SnapshotRequest) -> Result<(), CommandError> {
        self.snapshot_transaction(std::slice::from_ref(request))
    }

    /// `transaction` of `blockdev-snapshot-sync` actions: every overlay is prepared before
    /// any is put on top; one failure leaves every drive as it was.
    pub fn snapshot_transaction(&self, requests: &[SnapshotRequest]) -> Result<(), CommandError> {
        // QEMU drains every node first (jobs pause and resume, and say so).
        let state = self.block_state();
        let events = self.events_arc();
        for job in state.jobs.list() {
            state
                .gate
                .open_until(&events, job.id(), &["running", "ready"], || {
                    job.drained(|| ())
                });
        }
        let mut prepared = Vec::with_capacity(requests.len());
        for request in requests {
            prepared.push(self.prepare_snapshot(request, &prepared)?);
        }
        for p in prepared {
            p.node.push_overlay(p.overlay).map_err(generic)?;
        }
        Ok(())
    }

    fn prepare_snapshot(
        &self,
        r: &SnapshotRequest,
        earlier: &[Prepared],
    ) -> Result<Prepared, CommandError> {
        let drive = self.lookup_drive(r.device.as_deref(), r.node_name.as_deref())?;
        let Some(node) = drive.node() else {
            return Err(CommandError::generic(format!(
                "Device '{}' has no medium",
                drive.id()
            )));
        };
        // The node is drained while QEMU prepares the snapshot; a job on it is paused
        // meanwhile (and the snapshot then refused).
        let state = self.block_state();
        if let Some(job) = state.jobs.on_drive(drive.id()) {
            let events = self.events_arc();
            state
                .gate
                .open_until(&events, job.id(), &["running", "ready"], || {
                    job.drained(|| ())
                });
        }
        self.check_not_busy(&drive)?;
        if r.node_name.is_some() && r.snapshot_node_name.is_none() {
            return Err(CommandError::generic("New overlay node-name missing"));
        }
        if let Some(name) = &r.snapshot_node_name {
            // Any drive or node of the graph, backing images included.
            let in_graph = self.drives().iter().any(|d| {
                d.id() == name
                    || d.node()
                        .is_some_and(|n| n.chain().iter().any(|l| &l.node_name == name))
            });
            if in_graph || earlier.iter().any(|p| &p.overlay.node_name == name) {
                return Err(CommandError::generic(
                    "New overlay node-name already in use",
                ));
            }
        }
        let format = r.format.as_deref().unwrap_or("qcow2");
        // A second snapshot of the same drive in one transaction goes on top of the first,
        // as in QEMU.
        let (backing, backing_format, size) =
            match earlier.iter().rev().find(|p| Arc::ptr_eq(&p.node, &node)) {
                Some(p) => (
                    p.overlay.filename.to_string_lossy().into_owned(),
                    p.overlay.format(),
                    p.overlay.virtual_size().map_err(generic)?,
                ),
                None => {
                    let top = node.chain()[0].clone();
                    (
                        top.filename.to_string_lossy().into_owned(),
                        top.format(),
                        top.virtual_size().map_err(generic)?,
                    )
                }
            };
        let path = Path::new(&r.snapshot_file);
        if r.mode == NewImageMode::AbsolutePaths {
            if !QEMU_FORMATS.contains(&format) {
                return Err(CommandError::generic(format!(
                    "Unknown file format '{format}'"
                )));
            }
            if format == "raw" {
                return Err(CommandError::generic(
                    "Backing file not supported for file format 'raw'",
                ));
            }
            if format != "qcow2" {
                return Err(CommandError::generic(format!(
                    "vmscope cannot create '{format}' overlays (only qcow2)"
                )));
            }
            // QEMU compares the names as strings, as given.
            if r.snapshot_file == backing {
                return Err(CommandError::generic(
                    "Error: Trying to create an image with the same filename as the backing file",
                ));
            }
            crate::block::create_overlay(path, &backing, backing_format, size).map_err(
                |e| match e {
                    BlockError::Open { path, source } => CommandError::generic(format!(
                        "Could not create '{}': {}",
                        path.display(),
                        describe_io(&source)
                    )),
                    other => generic(other),
                },
            )?;
            // QEMU prints this on its standard output when it creates the overlay.
            println!(
                "Formatting '{}', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size={size} backing_file={backing} backing_fmt={} lazy_refcounts=off refcount_bits=16",
                r.snapshot_file,
                backing_format.name()
            );
        }
        // QEMU checks the new node name when it opens the overlay, after creating it.
        if let Some(name) = &r.snapshot_node_name {
            if !super::id_wellformed(name) {
                return Err(CommandError::generic(format!(
                    "Invalid node-name: '{name}'"
                )));
            }
        }
        let overlay_format = match format {
            "qcow2" => ImageFormat::Qcow2,
            "raw" => {
                return Err(CommandError::generic(
                    "The overlay does not support backing images",
                ))
            }
            other => {
                return Err(CommandError::generic(format!(
                    "vmscope cannot open '{other}' overlays (only qcow2)"
                )))
            }
        };
        let opts = OpenOptions {
            cache: node.cache_mode(),
            no_backing: true,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        let (mut overlay, _) = crate::block::open::open_layer(
            path,
            Some(overlay_format),
            node.is_read_only(),
            &opts,
            node.metadata_cache(),
            &Qcow2CacheOptions::default(),
            &mut warnings,
        )
        .map_err(generic)?;
        if let Some(name) = &r.snapshot_node_name {
            overlay.node_name = name.clone();
        }
        Ok(Prepared { node, overlay })
    }
}
