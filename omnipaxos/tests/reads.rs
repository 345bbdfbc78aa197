//! Linearizable reads without writing the log (`read_index`): on the leader and on followers,
//! batched into one confirmation round, waiting for a new leader to be ready, never answered by a
//! deposed leader, and always ending. The simulator checks every served read: its index is at
//! least every index decided anywhere before it was asked.

mod common;
use common::*;
use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::messages::Message;
use omnipaxos::simulation::SimConfig;
use omnipaxos::util::NodeId;
use omnipaxos::{ReadErr, ReadState};

fn served(sim: &mut Sim) -> Vec<(NodeId, ReadState)> {
    let outcomes = sim.take_reads();
    assert!(
        outcomes.failed.is_empty(),
        "failed reads: {:?}",
        outcomes.failed
    );
    outcomes.served
}

#[test]
fn a_read_on_the_leader_gets_its_decided_index() {
    let mut sim = led_by(1, 3, 300);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    for v in 0..5 {
        sim.append(1, v).unwrap();
    }
    decide_all(&mut sim, 5, 50);
    sim.read(1, 7).unwrap();
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim), vec![(1, ReadState { ctx: 7, index: 5 })]);
}

#[test]
fn a_read_on_a_follower_is_answered_there_with_the_leaders_index() {
    let mut sim = led_by(1, 3, 301);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.append(2, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    sim.read(3, 1).unwrap();
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim), vec![(3, ReadState { ctx: 1, index: 1 })]);
}

#[test]
fn many_concurrent_reads_share_one_confirmation_round() {
    let mut sim = led_by(1, 5, 302);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.append(1, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    sim.copy(
        usize::MAX,
        paxos_of_kind(|m| matches!(m, PaxosMsg::ReadConfirm(_))),
    );
    for ctx in 0..100 {
        sim.read(1, ctx).unwrap();
    }
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim).len(), 100);
    let confirms = sim.take_held();
    assert_eq!(
        confirms.len(),
        4,
        "one ReadConfirm per follower for all 100 reads: {confirms:?}"
    );
}

#[test]
fn reads_under_write_load_are_confirmed_by_the_acknowledgements_already_flowing() {
    let mut sim = led_by(1, 3, 303);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.copy(
        usize::MAX,
        paxos_of_kind(|m| matches!(m, PaxosMsg::ReadConfirm(_))),
    );
    for round in 0..10u64 {
        sim.append(1, round).unwrap(); // a write in flight with every read
        sim.read(1, round).unwrap();
        sim.step();
    }
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim).len(), 10);
    assert!(sim.take_held().is_empty(), "no extra message under writes");
}

#[test]
fn a_new_leader_serves_reads_only_once_it_decided_what_it_adopted() {
    // 3 leads and 1, 2 accept two entries that 3 decides; 1 and 2 never learn it. Then 3 goes,
    // and 2 takes over: its decided index (0) is behind what was decided, so a read must wait
    // until 2 has decided what it adopted.
    let mut sim = led_by(3, 3, 304);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    sim.hold(usize::MAX, |m| {
        matches!(m, Message::SequencePaxos(p) if p.from == 3 && match &p.msg {
            PaxosMsg::Decide(_) => true,
            PaxosMsg::AcceptDecide(a) => a.entries.is_empty(),
            _ => false,
        })
    });
    sim.append(3, 1).unwrap();
    sim.append(3, 2).unwrap();
    sim.run_until(20, |s| s.server(3).unwrap().get_decided_idx() == 2)
        .unwrap();
    assert_eq!(sim.server(2).unwrap().get_decided_idx(), 0);
    sim.crash(3);
    sim.stop_intercepting();
    sim.hold(
        usize::MAX,
        paxos_of_kind(|m| matches!(m, PaxosMsg::Accepted(_))),
    );
    sim.server_mut(2).unwrap().try_become_leader();
    sim.run(3);
    // 2 leads, but 1's acknowledgements are held: nothing adopted is decided yet.
    assert_eq!(sim.server(2).unwrap().get_current_leader(), Some((2, true)));
    assert_eq!(sim.server(2).unwrap().get_decided_idx(), 0);
    sim.read(2, 9).unwrap();
    sim.run(5);
    assert!(served(&mut sim).is_empty(), "the read waits");
    sim.stop_intercepting();
    sim.run_until(100, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim), vec![(2, ReadState { ctx: 9, index: 2 })]);
}

