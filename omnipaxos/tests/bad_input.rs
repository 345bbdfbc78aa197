//! Bad input never panics and never changes decided state: messages from unknown senders, for
//! other receivers, with stale or future ballots, out-of-range indices or future sequence
//! numbers; and a failing storage stops the instance without losing anything decided.

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatReply};
use omnipaxos::messages::sequence_paxos::*;
use omnipaxos::messages::Message;
use omnipaxos::simulation::FaultMode;
use omnipaxos::util::{LogSync, NodeId, SequenceNumber};
use omnipaxos::ProposeErr;

/// A 3-server cluster with 5 decided entries, the leader, and a follower.
fn steady_cluster(seed: u64) -> (Sim, NodeId, NodeId) {
    let mut sim = cluster(3, seed);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..5 {
        sim.append(leader, v).unwrap();
    }
    decide_all(&mut sim, 5, 20);
    let follower = if leader == 1 { 2 } else { 1 };
    (sim, leader, follower)
}

fn paxos(from: NodeId, to: NodeId, msg: PaxosMsg<u64>) -> Message<u64> {
    Message::SequencePaxos(PaxosMessage { from, to, msg })
}

/// Injects `msg`, runs a while, and checks that decided state is intact and the cluster works.
fn survives(sim: &mut Sim, msg: Message<u64>) {
    let before: Vec<Vec<u64>> = sim.pids().iter().map(|p| decided_values(sim, *p)).collect();
    sim.inject(msg);
    sim.run(3 * ELECTION_TICKS);
    for (pid, old) in sim.pids().into_iter().zip(before) {
        let now = decided_values(sim, pid);
        assert_eq!(
            &now[..old.len()],
            &old[..],
            "server {pid} changed decided entries"
        );
    }
    let leader = sim
        .run_until_stable_leader(100)
        .expect("cluster still has a leader");
    let next = 1000 + sim.now();
    sim.append(leader, next).unwrap();
    sim.run_until(100, |s| s.chosen().iter().flatten().any(|v| *v == next))
        .expect("cluster still decides");
}

fn ballot(n: u32, pid: NodeId) -> Ballot {
    Ballot::with(1, n, 0, pid)
}

#[test]
fn unknown_sender_and_wrong_receiver_are_ignored() {
    let (mut sim, leader, follower) = steady_cluster(1);
    let accepted_before = sim.server(follower).unwrap().get_accepted_idx();
    let forged = AcceptDecide {
        n: sim.server(follower).unwrap().get_promise(),
        seq_num: SequenceNumber {
            session: 9,
            counter: 9,
        },
        decided_idx: 999,
        entries: vec![66, 66],
    };
    sim.inject(paxos(42, follower, PaxosMsg::AcceptDecide(forged.clone())));
    sim.inject(paxos(leader, 42, PaxosMsg::AcceptDecide(forged.clone())));
    sim.inject(paxos(0, follower, PaxosMsg::ProposalForward(vec![1])));
    sim.inject(Message::BLE(BLEMessage {
        from: 42,
        to: follower,
        msg: HeartbeatMsg::Reply(HeartbeatReply {
            round: 1,
            ballot: ballot(99, 42),
            leader: ballot(99, 42),
            happy: true,
        }),
    }));
    assert_eq!(
        sim.server(follower).unwrap().get_accepted_idx(),
        accepted_before
    );
    survives(
        &mut sim,
        paxos(
            42,
            leader,
            PaxosMsg::Prepare(Prepare {
                n: ballot(99, 42),
                decided_idx: 0,
                n_accepted: Ballot::default(),
                accepted_idx: 0,
            }),
        ),
    );
}

