//! QMP events: built once with QEMU's shape and timestamp, broadcast to every QMP monitor
//! that has completed capabilities negotiation.

use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::qobject::{QDict, QObject};

/// Something that delivers events to a client (a QMP monitor).
pub trait EventListener: Send + Sync {
    /// `event` is the complete event object; the listener drops it when its client has not
    /// negotiated capabilities.
    fn deliver(&self, event: &QObject);
}

/// The event broadcaster shared by the command layer and the QMP monitors.
#[derive(Default)]
pub struct MonitorEvents {
    listeners: Mutex<Vec<Weak<dyn EventListener>>>,
}

impl MonitorEvents {
    pub fn new() -> MonitorEvents {
        MonitorEvents::default()
    }

    /// Registers a listener for as long as it lives.
    pub fn subscribe(&self, listener: Weak<dyn EventListener>) {
        self.lock().push(listener);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn EventListener>>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Emits event `name` with `data` (omitted when `None`, as QEMU omits empty data).
    pub fn emit(&self, name: &str, data: Option<QDict>) {
        let event = build_event(name, data, SystemTime::now());
        let listeners: Vec<Arc<dyn EventListener>> = {
            let mut list = self.lock();
            list.retain(|l| l.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        // Without the lock: a listener may emit or subscribe while delivering.
        for listener in listeners {
            listener.deliver(&event);
        }
    }

    /// `SHUTDOWN` (`guest`: the guest asked for it; `reason`: QEMU's ShutdownCause name).
    pub fn shutdown(&self, guest: bool, reason: &str) {
        self.emit(
            "SHUTDOWN",
            Some(QDict::new().with("guest", guest).with("reason", reason)),
        );
    }

    /// `RESET` (same data as `SHUTDOWN`).
    pub fn reset(&self, guest: bool, reason: &str) {
        self.emit(
            "RESET",
            Some(QDict::new().with("guest", guest).with("reason", reason)),
        );
    }

    /// `POWERDOWN` (a power-button press was sent to the guest).
    pub fn powerdown(&self) {
        self.emit("POWERDOWN", None);
    }
}

/// `{"timestamp": {"seconds": S, "microseconds": US}, "event": NAME, "data": …}` with
/// QEMU's insertion order (event, timestamp, data); both timestamp members are -1 when the
/// host clock is before the epoch, as QEMU does when it cannot read the time.
pub fn build_event(name: &str, data: Option<QDict>, now: SystemTime) -> QObject {
    let (seconds, microseconds) = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_micros())),
        Err(_) => (-1, -1),
    };
    let mut event = QDict::new().with("event", name).with(
        "timestamp",
        QDict::new()
            .with("seconds", seconds)
            .with("microseconds", microseconds),
    );
    if let Some(data) = data {
        event.put("data", data);
    }
    QObject::Dict(event)
}

#[cfg(test)]
mod tests {
    use super::super::json_writer::to_json;
    use super::*;
    use std::time::Duration;

    struct Collect(Mutex<Vec<String>>);

    impl EventListener for Collect {
        fn deliver(&self, event: &QObject) {
            self.0.lock().unwrap().push(to_json(event, false));
        }
    }

    #[test]
    fn event_shape_is_qemus() {
        let at = UNIX_EPOCH + Duration::new(1795316083, 736_322_999);
        assert_eq!(
            to_json(&build_event("STOP", None, at), false),
            r#"{"timestamp": {"seconds": 1795316083, "microseconds": 736322}, "event": "STOP"}"#
        );
        let data = QDict::new()
            .with("guest", false)
            .with("reason", "host-qmp-quit");
        assert_eq!(
            to_json(&build_event("SHUTDOWN", Some(data), at), false),
            r#"{"timestamp": {"seconds": 1795316083, "microseconds": 736322}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#
        );
    }

    #[test]
    fn broadcast_reaches_live_listeners_only() {
        let events = MonitorEvents::new();
        let a = Arc::new(Collect(Mutex::new(Vec::new())));
        let b = Arc::new(Collect(Mutex::new(Vec::new())));
        let a_dyn: Arc<dyn EventListener> = a.clone();
        let b_dyn: Arc<dyn EventListener> = b.clone();
        events.subscribe(Arc::downgrade(&a_dyn));
        events.subscribe(Arc::downgrade(&b_dyn));
        drop(b_dyn);
        drop(b);
        events.powerdown();
        let got = a.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with(r#""event": "POWERDOWN"}"#), "{got:?}");
        assert_eq!(events.lock().len(), 1);
    }
}
