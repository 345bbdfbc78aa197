//! The reconfiguration rules, one state, one input, the exact decision and effects out.

use super::reconfigure::{NextStep, Reconfigurer, ASK_HANDOVER_EVERY, OPEN_RETRY_EVERY};
use crate::status::OmniPaxosEvent;
use crate::wire::{NodeId, WireMessage};
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::StopSign;
use omnipaxos::ClusterConfig;

const ME: NodeId = 1;

fn config(id: u32, nodes: Vec<NodeId>) -> ClusterConfig {
    ClusterConfig {
        configuration_id: id,
        nodes,
        ..Default::default()
    }
}

/// The handover of configuration 1, which ends into `next`.
fn handover_into(next: ClusterConfig) -> Handover<u64> {
    Handover {
        stopsign: StopSign {
            next_config: next,
            metadata: None,
        },
        compacted_idx: 0,
        snapshot: None,
        entries: vec![10, 20],
    }
}

fn events(r: &mut Reconfigurer<u64>) -> Vec<String> {
    r.take_events().iter().map(|e| format!("{e:?}")).collect()
}

fn reconfigured(stop_sign_idx: usize) -> String {
    format!("{:?}", OmniPaxosEvent::Reconfigured { stop_sign_idx })
}

/// What the engine sends, as (receiver, kind, the configuration it is about).
fn sent(r: &mut Reconfigurer<u64>) -> Vec<(NodeId, &'static str, u32)> {
    r.take_outgoing()
        .into_iter()
        .map(|(to, msg)| match msg {
            WireMessage::HandoverRequest { next_config_id } => (to, "ask", next_config_id),
            WireMessage::Handover { config_id, .. } => (to, "handover", config_id),
            _ => (to, "other", 0),
        })
        .collect()
}

#[test]
fn a_node_in_the_next_configuration_opens_it_and_keeps_the_handover() {
    let next = config(2, vec![1, 2, 4]);
    let mut r = Reconfigurer::following(Vec::new(), None);
    let step = r.ended(0, ME, 1, 7, &next, || Some(handover_into(next.clone())));
    assert_eq!(step, NextStep::Open(next));
    r.opened();
    assert_eq!(events(&mut r), [reconfigured(7)]);
    assert_eq!(r.handover().map(|(id, _)| *id), Some(1));
    assert!(!r.retired());
}

#[test]
fn a_node_left_out_of_the_next_configuration_retires() {
    let next = config(2, vec![2, 3, 4]);
    let mut r = Reconfigurer::following(Vec::new(), None);
    let step = r.ended(0, ME, 1, 7, &next, || Some(handover_into(next.clone())));
    assert_eq!(step, NextStep::Retire);
    assert!(r.retired());
    assert_eq!(events(&mut r), [reconfigured(7)]);
    // It stays retired: the StopSign seen again changes nothing.
    let again = r.ended(10, ME, 1, 7, &next, || None);
    assert_eq!(again, NextStep::Stay);
    assert!(events(&mut r).is_empty());
}

#[test]
fn a_node_that_does_not_follow_reconfigurations_retires_even_if_named() {
    let next = config(2, vec![1, 2, 3]);
    let mut r: Reconfigurer<u64> = Reconfigurer::fixed();
    assert_eq!(r.ended(0, ME, 1, 3, &next, || None), NextStep::Retire);
    assert!(r.retired());
}

