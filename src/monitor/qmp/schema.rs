//! `query-qmp-schema`: QEMU 7.2's introspection data (`SchemaInfo` entries) for exactly
//! the commands vmscope implements and the events it can send, plus every type they use.
//!
//! `schema_7_2.json` holds QEMU 7.2's entries for every command and event of the monitor
//! issue, with QEMU's masked type names (`"0"`, `"[190]"`, ...), extracted from QEMU's
//! own reply by `scripts/qmp-schema-subset.py`. At run time the reply keeps the commands
//! of the dispatch table, the events that can happen, and the closure of their types, so
//! a client never learns of a command that would answer `CommandNotFound`.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::Value;

use super::qobject::{QDict, QObject};

static SCHEMA_JSON: &str = include_str!("schema_7_2.json");

/// Events vmscope sends, each with the command whose presence makes it possible (`None`:
/// always possible, e.g. `STOP` or a guest-initiated `SHUTDOWN`).
static EVENTS: &[(&str, Option<&str>)] = &[
    ("SHUTDOWN", None),
    ("RESET", None),
    ("STOP", None),
    ("RESUME", None),
    ("POWERDOWN", Some("system_powerdown")),
    ("JOB_STATUS_CHANGE", Some("block-job-cancel")),
    ("BLOCK_JOB_COMPLETED", Some("block-job-cancel")),
    ("BLOCK_JOB_CANCELLED", Some("block-job-cancel")),
    ("BLOCK_JOB_ERROR", Some("block-job-cancel")),
    ("BLOCK_JOB_READY", Some("block-job-cancel")),
    ("BLOCK_JOB_PENDING", Some("block-job-cancel")),
];

/// The order in which QEMU's generated introspection literal inserts each key (it decides
/// the printed order where two keys share a QDict bucket): an entity's type-specific keys,
/// then `name`, `meta-type`, `features`; a member's `name`, `type`, `default`, `features`;
/// a variant's `case`, `type`.
const KEY_INSERTION_ORDER: &[&str] = &[
    "arg-type",
    "ret-type",
    "allow-oob",
    "members",
    "tag",
    "variants",
    "values",
    "element-type",
    "json-type",
    "case",
    "name",
    "meta-type",
    "type",
    "default",
    "features",
];

fn entries() -> Option<&'static [Value]> {
    static ENTRIES: OnceLock<Option<Vec<Value>>> = OnceLock::new();
    ENTRIES
        .get_or_init(|| match serde_json::from_str(SCHEMA_JSON) {
            Ok(Value::Array(entries)) => Some(entries),
            _ => None,
        })
        .as_deref()
}

/// The type names one entry refers to.
fn references(entry: &Value) -> Vec<&str> {
    let mut names = Vec::new();
    for key in ["arg-type", "ret-type", "element-type"] {
        if let Some(Value::String(name)) = entry.get(key) {
            names.push(name.as_str());
        }
    }
    for list in ["members", "variants"] {
        if let Some(Value::Array(items)) = entry.get(list) {
            names.extend(
                items
                    .iter()
                    .filter_map(|item| item.get("type").and_then(Value::as_str)),
            );
        }
    }
    names
}

fn name_of(entry: &Value) -> &str {
    entry.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The names of the entries `query-qmp-schema` reports when `commands` are implemented.
fn reachable(entries: &[Value], commands: &[&str]) -> HashSet<String> {
    let by_name: std::collections::HashMap<&str, &Value> =
        entries.iter().map(|e| (name_of(e), e)).collect();
    let mut pending: Vec<&str> = commands.to_vec();
    pending.extend(
        EVENTS
            .iter()
            .filter(|(_, needs)| needs.is_none_or(|command| commands.contains(&command)))
            .map(|(event, _)| *event),
    );
    let mut seen = HashSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.to_string()) {
            continue;
        }
        if let Some(entry) = by_name.get(name) {
            pending.extend(references(entry));
        }
    }
    seen
}

fn to_qobject(value: &Value) -> QObject {
    match value {
        Value::Null => QObject::Null,
        Value::Bool(b) => QObject::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => QObject::Int(i),
            (None, Some(u)) => QObject::Uint(u),
            _ => QObject::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => QObject::String(s.clone()),
        Value::Array(items) => QObject::List(items.iter().map(to_qobject).collect()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|key| {
                KEY_INSERTION_ORDER
                    .iter()
                    .position(|k| k == key)
                    .unwrap_or(KEY_INSERTION_ORDER.len())
            });
            let mut dict = QDict::new();
            for key in keys {
                dict.put(key, to_qobject(&map[key.as_str()]));
            }
            QObject::Dict(dict)
        }
    }
}

/// The `query-qmp-schema` reply for a monitor implementing `commands`; `None` only if the
/// built-in data were unreadable (a unit test reads it).
pub(crate) fn query_qmp_schema(commands: &[&str]) -> Option<QObject> {
    let entries = entries()?;
    let keep = reachable(entries, commands);
    Some(QObject::List(
        entries
            .iter()
            .filter(|entry| keep.contains(name_of(entry)))
            .map(to_qobject)
            .collect(),
    ))
}

/// Whether the built-in data describe `command`.
#[cfg(test)]
pub(crate) fn describes_command(command: &str) -> bool {
    entries().is_some_and(|entries| {
        entries.iter().any(|e| {
            name_of(e) == command && e.get("meta-type").and_then(Value::as_str) == Some("command")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_parse_and_every_reference_resolves() {
        let entries = entries().expect("schema_7_2.json parses");
        let names: HashSet<&str> = entries.iter().map(name_of).collect();
        for entry in entries {
            for reference in references(entry) {
                assert!(
                    names.contains(reference),
                    "{} -> {reference}",
                    name_of(entry)
                );
            }
        }
    }

    #[test]
    fn only_implemented_commands_and_their_events_are_listed() {
        let Some(QObject::List(list)) = query_qmp_schema(&["query-status", "stop"]) else {
            panic!("schema");
        };
        let names: Vec<String> = list
            .iter()
            .filter_map(|e| match e {
                QObject::Dict(d) => match (d.get("name"), d.get("meta-type")) {
                    (Some(QObject::String(n)), Some(QObject::String(m)))
                        if m == "command" || m == "event" =>
                    {
                        Some(n.clone())
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "RESET",
                "RESUME",
                "SHUTDOWN",
                "STOP",
                "query-status",
                "stop"
            ]
        );
    }
}
