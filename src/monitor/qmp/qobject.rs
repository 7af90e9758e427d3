//! QEMU's JSON value model (QObject) and the order in which QEMU's dictionaries (QDict)
//! list their keys, which decides the byte order of every object QEMU prints.

/// A JSON value as QEMU holds it: integers keep their signed/unsigned/double nature, so
/// they print back the way QEMU prints them.
#[derive(Clone, Debug, PartialEq)]
pub enum QObject {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    List(Vec<QObject>),
    Dict(QDict),
}

/// A JSON object. Keys are kept in insertion order, which (with the key hash) decides the
/// order QEMU prints them in: see [`qdict_order`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QDict {
    entries: Vec<(String, QObject)>,
}

impl QDict {
    pub fn new() -> QDict {
        QDict::default()
    }

    /// Inserts or replaces `key` (a replaced key keeps its place, as in QEMU).
    pub fn put(&mut self, key: &str, value: impl Into<QObject>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// Builder form of [`QDict::put`].
    pub fn with(mut self, key: &str, value: impl Into<QObject>) -> QDict {
        self.put(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&QObject> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(String, QObject)] {
        &self.entries
    }

    /// The entries in the order QEMU iterates (and prints) them.
    pub fn iter_qemu_order(&self) -> impl Iterator<Item = &(String, QObject)> {
        let keys: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        qdict_order(&keys)
            .into_iter()
            .map(move |index| &self.entries[index])
    }
}

impl From<bool> for QObject {
    fn from(v: bool) -> QObject {
        QObject::Bool(v)
    }
}

impl From<i64> for QObject {
    fn from(v: i64) -> QObject {
        QObject::Int(v)
    }
}

impl From<u32> for QObject {
    fn from(v: u32) -> QObject {
        QObject::Int(v.into())
    }
}

impl From<&str> for QObject {
    fn from(v: &str) -> QObject {
        QObject::String(v.to_string())
    }
}

impl From<String> for QObject {
    fn from(v: String) -> QObject {
        QObject::String(v)
    }
}

impl From<QDict> for QObject {
    fn from(v: QDict) -> QObject {
        QObject::Dict(v)
    }
}

impl From<Vec<QObject>> for QObject {
    fn from(v: Vec<QObject>) -> QObject {
        QObject::List(v)
    }
}

/// Number of hash buckets of a QDict.
const QDICT_BUCKETS: u32 = 512;

/// QDict's key hash (the tdb hash): seeded with the key length, each byte added shifted by
/// `i * 5 % 24`, then a linear congruential step; all in wrapping 32-bit arithmetic.
pub fn qdict_hash(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let mut value = 0x238F_13AFu32.wrapping_mul(bytes.len() as u32);
    for (i, &b) in bytes.iter().enumerate() {
        value = value.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

/// The order QEMU prints the keys of a dictionary whose keys were inserted in the order
/// given: buckets ascending, and inside a bucket the newest insertion first. Returns
/// indices into `keys_in_insertion_order`.
///
/// This is the single place vmscope decides key order; every object it prints goes
/// through it.
pub fn qdict_order(keys_in_insertion_order: &[&str]) -> Vec<usize> {
    let mut order: Vec<(u32, std::cmp::Reverse<usize>)> = keys_in_insertion_order
        .iter()
        .enumerate()
        .map(|(i, k)| (qdict_hash(k) % QDICT_BUCKETS, std::cmp::Reverse(i)))
        .collect();
    order.sort();
    order.into_iter().map(|(_, i)| i.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(keys: &[&str]) -> Vec<String> {
        qdict_order(keys)
            .into_iter()
            .map(|i| keys[i].to_string())
            .collect()
    }

    /// Key orders seen in QEMU 7.2 transcripts, given the insertion order QEMU uses.
    #[test]
    fn orders_match_qemu_7_2_transcripts() {
        assert_eq!(ordered(&["QMP"]), ["QMP"]);
        assert_eq!(
            ordered(&["version", "capabilities"]),
            ["version", "capabilities"]
        );
        assert_eq!(ordered(&["qemu", "package"]), ["qemu", "package"]);
        assert_eq!(
            ordered(&["major", "minor", "micro"]),
            ["micro", "minor", "major"]
        );
        assert_eq!(ordered(&["return", "id"]), ["return", "id"]);
        assert_eq!(ordered(&["error", "id"]), ["id", "error"]);
        assert_eq!(ordered(&["class", "desc"]), ["class", "desc"]);
        assert_eq!(
            ordered(&["event", "timestamp", "data"]),
            ["timestamp", "event", "data"]
        );
        assert_eq!(
            ordered(&["seconds", "microseconds"]),
            ["seconds", "microseconds"]
        );
        // `status` and `singlestep` share a bucket: the later insertion comes first.
        assert_eq!(
            ordered(&["running", "singlestep", "status"]),
            ["status", "singlestep", "running"]
        );
        assert_eq!(ordered(&["guest", "reason"]), ["guest", "reason"]);
        assert_eq!(ordered(&["enabled", "present"]), ["enabled", "present"]);
        assert_eq!(
            ordered(&["cpu-index", "qom-path", "thread-id", "props", "target"]),
            ["thread-id", "props", "qom-path", "cpu-index", "target"]
        );
        assert_eq!(
            ordered(&["socket-id", "core-id", "thread-id"]),
            ["core-id", "thread-id", "socket-id"]
        );
        assert_eq!(ordered(&["b", "a"]), ["a", "b"]);
        assert_eq!(
            ordered(&["status", "id"]),
            ["status", "id"],
            "JOB_STATUS_CHANGE data"
        );
    }

    #[test]
    fn put_replaces_in_place() {
        let mut d = QDict::new().with("a", 1i64).with("b", 2i64);
        d.put("a", 3i64);
        assert_eq!(d.entries()[0], ("a".to_string(), QObject::Int(3)));
        assert_eq!(d.len(), 2);
    }
}
