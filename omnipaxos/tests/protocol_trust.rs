//! Regression tests for the protocol faults found in review, each written as the scenario that
//! exposed it: the exact messages lost, held back or delivered late, the crashes and restarts.
//! Every one of them failed before its fix; the simulator's invariant checker (agreement,
//! validity, stability) runs after every step on top of the assertions here.

mod common;
use common::*;
use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::messages::Message;
use omnipaxos::simulation::SimConfig;
use omnipaxos::ClusterConfig;

fn is_accept_sync(m: &PaxosMsg<u64>) -> bool {
    matches!(m, PaxosMsg::AcceptSync(_))
}

/// A message that tells the follower a decided index above 0.
fn carries_a_decision(m: &PaxosMsg<u64>) -> bool {
    match m {
        PaxosMsg::Decide(d) => d.decided_idx > 0,
        PaxosMsg::AcceptDecide(a) => a.decided_idx > 0,
        _ => false,
    }
}

/// Steps until `pred` holds, failing the test with `what` and the recent protocol events.
fn run_until(sim: &mut Sim, steps: usize, what: &str, pred: impl FnMut(&Sim) -> bool) {
    if let Err(e) = sim.run_until(steps, pred) {
        panic!("{what}: {e}\n{}", recent_protocol_events(sim));
    }
}

/// Steps until some message is held back, and returns the held messages.
fn run_until_held(sim: &mut Sim, steps: usize) -> Vec<Message<u64>> {
    for _ in 0..steps {
        sim.step();
        let held = sim.take_held();
        if !held.is_empty() {
            return held;
        }
    }
    panic!("nothing was held within {steps} steps");
}

fn count(values: &[u64], v: u64) -> usize {
    values.iter().filter(|x| **x == v).count()
}

/// Finding 1: a follower's session lives in memory, so after a restart it took a stale
/// duplicate of an `AcceptSync` of the same ballot for a new one and cut the entries it had
/// acknowledged, which were decided with its vote. A later leader then decided something else.
#[test]
fn finding_1_a_stale_accept_sync_after_a_follower_restart_cannot_cut_acknowledged_entries() {
    let mut sim = led_by(3, 3, 101);
    // The first AcceptSync of 3's ballot to 2 (sync at 0, no entries) is duplicated; the copy
    // is delivered much later.
    sim.copy(1, paxos_between(3, 2, is_accept_sync));
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    // 2 accepts 100..=104 and 3 decides them with 2's vote; 1 hears nothing of them and 2 misses
    // the decision.
    sim.hold(usize::MAX, paxos_between(3, 1, |_| true));
    sim.hold(usize::MAX, paxos_between(3, 2, carries_a_decision));
    for v in 100..=104 {
        sim.append(3, v).unwrap();
    }
    run_until(&mut sim, 50, "3 decides with 2's vote", |s| {
        s.server(3).unwrap().get_decided_idx() == 5
    });
    assert_eq!(sim.server(2).unwrap().get_accepted_idx(), 5);
    assert_eq!(sim.server(2).unwrap().get_decided_idx(), 0);
    sim.stop_intercepting();
    let stale_sync = sim.take_held().remove(0);
    assert!(
        stale_sync.to_string().contains("AcceptSync"),
        "{stale_sync}"
    );

    // 2 restarts and promises 3's ballot again; 3's fresh sync is held back while the stale copy
    // of the first one arrives.
    sim.crash(2);
    sim.restart(2).unwrap();
    sim.hold(1, paxos_between(3, 2, is_accept_sync));
    let fresh_sync = run_until_held(&mut sim, 50).remove(0);
    sim.inject(stale_sync);
    assert_eq!(
        sim.server(2).unwrap().get_accepted_idx(),
        5,
        "the stale sync must not cut what 2 acknowledged"
    );
    sim.inject(fresh_sync);

    // 3 crashes; 1 and 2 elect a leader, which must keep 100..=104 at the front of the log.
    sim.crash(3);
    let leader = sim.run_until_stable_leader(200).unwrap();
    sim.append(leader, 200).unwrap();
    decide_all(&mut sim, 6, 200);
    for pid in [1, 2] {
        assert_eq!(
            decided_values(&sim, pid),
            vec![100, 101, 102, 103, 104, 200]
        );
    }
    sim.assert_invariants_fully();
}

