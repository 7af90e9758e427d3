//! QMP front end of the block commands: QAPI-style argument checks (schema order, QEMU's
//! texts, before any side effect) and the JSON replies.

use super::info::{block_info_json, blockstats_json};
use super::jobs::{job_info_json, CommitRequest, StreamRequest};
use super::snapshot::{NewImageMode, SnapshotRequest};
use crate::monitor::commands::{CommandError, MonitorCommands};
use crate::monitor::qmp::{QDict, QObject};

/// The block commands QMP offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockQmp {
    QueryBlock,
    QueryBlockstats,
    QueryBlockJobs,
    BlockdevSnapshotSync,
    Transaction,
    BlockStream,
    BlockCommit,
    BlockJobCancel,
    BlockJobPause,
    BlockJobResume,
    BlockJobComplete,
    BlockJobSetSpeed,
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Enum(&'static [&'static str]),
}

struct P {
    name: &'static str,
    ty: Ty,
    required: bool,
}

const fn req(name: &'static str, ty: Ty) -> P {
    P {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: Ty) -> P {
    P {
        name,
        ty,
        required: false,
    }
}

const ON_ERROR: Ty = Ty::Enum(&["report", "ignore", "enospc", "stop", "auto"]);

const SNAPSHOT_SYNC: &[P] = &[
    opt("device", Ty::Str),
    opt("node-name", Ty::Str),
    req("snapshot-file", Ty::Str),
    opt("snapshot-node-name", Ty::Str),
    opt("format", Ty::Str),
    opt("mode", Ty::Enum(&["existing", "absolute-paths"])),
];

const STREAM: &[P] = &[
    opt("job-id", Ty::Str),
    req("device", Ty::Str),
    opt("base", Ty::Str),
    opt("base-node", Ty::Str),
    opt("backing-file", Ty::Str),
    opt("bottom", Ty::Str),
    opt("speed", Ty::Int),
    opt("on-error", ON_ERROR),
    opt("filter-node-name", Ty::Str),
    opt("auto-finalize", Ty::Bool),
    opt("auto-dismiss", Ty::Bool),
];

const COMMIT: &[P] = &[
    opt("job-id", Ty::Str),
    req("device", Ty::Str),
    opt("base-node", Ty::Str),
    opt("base", Ty::Str),
    opt("top-node", Ty::Str),
    opt("top", Ty::Str),
    opt("backing-file", Ty::Str),
    opt("speed", Ty::Int),
    opt("on-error", ON_ERROR),
    opt("filter-node-name", Ty::Str),
    opt("auto-finalize", Ty::Bool),
    opt("auto-dismiss", Ty::Bool),
];

const DEVICE: &[P] = &[req("device", Ty::Str)];
const CANCEL: &[P] = &[req("device", Ty::Str), opt("force", Ty::Bool)];
const SET_SPEED: &[P] = &[req("device", Ty::Str), req("speed", Ty::Int)];
const QUERY_BLOCKSTATS: &[P] = &[opt("query-nodes", Ty::Bool)];

/// QEMU 7.2's transaction action types.
const ACTION_TYPES: &[&str] = &[
    "abort",
    "block-dirty-bitmap-add",
    "block-dirty-bitmap-remove",
    "block-dirty-bitmap-clear",
    "block-dirty-bitmap-enable",
    "block-dirty-bitmap-disable",
    "block-dirty-bitmap-merge",
    "blockdev-backup",
    "blockdev-snapshot",
    "blockdev-snapshot-internal-sync",
    "blockdev-snapshot-sync",
    "drive-backup",
];

fn full(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// QAPI's input visitor: each member in schema order, then anything unexpected.
fn check(prefix: &str, params: &[P], args: &QDict) -> Result<(), CommandError> {
    for p in params {
        let Some(value) = args.get(p.name) else {
            if p.required {
                return Err(CommandError::generic(format!(
                    "Parameter '{}' is missing",
                    full(prefix, p.name)
                )));
            }
            continue;
        };
        let expected = match (p.ty, value) {
            (Ty::Str, QObject::String(_))
            | (Ty::Int, QObject::Int(_) | QObject::Uint(_))
            | (Ty::Bool, QObject::Bool(_)) => continue,
            (Ty::Enum(values), QObject::String(s)) => {
                if values.contains(&s.as_str()) {
                    continue;
                }
                // QEMU names the bare member here, even inside a list.
                return Err(CommandError::generic(format!(
                    "Parameter '{}' does not accept value '{s}'",
                    p.name
                )));
            }
            (Ty::Str | Ty::Enum(_), _) => "string",
            (Ty::Int, _) => "integer",
            (Ty::Bool, _) => "boolean",
        };
        return Err(CommandError::generic(format!(
            "Invalid parameter type for '{}', expected: {expected}",
            full(prefix, p.name)
        )));
    }
    if let Some((key, _)) = args
        .iter_qemu_order()
        .find(|(key, _)| !params.iter().any(|p| p.name == key))
    {
        return Err(CommandError::generic(format!(
            "Parameter '{}' is unexpected",
            full(prefix, key)
        )));
    }
    Ok(())
}

fn string(args: &QDict, key: &str) -> Option<String> {
    match args.get(key) {
        Some(QObject::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int(args: &QDict, key: &str) -> Option<i64> {
    match args.get(key) {
        Some(QObject::Int(v)) => Some(*v),
        Some(QObject::Uint(v)) => Some(i64::try_from(*v).unwrap_or(i64::MAX)),
        _ => None,
    }
}

fn boolean(args: &QDict, key: &str) -> Option<bool> {
    match args.get(key) {
        Some(QObject::Bool(v)) => Some(*v),
        _ => None,
    }
}

/// Job options vmscope does not implement are refused by name rather than ignored.
fn refuse_job_options(command: &str, args: &QDict) -> Result<(), CommandError> {
    let refuse = |what: &str| {
        Err(CommandError::generic(format!(
            "vmscope does not implement {command} with '{what}'"
        )))
    };
    if string(args, "on-error").is_some_and(|v| v != "report") {
        return refuse("on-error");
    }
    for key in ["filter-node-name", "bottom"] {
        if args.contains_key(key) {
            return refuse(key);
        }
    }
    for key in ["auto-finalize", "auto-dismiss"] {
        if boolean(args, key) == Some(false) {
            return refuse(key);
        }
    }
    Ok(())
}

fn snapshot_request(args: &QDict) -> SnapshotRequest {
    SnapshotRequest {
        device: string(args, "device"),
        node_name: string(args, "node-name"),
        snapshot_file: string(args, "snapshot-file").unwrap_or_default(),
        snapshot_node_name: string(args, "snapshot-node-name"),
        format: string(args, "format"),
        mode: match string(args, "mode").as_deref() {
            Some("existing") => NewImageMode::Existing,
            _ => NewImageMode::AbsolutePaths,
        },
    }
}

fn transaction_requests(args: &QDict) -> Result<Vec<SnapshotRequest>, CommandError> {
    let actions = match args.get("actions") {
        None => return Err(CommandError::generic("Parameter 'actions' is missing")),
        Some(QObject::List(items)) => items,
        Some(_) => {
            return Err(CommandError::generic(
                "Invalid parameter type for 'actions', expected: array",
            ))
        }
    };
    let mut requests = Vec::new();
    let mut unsupported = None;
    for (i, action) in actions.iter().enumerate() {
        let prefix = format!("actions[{i}]");
        let QObject::Dict(action) = action else {
            return Err(CommandError::generic(format!(
                "Invalid parameter type for '{prefix}', expected: object"
            )));
        };
        match action.get("type") {
            None => {
                return Err(CommandError::generic(format!(
                    "Parameter '{prefix}.type' is missing"
                )))
            }
            Some(QObject::String(t)) if ACTION_TYPES.contains(&t.as_str()) => {}
            Some(QObject::String(t)) => {
                return Err(CommandError::generic(format!(
                    "Parameter 'type' does not accept value '{t}'"
                )))
            }
            Some(_) => {
                return Err(CommandError::generic(format!(
                    "Invalid parameter type for '{prefix}.type', expected: string"
                )))
            }
        }
        let kind = string(action, "type").unwrap_or_default();
        let data = match action.get("data") {
            None => {
                return Err(CommandError::generic(format!(
                    "Parameter '{prefix}.data' is missing"
                )))
            }
            Some(QObject::Dict(d)) => d,
            Some(_) => {
                return Err(CommandError::generic(format!(
                    "Invalid parameter type for '{prefix}.data', expected: object"
                )))
            }
        };
        if let Some((key, _)) = action
            .iter_qemu_order()
            .find(|(k, _)| k != "type" && k != "data")
        {
            return Err(CommandError::generic(format!(
                "Parameter '{prefix}.{key}' is unexpected"
            )));
        }
        if kind == "blockdev-snapshot-sync" {
            check(&format!("{prefix}.data"), SNAPSHOT_SYNC, data)?;
            requests.push(snapshot_request(data));
        } else if unsupported.is_none() {
            unsupported = Some(kind);
        }
    }
    if let Some(kind) = unsupported {
        return Err(CommandError::generic(format!(
            "vmscope does not implement transaction action '{kind}'"
        )));
    }
    Ok(requests)
}

fn unit(r: Result<(), CommandError>) -> Result<QObject, CommandError> {
    r.map(|()| QObject::Dict(QDict::new()))
}

/// Runs a block command with its (unchecked) arguments.
pub(crate) fn execute(
    commands: &MonitorCommands,
    command: BlockQmp,
    args: &QDict,
) -> Result<QObject, CommandError> {
    match command {
        BlockQmp::QueryBlock => {
            check("", &[], args)?;
            Ok(QObject::List(
                commands.query_block().iter().map(block_info_json).collect(),
            ))
        }
        BlockQmp::QueryBlockstats => {
            check("", QUERY_BLOCKSTATS, args)?;
            if boolean(args, "query-nodes") == Some(true) {
                return Err(CommandError::generic(
                    "vmscope does not implement query-blockstats with 'query-nodes'",
                ));
            }
            Ok(QObject::List(
                commands
                    .drives()
                    .iter()
                    .map(|d| blockstats_json(d))
                    .collect(),
            ))
        }
        BlockQmp::QueryBlockJobs => {
            check("", &[], args)?;
            Ok(QObject::List(
                commands
                    .query_block_jobs()
                    .iter()
                    .map(|j| QObject::Dict(job_info_json(j)))
                    .collect(),
            ))
        }
        BlockQmp::BlockdevSnapshotSync => {
            check("", SNAPSHOT_SYNC, args)?;
            unit(commands.blockdev_snapshot_sync(&snapshot_request(args)))
        }
        BlockQmp::Transaction => {
            for (key, _) in args.iter_qemu_order() {
                if key != "actions" && key != "properties" {
                    return Err(CommandError::generic(format!(
                        "Parameter '{key}' is unexpected"
                    )));
                }
            }
            if args.contains_key("properties") {
                return Err(CommandError::generic(
                    "vmscope does not implement transaction 'properties'",
                ));
            }
            let requests = transaction_requests(args)?;
            unit(commands.snapshot_transaction(&requests))
        }
        BlockQmp::BlockStream => {
            check("", STREAM, args)?;
            refuse_job_options("block-stream", args)?;
            unit(commands.block_stream(&StreamRequest {
                job_id: string(args, "job-id"),
                device: string(args, "device").unwrap_or_default(),
                base: string(args, "base"),
                base_node: string(args, "base-node"),
                backing_file: string(args, "backing-file"),
                speed: int(args, "speed"),
            }))
        }
        BlockQmp::BlockCommit => {
            check("", COMMIT, args)?;
            refuse_job_options("block-commit", args)?;
            unit(commands.block_commit(&CommitRequest {
                job_id: string(args, "job-id"),
                device: string(args, "device").unwrap_or_default(),
                base_node: string(args, "base-node"),
                base: string(args, "base"),
                top_node: string(args, "top-node"),
                top: string(args, "top"),
                backing_file: string(args, "backing-file"),
                speed: int(args, "speed"),
            }))
        }
        BlockQmp::BlockJobCancel => {
            check("", CANCEL, args)?;
            let device = string(args, "device").unwrap_or_default();
            unit(commands.block_job_cancel(&device, boolean(args, "force").unwrap_or(false)))
        }
        BlockQmp::BlockJobPause | BlockQmp::BlockJobResume | BlockQmp::BlockJobComplete => {
            check("", DEVICE, args)?;
            let device = string(args, "device").unwrap_or_default();
            unit(match command {
                BlockQmp::BlockJobPause => commands.block_job_pause(&device),
                BlockQmp::BlockJobResume => commands.block_job_resume(&device),
                _ => commands.block_job_complete(&device),
            })
        }
        BlockQmp::BlockJobSetSpeed => {
            check("", SET_SPEED, args)?;
            let device = string(args, "device").unwrap_or_default();
            unit(commands.block_job_set_speed(&device, int(args, "speed").unwrap_or(0)))
        }
    }
}