#[test]
fn a_deposed_leader_cut_off_from_the_others_never_answers_a_read() {
    let mut sim = led_by(1, 3, 305);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.append(1, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    sim.isolate(1);
    // 2 and 3 elect a new leader and decide more; 1 still believes it leads.
    let new = sim
        .run_until(200, |s| {
            s.live_pids()
                .into_iter()
                .any(|p| p != 1 && s.server(p).unwrap().get_current_leader() == Some((p, true)))
        })
        .map(|_| {
            (2..=3)
                .find(|p| sim.server(*p).unwrap().get_current_leader() == Some((*p, true)))
                .unwrap()
        })
        .unwrap();
    sim.append(new, 2).unwrap();
    sim.run_until(50, |s| s.decided_on(&[2, 3], 2)).unwrap();
    match sim.read(1, 5) {
        Err(ReadErr::NoLeader) => {} // it noticed it no longer leads: fine
        Ok(()) => {
            sim.run_until(500, |s| s.pending_reads() == 0).unwrap();
            let outcomes = sim.take_reads();
            assert!(
                outcomes.served.is_empty(),
                "a deposed leader answered: {:?}",
                outcomes.served
            );
            assert_eq!(outcomes.failed.len(), 1);
        }
        Err(other) => panic!("unexpected {other}"),
    }
}

#[test]
fn reads_fail_instead_of_vanishing_when_the_leader_changes() {
    let mut sim = led_by(1, 3, 306);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.hold(
        usize::MAX,
        paxos_of_kind(|m| matches!(m, PaxosMsg::ReadIndexResp(_) | PaxosMsg::ReadConfirmed(_))),
    );
    sim.read(1, 1).unwrap();
    sim.read(2, 2).unwrap();
    sim.run(2);
    sim.server_mut(3).unwrap().try_become_leader();
    sim.run_until(300, |s| s.pending_reads() == 0).unwrap();
    let outcomes = sim.take_reads();
    assert!(outcomes.served.is_empty());
    let failed = outcomes.failed;
    let mut reasons: Vec<(NodeId, u64)> = failed.iter().map(|(p, f)| (*p, f.ctx)).collect();
    reasons.sort();
    assert_eq!(reasons, vec![(1, 1), (2, 2)]);
    assert!(failed
        .iter()
        .all(|(_, f)| matches!(f.reason, ReadErr::LeaderChanged | ReadErr::Timeout)));
}

#[test]
fn reads_are_refused_after_a_reconfiguration() {
    let mut sim = led_by(1, 3, 307);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    let next = omnipaxos::ClusterConfig {
        configuration_id: 2,
        nodes: vec![1, 2],
        flexible_quorum: None,
    };
    sim.server_mut(1).unwrap().reconfigure(next, None).unwrap();
    decide_all(&mut sim, 1, 50);
    assert_eq!(sim.read(1, 1), Err(ReadErr::Reconfigured));
    assert_eq!(sim.read(2, 1), Err(ReadErr::Reconfigured));
}

/// Found by the sweep (seed 13208 of the first version): a follower numbered its reads from 1
/// again after a restart, and a late copy of the leader's answer to a read of its earlier life
/// served a new read with an index from before entries decided since.
#[test]
fn a_late_answer_to_a_read_of_a_followers_earlier_life_serves_nothing() {
    let mut sim = led_by(1, 3, 308);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    sim.copy(
        1,
        paxos_of_kind(|m| matches!(m, PaxosMsg::ReadIndexResp(_))),
    );
    sim.read(2, 1).unwrap();
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim), vec![(2, ReadState { ctx: 1, index: 0 })]);
    let late_answer = sim.take_held().remove(0);
    for v in 0..3 {
        sim.append(1, v).unwrap();
    }
    decide_all(&mut sim, 3, 50);
    sim.crash(2);
    sim.restart(2).unwrap();
    sim.run_until_stable_leader(100).unwrap();
    sim.hold(1, paxos_of_kind(|m| matches!(m, PaxosMsg::ReadIndexReq(_))));
    sim.read(2, 2).unwrap();
    sim.step();
    sim.inject(late_answer);
    sim.step();
    assert!(served(&mut sim).is_empty(), "served from a stale answer");
    let fresh = sim.take_held().remove(0);
    sim.inject(fresh);
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim), vec![(2, ReadState { ctx: 2, index: 3 })]);
}