#[test]
fn a_failed_open_is_reported_once_and_tried_again_when_due() {
    let next = config(2, vec![1, 2, 3]);
    let mut r = Reconfigurer::following(Vec::new(), None);
    let mut asked_for_handover = 0;
    let mut handover = || {
        asked_for_handover += 1;
        Some(handover_into(next.clone()))
    };
    assert_eq!(
        r.ended(0, ME, 1, 5, &next, &mut handover),
        NextStep::Open(next.clone())
    );
    r.open_failed(0, "disk gone".into());
    let failed = format!(
        "{:?}",
        OmniPaxosEvent::StorageFailed {
            error: "disk gone".into()
        }
    );
    assert_eq!(events(&mut r), [reconfigured(5), failed]);
    assert!(!r.retired(), "a failed open never retires the node");
    // The ended configuration's handover is served meanwhile.
    r.serve(4, 2);
    assert_eq!(sent(&mut r), [(4, "handover", 1)]);
    // Not before the retry is due.
    let early = r.ended(OPEN_RETRY_EVERY - 1, ME, 1, 5, &next, &mut handover);
    assert_eq!(early, NextStep::Stay);
    // Then again, without a second event for the same end or the same failure.
    let due = r.ended(OPEN_RETRY_EVERY, ME, 1, 5, &next, &mut handover);
    assert_eq!(due, NextStep::Open(next.clone()));
    r.open_failed(OPEN_RETRY_EVERY, "disk gone".into());
    assert!(events(&mut r).is_empty());
    let later = r.ended(2 * OPEN_RETRY_EVERY, ME, 1, 5, &next, &mut handover);
    assert_eq!(later, NextStep::Open(next.clone()));
    r.opened();
    assert_eq!(asked_for_handover, 1, "the handover is built once");
}

#[test]
fn a_joiner_asks_every_node_of_the_ended_configuration_until_it_has_the_handover() {
    let mut r = Reconfigurer::following(vec![2, 3], None);
    assert!(r.awaits_handover());
    r.tick(0, 2);
    assert_eq!(sent(&mut r), [(2, "ask", 2), (3, "ask", 2)]);
    r.tick(ASK_HANDOVER_EVERY - 1, 2);
    assert!(sent(&mut r).is_empty(), "not before the next ask is due");
    r.tick(ASK_HANDOVER_EVERY, 2);
    assert_eq!(sent(&mut r), [(2, "ask", 2), (3, "ask", 2)]);
    let handover = handover_into(config(2, vec![2, 3, 4]));
    assert!(r.wants(2, &handover));
    r.joined(1, handover);
    assert!(!r.awaits_handover());
    assert_eq!(
        r.joined_handover().map(|(id, h)| (id, h.entries.len())),
        Some((1, 2))
    );
    r.tick(10 * ASK_HANDOVER_EVERY, 2);
    assert!(sent(&mut r).is_empty(), "no asking once joined");
}

#[test]
fn a_joiner_takes_only_a_handover_into_its_configuration_and_only_one() {
    let mut r = Reconfigurer::following(vec![2, 3], None);
    let wrong = handover_into(config(3, vec![2, 3, 4]));
    assert!(!r.wants(2, &wrong), "a handover into another configuration");
    let right = handover_into(config(2, vec![2, 3, 4]));
    assert!(r.wants(2, &right));
    r.joined(1, right.clone());
    assert!(!r.wants(2, &right), "a second copy is not taken");
}

#[test]
fn a_joiner_restarted_with_its_saved_handover_does_not_ask() {
    let saved = handover_into(config(2, vec![2, 3, 4]));
    let mut r = Reconfigurer::following(vec![2, 3], Some((1, saved)));
    assert!(!r.awaits_handover());
    r.tick(0, 2);
    assert!(sent(&mut r).is_empty());
}

#[test]
fn a_handover_is_served_only_to_a_joiner_of_the_configuration_it_leads_to() {
    let next = config(2, vec![1, 2, 4]);
    let mut r = Reconfigurer::following(Vec::new(), None);
    r.serve(4, 2);
    assert!(sent(&mut r).is_empty(), "nothing to serve before the end");
    r.ended(0, ME, 1, 7, &next, || Some(handover_into(next.clone())));
    r.serve(4, 3);
    assert!(sent(&mut r).is_empty(), "a joiner of another configuration");
    r.serve(4, 2);
    assert_eq!(sent(&mut r), [(4, "handover", 1)]);
}
