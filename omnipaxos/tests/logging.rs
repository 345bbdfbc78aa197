//! The `logging` feature: protocol events go through `tracing`, each tagged with the node id.

mod common;
use common::*;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Collects every event as "pid=<id> <message>".
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<String>>>);

struct Fields {
    pid: Option<u64>,
    message: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "pid" {
            self.pid = Some(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields {
            pid: None,
            message: String::new(),
        };
        event.record(&mut fields);
        let line = format!("pid={:?} {}", fields.pid, fields.message);
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn leader_changes_are_logged_with_the_node_id() {
    let collector = Collector::default();
    tracing::subscriber::with_default(collector.clone(), || {
        let mut sim = cluster(3, 1);
        sim.run_until_stable_leader(50).unwrap();
    });
    let lines = collector.0.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pid=Some(3)") && l.contains("leading with ballot")),
        "events: {lines:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.starts_with("pid=None")),
        "every event has a pid"
    );
}
