//! The `logging` feature: protocol events go through `tracing`, each tagged with the node id.
//!
//! One test function runs both scenarios in turn, each wholly inside its own scoped subscriber:
//! tracing caches per call site whether anybody listens, so two tests with subscribers on
//! different threads (and simulator code running outside one) could hide events from each
//! other. `Interest::sometimes` makes every event ask the subscriber again.

mod common;
use common::*;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
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
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
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
fn protocol_events_are_logged() {
    leader_changes_are_logged_with_the_node_id();
    a_dropped_message_is_logged_once_with_its_reason();
}

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

fn a_dropped_message_is_logged_once_with_its_reason() {
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::sequence_paxos::{Decide, PaxosMessage, PaxosMsg};
    use omnipaxos::messages::Message;
    use omnipaxos::util::SequenceNumber;
    let collector = Collector::default();
    let mut sim = tracing::subscriber::with_default(collector.clone(), || {
        let mut sim = cluster(3, 2);
        sim.run_until_stable_leader(50).unwrap();
        sim
    });
    let leader = sim.stable_leader().unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    let stale = Message::SequencePaxos(PaxosMessage {
        from: leader,
        to: follower,
        msg: PaxosMsg::Decide(Decide {
            n: sim.server(follower).unwrap().get_promise(),
            seq_num: SequenceNumber {
                session: 0,
                counter: 0,
            },
            decided_idx: 0,
        }),
    });
    let forged = Message::SequencePaxos(PaxosMessage {
        from: leader,
        to: follower,
        msg: PaxosMsg::Decide(Decide {
            n: Ballot::with(1, 1, 0, 99),
            seq_num: SequenceNumber::default(),
            decided_idx: 5,
        }),
    });
    collector.0.lock().unwrap().clear();
    tracing::subscriber::with_default(collector.clone(), || {
        sim.inject(stale);
        sim.inject(forged);
    });
    let lines = collector.0.lock().unwrap();
    let dropped: Vec<&String> = lines.iter().filter(|l| l.contains("dropped")).collect();
    assert_eq!(dropped.len(), 2, "one line per dropped message: {lines:#?}");
    assert!(dropped[0].contains("a Decide") && dropped[0].contains("old message of the stream"));
    assert!(dropped[1].contains("a Decide") && dropped[1].contains("names another server"));
    assert!(dropped
        .iter()
        .all(|l| l.starts_with(&format!("pid=Some({follower})"))));
}