#[test]
fn stale_and_future_ballots_change_nothing() {
    let (mut sim, leader, follower) = steady_cluster(2);
    let stale = AcceptDecide {
        n: ballot(0, leader),
        seq_num: SequenceNumber {
            session: 1,
            counter: 2,
        },
        decided_idx: 50,
        entries: vec![7; 10],
    };
    survives(
        &mut sim,
        paxos(leader, follower, PaxosMsg::AcceptDecide(stale)),
    );
    let future = AcceptDecide {
        n: ballot(500, leader),
        seq_num: SequenceNumber {
            session: 1,
            counter: 2,
        },
        decided_idx: 50,
        entries: vec![8; 10],
    };
    survives(
        &mut sim,
        paxos(leader, follower, PaxosMsg::AcceptDecide(future)),
    );
    let leader = sim.run_until_stable_leader(50).unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    // A Decide with a ballot nobody holds.
    survives(
        &mut sim,
        paxos(
            leader,
            follower,
            PaxosMsg::Decide(Decide {
                n: ballot(3, 3),
                seq_num: SequenceNumber::default(),
                decided_idx: 1_000_000,
            }),
        ),
    );
}

#[test]
fn out_of_range_indices_are_capped_or_ignored() {
    let (mut sim, leader, follower) = steady_cluster(3);
    let n = sim.server(leader).unwrap().get_promise();
    // A follower claiming to have accepted far more than the leader sent.
    survives(
        &mut sim,
        paxos(
            follower,
            leader,
            PaxosMsg::Accepted(Accepted {
                n,
                accepted_idx: usize::MAX,
            }),
        ),
    );
    let (leader, follower) = current_roles(&mut sim);
    let n = sim.server(leader).unwrap().get_promise();
    // A sync that starts beyond the follower's log (a gap), and huge decided indexes.
    let sync = AcceptSync {
        n,
        seq_num: SequenceNumber {
            session: 99,
            counter: 1,
        },
        decided_idx: usize::MAX,
        log_sync: LogSync {
            decided_snapshot: None,
            suffix: vec![1, 2, 3],
            sync_idx: 10_000,
            stopsign: None,
        },
    };
    survives(
        &mut sim,
        paxos(leader, follower, PaxosMsg::AcceptSync(sync)),
    );
    let (leader, follower) = current_roles(&mut sim);
    survives(
        &mut sim,
        paxos(
            leader,
            follower,
            PaxosMsg::Compaction(Compaction::Trim(usize::MAX)),
        ),
    );
    let (leader, follower) = current_roles(&mut sim);
    survives(
        &mut sim,
        paxos(
            leader,
            follower,
            PaxosMsg::Compaction(Compaction::Snapshot(Some(usize::MAX))),
        ),
    );
    let (leader, follower) = current_roles(&mut sim);
    let n = sim.server(leader).unwrap().get_promise();
    survives(
        &mut sim,
        paxos(
            follower,
            leader,
            PaxosMsg::Promise(Promise {
                n,
                n_accepted: ballot(u32::MAX, follower),
                decided_idx: usize::MAX,
                accepted_idx: usize::MAX,
                log_sync: Some(LogSync {
                    decided_snapshot: None,
                    suffix: vec![5],
                    sync_idx: usize::MAX,
                    stopsign: None,
                }),
            }),
        ),
    );
}

#[test]
fn future_sequence_numbers_resynchronise_without_losing_anything() {
    let (mut sim, leader, follower) = steady_cluster(4);
    let n = sim.server(leader).unwrap().get_promise();
    let jump = AcceptDecide {
        n,
        seq_num: SequenceNumber {
            session: 1,
            counter: 1_000,
        },
        decided_idx: 5,
        entries: vec![123],
    };
    survives(
        &mut sim,
        paxos(leader, follower, PaxosMsg::AcceptDecide(jump)),
    );
    assert!(
        sim.chosen().iter().flatten().all(|v| *v != 123),
        "the out-of-sequence entry was not accepted"
    );
}

