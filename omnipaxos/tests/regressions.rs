//! Regression tests for faults the random sweep once found, each written as the scenario that
//! failed (the messages duplicated, delayed or lost, and in what order), so it keeps testing the
//! same thing however the protocol's message flow changes. The faults found in review are in
//! `protocol_trust.rs`.

mod common;
use common::*;
use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::simulation::SimConfig;
use omnipaxos::ClusterConfig;

/// Sweep seed 0: a forward delivered twice was appended twice and decided twice.
#[test]
fn a_duplicated_forward_is_decided_once() {
    let mut sim = led_by(1, 3, 200);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.copy(
        1,
        paxos_between(2, 1, |m| matches!(m, PaxosMsg::ForwardedEntries(_))),
    );
    sim.append(2, 7).unwrap();
    decide_all(&mut sim, 1, 50);
    let duplicate = sim.take_held().remove(0);
    sim.inject(duplicate.clone());
    sim.inject(duplicate);
    sim.append(1, 8).unwrap();
    decide_all(&mut sim, 2, 50);
    assert_eq!(decided_values(&sim, 3), vec![7, 8]);
}

/// Sweep seed 11: a late duplicate of a follower's `PrepareReq` reached the leader after the
/// follower was synchronised again; the leader forgot the follower and it never caught up.
#[test]
fn a_late_duplicate_prepare_req_does_not_leave_a_follower_behind() {
    let mut sim = led_by(1, 3, 211);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.append(1, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    // 2 loses track (a reconnect) and asks for a Prepare; the request is duplicated.
    sim.copy(
        1,
        paxos_between(2, 1, |m| matches!(m, PaxosMsg::PrepareReq(_))),
    );
    sim.heal_link(1, 2);
    sim.run_until(50, |s| s.stable_leader() == Some(1)).unwrap();
    let late = sim.take_held().remove(0);
    sim.append(1, 2).unwrap();
    decide_all(&mut sim, 2, 50);
    // The copy arrives once 2 is in sync again.
    sim.inject(late);
    sim.append(1, 3).unwrap();
    sim.append(2, 4).unwrap();
    decide_all(&mut sim, 4, 200);
    assert_eq!(decided_values(&sim, 2), decided_values(&sim, 1));
}

/// Sweep seed 19: a leader deposed while entries sat in its unfinished batch lost them.
#[test]
fn a_deposed_leader_hands_its_unwritten_batch_to_the_next_leader() {
    let mut config = SimConfig::new(vec![1, 2, 3], 219);
    config.priorities.insert(1, 10);
    config.server_config.batch_size = 3;
    config.server_config.flush_batch_tick_timeout = 1_000; // the batch stays unfinished
    let mut sim = cluster_with(config);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.append(1, 5).unwrap(); // one of three: waits in 1's batch
    sim.server_mut(2).unwrap().try_become_leader();
    sim.run(2);
    sim.append(2, 6).unwrap();
    sim.append(2, 7).unwrap();
    sim.run_until(200, |s| s.chosen().contains(&Some(5)))
        .unwrap_or_else(|e| panic!("5 was lost: {e}\n{}", recent_protocol_events(&sim)));
}

/// Sweep seed 2074: a stale duplicate of an older session's `AcceptSync` cut entries a follower
/// had already decided.
#[test]
fn a_stale_accept_sync_of_an_older_session_cannot_cut_decided_entries() {
    let mut sim = led_by(1, 3, 274);
    sim.copy(
        1,
        paxos_between(1, 2, |m| matches!(m, PaxosMsg::AcceptSync(_))),
    );
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    let stale = sim.take_held().remove(0);
    for v in 1..=3 {
        sim.append(1, v).unwrap();
    }
    decide_all(&mut sim, 3, 50);
    // 2 is synchronised again (a reconnect), in a newer session, and decides more.
    sim.heal_link(1, 2);
    sim.append(1, 4).unwrap();
    decide_all(&mut sim, 4, 50);
    sim.inject(stale);
    assert_eq!(sim.server(2).unwrap().get_accepted_idx(), 4);
    sim.append(1, 5).unwrap();
    decide_all(&mut sim, 5, 50);
    assert_eq!(decided_values(&sim, 2), vec![1, 2, 3, 4, 5]);
}

/// Sweep seed 465: a new leader took a promise whose sync ran past a decided StopSign, found a
/// gap where the StopSign's slot was counted as an entry, and prepared again and again (a
/// message storm).
#[test]
fn a_promise_that_carries_a_decided_stopsign_is_adopted_without_a_storm() {
    let mut sim = led_by(1, 3, 265);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.isolate(3);
    sim.append(1, 1).unwrap();
    let next = ClusterConfig {
        configuration_id: 2,
        nodes: vec![1, 2, 3],
        flexible_quorum: None,
    };
    sim.server_mut(1).unwrap().reconfigure(next, None).unwrap();
    sim.run_until(50, |s| s.decided_on(&[1, 2], 2)).unwrap();
    // 1 goes; 3, which has neither the entry nor the StopSign, takes over and must adopt both
    // from 2's promise.
    sim.crash(1);
    sim.heal_all();
    sim.server_mut(3).unwrap().try_become_leader();
    sim.run_until(100, |s| s.decided_on(&[2, 3], 2))
        .unwrap_or_else(|e| panic!("{e}\n{}", recent_protocol_events(&sim)));
    assert!(sim.server(3).unwrap().is_reconfigured().is_some());
    assert_eq!(decided_values(&sim, 3), vec![1]);
}
