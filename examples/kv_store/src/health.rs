//! Whether this node takes part, and if not, why: a failed store, a state it cannot catch up
//! with, or a replica whose state differs from the others'. A fault is said in `GET /health`
//! (`503` with the cause), `GET /status` and the metrics; the first fault is kept (the later
//! ones follow from it). A fault that a restart can mend (the store, the catch-up) also ends
//! the process after a grace period with [`EXIT_FAULT`], for a supervisor to restart it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::sync::watch;

/// The exit code of a node that stopped after a fault a restart can mend.
pub const EXIT_FAULT: i32 = 75;
/// The exit code of a node that refused to start on a corrupt or foreign data directory
/// (restarting it changes nothing: see docs/storage.md for the repair).
pub const EXIT_CORRUPT: i32 = 76;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The log's or the state store's storage failed: the node stopped taking part.
    Storage,
    /// The node's log starts after entries it never applied, and no other node could send
    /// the state.
    CannotCatchUp,
    /// This node's state differs from another node's at the same index.
    Divergence,
}

impl FaultKind {
    /// Whether a restart of the process can mend it.
    pub fn restart_mends(self) -> bool {
        !matches!(self, FaultKind::Divergence)
    }
}

/// A fault, as `/health` and `/status` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub cause: String,
    /// When it happened (milliseconds since the Unix epoch).
    pub since_ms: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    kind: &'static str,
}

impl FaultKind {
    fn label(self) -> &'static str {
        match self {
            FaultKind::Storage => "storage",
            FaultKind::CannotCatchUp => "cannot_catch_up",
            FaultKind::Divergence => "divergence",
        }
    }
}

/// The node's health, shared by the parts that can fail and the parts that report.
pub struct Health {
    fault: Mutex<Option<Fault>>,
    changed: watch::Sender<Option<Fault>>,
    gauge: Family<FaultLabels, Gauge>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            fault: Mutex::new(None),
            changed: watch::channel(None).0,
            gauge: Family::default(),
        }
    }
}

impl Health {
    /// Adds `kv_store_fault{kind}` to `registry`: 1 while this node has that fault.
    pub fn register_prometheus(&self, registry: &mut Registry) {
        for kind in [
            FaultKind::Storage,
            FaultKind::CannotCatchUp,
            FaultKind::Divergence,
        ] {
            self.gauge
                .get_or_create(&FaultLabels { kind: kind.label() })
                .set(0);
        }
        registry.register(
            "kv_store_fault",
            "1 while this node has a fault of this kind (it stopped taking part, or its state differs)",
            self.gauge.clone(),
        );
    }

    /// Records a fault (the first one is kept) and logs it.
    pub fn fail(&self, kind: FaultKind, cause: impl Into<String>) {
        let cause = cause.into();
        tracing::error!(?kind, "this node stopped taking part: {cause}");
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        if fault.is_some() {
            return;
        }
        let since_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        *fault = Some(Fault {
            kind,
            cause,
            since_ms,
        });
        self.gauge
            .get_or_create(&FaultLabels { kind: kind.label() })
            .set(1);
        self.changed.send_replace(fault.clone());
    }

    /// The fault, if there is one.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wakes up when a fault is recorded.
    pub fn subscribe(&self) -> watch::Receiver<Option<Fault>> {
        self.changed.subscribe()
    }

    /// `GET /health`'s answer: 200 and `ok`, or 503 and the fault.
    pub fn answer(&self, auth_set_up: bool) -> (u16, serde_json::Value) {
        match self.fault() {
            None => (
                200,
                serde_json::json!({ "status": "ok", "auth_set_up": auth_set_up }),
            ),
            Some(fault) => (
                503,
                serde_json::json!({ "status": "failed", "fault": fault, "auth_set_up": auth_set_up }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_503_with_the_first_fault() {
        let health = Health::default();
        assert_eq!(health.answer(true).0, 200);
        let mut changes = health.subscribe();
        health.fail(FaultKind::Storage, "journal: No space left on device");
        health.fail(FaultKind::CannotCatchUp, "a consequence");
        let (code, body) = health.answer(true);
        assert_eq!(code, 503);
        assert_eq!(body["fault"]["kind"], "storage");
        assert_eq!(body["fault"]["cause"], "journal: No space left on device");
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            changes.borrow_and_update().as_ref().map(|f| f.kind),
            Some(FaultKind::Storage)
        );
        assert!(FaultKind::Storage.restart_mends() && !FaultKind::Divergence.restart_mends());
    }
}