#[test]
fn heartbeats_with_forged_ballots_or_old_rounds_are_ignored() {
    let (mut sim, leader, follower) = steady_cluster(5);
    for round in [0, u32::MAX] {
        survives(
            &mut sim,
            Message::BLE(BLEMessage {
                from: leader,
                to: follower,
                msg: HeartbeatMsg::Reply(HeartbeatReply {
                    round,
                    ballot: ballot(1_000, 3),
                    leader: ballot(1_000, 3),
                    happy: true,
                }),
            }),
        );
    }
    assert_eq!(
        sim.run_until_stable_leader(50).unwrap(),
        leader,
        "no election was forced"
    );
}

fn current_roles(sim: &mut Sim) -> (NodeId, NodeId) {
    let leader = sim.run_until_stable_leader(100).unwrap();
    (leader, if leader == 1 { 2 } else { 1 })
}

#[test]
fn a_failing_follower_storage_stops_only_that_follower() {
    let (mut sim, leader, follower) = steady_cluster(6);
    sim.storage(follower)
        .unwrap()
        .set_fault(FaultMode::FailWrites);
    sim.append(leader, 10).unwrap();
    sim.run_until(20, |s| s.server(leader).unwrap().get_decided_idx() == 6)
        .expect("the other two still decide");
    let stopped = sim.server_mut(follower).unwrap();
    assert!(
        stopped.get_storage_error().is_some(),
        "the error is visible"
    );
    assert_eq!(stopped.get_decided_idx(), 5, "nothing decided was lost");
    assert!(matches!(
        stopped.append(11),
        Err(ProposeErr::StorageFailed(_))
    ));
    // Once the storage works again, a rebuilt instance catches up.
    sim.storage(follower).unwrap().set_fault(FaultMode::Healthy);
    sim.crash(follower);
    sim.restart(follower).unwrap();
    assert!(sim.server(follower).unwrap().get_storage_error().is_none());
    sim.run_until(100, |s| s.all_decided(6))
        .expect("the rebuilt follower catches up");
}

#[test]
fn a_failing_leader_storage_hands_over_leadership() {
    let (mut sim, leader, _) = steady_cluster(7);
    sim.storage(leader)
        .unwrap()
        .set_fault(FaultMode::FailWrites);
    let _ = sim.append(leader, 10);
    sim.step(); // the leader writes what it appended before any message leaves: the write fails
    assert!(sim.server(leader).unwrap().get_storage_error().is_some());
    let next = sim
        .run_until(20 * ELECTION_TICKS, |s| {
            s.leader().is_some_and(|l| l != leader)
        })
        .map(|_| sim.leader().unwrap())
        .expect("another server takes over");
    sim.append(next, 11).unwrap();
    sim.run_until(50, |s| s.server(next).unwrap().get_decided_idx() >= 6)
        .unwrap();
    sim.storage(leader).unwrap().set_fault(FaultMode::Healthy);
    sim.crash(leader);
    sim.restart(leader).unwrap();
    let target = sim.chosen().len();
    sim.run_until(200, |s| s.all_decided(target))
        .expect("the old leader catches up");
}

#[test]
fn storage_failing_at_every_write_position_never_breaks_invariants() {
    for k in 0..40 {
        let mut sim = cluster(3, 100 + k);
        sim.storage(2)
            .unwrap()
            .set_fault(FaultMode::FailWritesAfter(k));
        let leader = sim
            .run_until(50, |s| s.leader().is_some())
            .map(|_| sim.leader().unwrap());
        for v in 0..10 {
            let pid = leader.clone().unwrap_or(1 + v % 3);
            let _ = sim.append(pid, v);
            sim.step();
        }
        sim.run(100);
        sim.storage(2).unwrap().set_fault(FaultMode::Healthy);
        sim.crash(2);
        sim.restart(2).unwrap();
        let leader = sim.run_until_stable_leader(200).unwrap();
        sim.append(leader, 99).unwrap();
        let target = sim.chosen().len() + 1;
        sim.run_until(300, |s| s.all_decided(target))
            .unwrap_or_else(|e| panic!("k={k}: {e} {:?}", s_decided(&sim)));
    }
}