// ---------------------------------------------------------------------------------------------
// Leader leases

fn with_lease(leader: NodeId, seed: u64, duration_ticks: u64) -> Sim {
    let mut config = SimConfig::new(vec![1, 2, 3], seed);
    config.priorities.insert(leader, 10);
    config.read_lease = Some(omnipaxos::ReadLease {
        duration_ticks,
        max_drift_percent: 10,
    });
    // One server's clock runs 5% slow: within the stated bound.
    config.slow_servers.insert(3, 20);
    cluster_with(config)
}

#[test]
fn a_leader_with_a_lease_answers_reads_without_a_round_trip() {
    let mut sim = with_lease(1, 309, 50);
    assert_eq!(sim.run_until_stable_leader(100).unwrap(), 1);
    sim.append(1, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    // The first read confirms the leader, which starts its lease.
    sim.read(1, 1).unwrap();
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    assert_eq!(served(&mut sim), vec![(1, ReadState { ctx: 1, index: 1 })]);
    sim.copy(
        usize::MAX,
        paxos_of_kind(|m| matches!(m, PaxosMsg::ReadConfirm(_))),
    );
    for ctx in 2..12 {
        sim.read(1, ctx).unwrap();
    }
    sim.step();
    assert_eq!(served(&mut sim).len(), 10);
    assert!(
        sim.take_held().is_empty(),
        "no confirmation round within the lease"
    );
}

#[test]
fn a_deposed_leader_with_a_lease_answers_only_within_its_lease() {
    let duration = 30;
    let mut sim = with_lease(1, 310, duration);
    assert_eq!(sim.run_until_stable_leader(100).unwrap(), 1);
    sim.append(1, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    sim.read(1, 1).unwrap();
    sim.run_until(20, |s| s.pending_reads() == 0).unwrap();
    served(&mut sim);
    // Cut off from the others, 1 keeps answering from its lease until the lease ends; 2 and 3
    // hold its ballot that long and only then elect a leader and decide something new. The
    // simulator checks every read served against what was decided before it was asked.
    sim.isolate(1);
    let isolated_at = sim.now();
    let mut lease_reads = 0;
    let mut last_lease_read_step = 0;
    let mut new_decision_step = None;
    for ctx in 2..400 {
        if sim.read(1, ctx).is_ok() {
            sim.step();
            let outcomes = sim.take_reads();
            if !outcomes.served.is_empty() {
                lease_reads += outcomes.served.len();
                last_lease_read_step = sim.now();
            }
        } else {
            sim.step();
        }
        if new_decision_step.is_none() && sim.decided_on(&[2, 3], 2) {
            new_decision_step = Some(sim.now());
        }
        if new_decision_step.is_none() {
            if let Some(l) =
                (2..=3).find(|p| sim.server(*p).unwrap().get_current_leader() == Some((*p, true)))
            {
                let _ = sim.append(l, 2);
            }
        }
    }
    assert!(lease_reads > 0, "the lease served reads");
    assert!(
        last_lease_read_step < isolated_at + duration,
        "1 answered after its lease: at step {last_lease_read_step}"
    );
    let decided_at = new_decision_step.expect("2 and 3 went on");
    assert!(
        decided_at > last_lease_read_step,
        "something was decided ({decided_at}) while 1 still answered from its lease ({last_lease_read_step})"
    );
}