/// Finding 2: a forward's identity was made of the sync session, so a follower that took a
/// stale sync after a restart forwarded a new entry under an identity it had used before its
/// crash, and the leader dropped the entry as a duplicate: never decided, on a network that
/// loses nothing.
#[test]
fn finding_2_a_restarted_follower_never_reuses_a_forward_identity() {
    let mut sim = led_by(3, 3, 102);
    sim.copy(1, paxos_between(3, 2, is_accept_sync));
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    // 2 forwards 7; 3 and 1 decide it; 2 does not receive it back, so its log stays where the
    // first sync left it.
    sim.hold(usize::MAX, paxos_between(3, 2, |_| true));
    sim.append(2, 7).unwrap();
    run_until(&mut sim, 50, "7 decided on 1 and 3", |s| {
        s.decided_on(&[1, 3], 1)
    });
    sim.stop_intercepting();
    let stale_sync = sim.take_held().remove(0);

    // 2 restarts; the stale sync reaches it before the fresh one (it fits 2's log, so 2 takes
    // it), then 2 proposes 8.
    sim.crash(2);
    sim.restart(2).unwrap();
    sim.hold(1, paxos_between(3, 2, is_accept_sync));
    let fresh_sync = run_until_held(&mut sim, 50).remove(0);
    sim.inject(stale_sync);
    sim.append(2, 8).unwrap();
    sim.inject(fresh_sync);
    run_until(&mut sim, 300, "8 decided everywhere", |s| {
        s.all_decided(2) && s.chosen().contains(&Some(8))
    });
    for pid in [1, 2, 3] {
        assert_eq!(decided_values(&sim, pid), vec![7, 8], "server {pid}");
    }
}

/// Finding 3: the leader's table of forward identities lived in memory, so a duplicate of a
/// forward that reached the leader after it restarted was appended and decided a second time.
#[test]
fn finding_3_a_duplicate_forward_reaching_a_restarted_leader_is_not_decided_again() {
    let mut sim = led_by(3, 3, 103);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    sim.copy(
        1,
        paxos_between(2, 3, |m| matches!(m, PaxosMsg::ForwardedEntries(_))),
    );
    sim.append(2, 7).unwrap();
    decide_all(&mut sim, 1, 50);
    let duplicate = sim.take_held().remove(0);

    sim.crash(3);
    sim.restart(3).unwrap();
    let leader = sim.run_until_stable_leader(300).unwrap();
    sim.inject(duplicate);
    sim.append(leader, 8).unwrap();
    decide_all(&mut sim, 2, 300);
    sim.run(10 * ELECTION_TICKS);
    for pid in [1, 2, 3] {
        let values = decided_values(&sim, pid);
        assert_eq!(count(&values, 7), 1, "server {pid} decided {values:?}");
    }
}

/// Finding 4: Sequence Paxos promised a ballot that Ballot Leader Election never saw win (here
/// through `try_become_leader` on a server that can send but not receive), and BLE went on
/// following the old leader, which had stepped down for that ballot. With its owner gone,
/// nobody led, forever.
#[test]
fn finding_4_a_promised_ballot_whose_owner_is_gone_does_not_stall_the_cluster() {
    let mut sim = led_by(1, 3, 104);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    // Server 3 hears nobody, but everybody hears it: it takes over, everyone promises its
    // ballot, and it never learns.
    sim.cut_link(1, 3);
    sim.cut_link(2, 3);
    sim.server_mut(3).unwrap().try_become_leader();
    sim.run(2 * ELECTION_TICKS);
    assert_eq!(sim.server(1).unwrap().get_promise().pid, 3);
    sim.crash(3);
    // 1 and 2 form a majority: a leader within 20 election timeouts, and a decided append.
    let leader = sim
        .run_until_stable_leader(20 * ELECTION_TICKS)
        .unwrap_or_else(|e| panic!("no leader: {e}\n{}", recent_protocol_events(&sim)));
    sim.append(leader, 5).unwrap();
    decide_all(&mut sim, 1, 20 * ELECTION_TICKS);
}

