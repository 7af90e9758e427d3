//! What the monitor's `query-chardev` / `info chardev` report about the chardevs: each
//! one's label, QEMU's `filename` text for its backend and connection, and whether a front
//! end has it open. The loop thread keeps it up to date; monitors read it through a
//! [`ChardevInfoSource`] from any thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One chardev as QEMU 7.2's `ChardevInfo` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChardevInfo {
    pub label: String,
    /// QEMU's description: `stdio`, `file`, `pipe`, `null`, `mux`,
    /// `unix:/tmp/s,server=on`, `disconnected:tcp:127.0.0.1:4444,server=on`,
    /// `tcp:127.0.0.1:4444,server=on <-> 127.0.0.1:51234`, ...
    pub filename: String,
    /// A front end (device or monitor) is attached and has opened it.
    pub frontend_open: bool,
}

/// The state of one open chardev that the monitor may look at.
pub(crate) struct ChardevStatus {
    id: String,
    mux: bool,
    filename: Mutex<String>,
    frontends: AtomicUsize,
}

impl ChardevStatus {
    pub(crate) fn new(id: &str, mux: bool, filename: String) -> Arc<ChardevStatus> {
        Arc::new(ChardevStatus {
            id: id.to_string(),
            mux,
            filename: Mutex::new(filename),
            frontends: AtomicUsize::new(0),
        })
    }

    /// The backend's description changed (a peer connected or left).
    pub(crate) fn set_filename(&self, filename: String) {
        *self.filename.lock().unwrap_or_else(|p| p.into_inner()) = filename;
    }

    pub(crate) fn frontend_attached(&self) {
        self.frontends.fetch_add(1, Ordering::SeqCst);
    }

    fn filename(&self) -> String {
        self.filename
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A read-only, thread-safe view of every chardev of the machine (cheap to clone).
#[derive(Clone, Default)]
pub struct ChardevInfoSource {
    list: Arc<Mutex<Vec<Arc<ChardevStatus>>>>,
}

impl ChardevInfoSource {
    pub(crate) fn add(&self, status: Arc<ChardevStatus>) {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(status);
    }

    /// Every chardev as QEMU has it, in creation order. A muxed chardev `ID` is two in
    /// QEMU, created in this order: `ID-base` (the backend, opened by the multiplexer once
    /// it has a front end) and `ID` itself (filename `mux`).
    pub fn list(&self) -> Vec<ChardevInfo> {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for status in list.iter() {
            let open = status.frontends.load(Ordering::SeqCst) > 0;
            if status.mux {
                out.push(ChardevInfo {
                    label: format!("{}-base", status.id),
                    filename: status.filename(),
                    frontend_open: open,
                });
                out.push(ChardevInfo {
                    label: status.id.clone(),
                    filename: "mux".to_string(),
                    frontend_open: open,
                });
            } else {
                out.push(ChardevInfo {
                    label: status.id.clone(),
                    filename: status.filename(),
                    frontend_open: open,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mux_is_listed_as_base_then_mux() {
        let source = ChardevInfoSource::default();
        let plain = ChardevStatus::new("a", false, "null".into());
        let mux = ChardevStatus::new("m", true, "stdio".into());
        source.add(plain.clone());
        source.add(mux.clone());
        mux.frontend_attached();
        plain.set_filename("file".into());
        let info = |label: &str, filename: &str, frontend_open| ChardevInfo {
            label: label.into(),
            filename: filename.into(),
            frontend_open,
        };
        assert_eq!(
            source.list(),
            [
                info("a", "file", false),
                info("m-base", "stdio", true),
                info("m", "mux", true)
            ]
        );
    }
}