/// The resend timer of the simulator's default config, in steps.
const RESEND_TICKS: usize = 20;

/// Finding 5a: a follower sent its `Accepted` again only once. With a server down and two
/// acknowledgements lost in a row, the entry was never decided.
#[test]
fn finding_5a_an_entry_is_decided_after_two_lost_acknowledgements_in_a_row() {
    let mut sim = led_by(1, 3, 105);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.crash(3);
    sim.hold(
        2,
        paxos_between(2, 1, |m| matches!(m, PaxosMsg::Accepted(_))),
    );
    sim.append(1, 5).unwrap();
    decide_all(&mut sim, 1, 5 * RESEND_TICKS);
}

/// Finding 5b: the same for a StopSign: the log is sealed, so no later append could rescue it.
#[test]
fn finding_5b_a_stopsign_is_decided_after_two_lost_acknowledgements_in_a_row() {
    let mut sim = led_by(1, 3, 106);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.crash(3);
    sim.hold(
        2,
        paxos_between(2, 1, |m| matches!(m, PaxosMsg::Accepted(_))),
    );
    let next = ClusterConfig {
        configuration_id: 2,
        nodes: vec![1, 2],
        flexible_quorum: None,
    };
    sim.server_mut(1).unwrap().reconfigure(next, None).unwrap();
    run_until(&mut sim, 5 * RESEND_TICKS, "the StopSign decided", |s| {
        s.decided_on(&[1, 2], 1)
    });
    assert!(sim.server(2).unwrap().is_reconfigured().is_some());
}

/// Finding 5c: the leader sent a lost decision again only once; with two losses in a row the
/// follower never learned the decided index.
#[test]
fn finding_5c_a_follower_learns_a_decision_after_two_lost_decides_in_a_row() {
    let mut sim = led_by(1, 3, 107);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.crash(3);
    sim.hold(2, paxos_between(1, 2, carries_a_decision));
    sim.append(1, 5).unwrap();
    run_until(&mut sim, 5 * RESEND_TICKS, "2 learns the decision", |s| {
        s.decided_on(&[2], 1)
    });
}

/// Finding 6: when the election and resend timers fired in the same tick, a new leader sent
/// `Prepare` twice, got two promises and synchronised each follower three times.
#[test]
fn finding_6_failover_sends_one_prepare_and_one_sync_per_follower() {
    let mut config = SimConfig::new(vec![1, 2, 3], 108);
    config.priorities.insert(3, 10);
    config.priorities.insert(2, 5);
    // Both timers fire in every election round.
    config.server_config.resend_message_tick_timeout = config.server_config.election_tick_timeout;
    let mut sim = cluster_with(config);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    sim.copy(usize::MAX, |m| {
        matches!(m, Message::SequencePaxos(p)
            if matches!(p.msg, PaxosMsg::Prepare(_) | PaxosMsg::AcceptSync(_)))
    });
    sim.crash(3);
    let leader = sim.run_until_stable_leader(100).unwrap();
    assert_eq!(leader, 2);
    sim.append(2, 1).unwrap();
    run_until(&mut sim, 50, "decided on 1 and 2", |s| {
        s.decided_on(&[1, 2], 1)
    });
    let sent: Vec<String> = sim.take_held().iter().map(|m| m.to_string()).collect();
    let prepares = sent
        .iter()
        .filter(|m| m.starts_with("2->1 Prepare"))
        .count();
    let syncs = sent
        .iter()
        .filter(|m| m.starts_with("2->1 AcceptSync"))
        .count();
    assert_eq!((prepares, syncs), (1, 1), "failover traffic: {sent:#?}");
}
