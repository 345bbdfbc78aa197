//! Ballot Leader Election on the simulator: start-up elections, priorities, replacing a crashed
//! leader, manual takeover. Bounds are in steps; a step is one tick, and an election round is
//! `ELECTION_TICKS` ticks.

mod common;
use common::*;
use omnipaxos::simulation::SimConfig;

#[test]
fn a_leader_is_elected_within_one_round_for_3_5_and_7_nodes() {
    for n in [3u64, 5, 7] {
        for seed in 0..20 {
            let mut sim = cluster(n, seed);
            let steps = sim
                .run_until(2 * ELECTION_TICKS, |s| s.stable_leader().is_some())
                .unwrap_or_else(|e| panic!("{n} nodes: {e}"));
            assert!(steps <= ELECTION_TICKS, "{n} nodes took {steps} steps");
            assert_eq!(
                sim.stable_leader(),
                Some(n),
                "equal ballots: the highest pid leads"
            );
        }
    }
}

#[test]
fn leader_priority_decides_who_leads() {
    let mut config = SimConfig::new(vec![1, 2, 3, 4, 5], 3);
    config.priorities.insert(2, 10);
    config.priorities.insert(4, 5);
    let mut sim = cluster_with(config);
    let leader = sim.run_until_stable_leader(2 * ELECTION_TICKS).unwrap();
    assert_eq!(leader, 2);
    sim.crash(2);
    let next = sim.run_until_stable_leader(10 * ELECTION_TICKS).unwrap();
    assert_eq!(next, 4, "the next highest priority takes over");
}

#[test]
fn a_crashed_leader_is_replaced_within_four_rounds() {
    for n in [3u64, 5, 7] {
        for seed in 0..20 {
            let mut sim = cluster(n, seed);
            let old = sim.run_until_stable_leader(50).unwrap();
            sim.append(old, 1).unwrap();
            decide_all(&mut sim, 1, 50);
            sim.crash(old);
            let steps = sim
                .run_until(10 * ELECTION_TICKS, |s| s.stable_leader().is_some())
                .unwrap_or_else(|e| panic!("{n} nodes: {e}"));
            assert!(
                steps <= 4 * ELECTION_TICKS,
                "{n} nodes, seed {seed}: {steps} steps"
            );
            let new = sim.stable_leader().unwrap();
            assert_ne!(new, old);
            sim.append(new, 2).unwrap();
            decide_all(&mut sim, 2, 50);
        }
    }
}

#[test]
fn try_become_leader_takes_over() {
    let mut sim = cluster(5, 9);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 5);
    sim.server_mut(2).unwrap().try_become_leader();
    let leader = sim.run_until(50, |s| s.stable_leader() == Some(2));
    assert!(leader.is_ok(), "server 2 leads after try_become_leader");
    // It stays leader: BLE adopted the higher ballot instead of fighting it.
    sim.run(20 * ELECTION_TICKS);
    assert_eq!(sim.stable_leader(), Some(2));
    sim.append(3, 77).unwrap();
    decide_all(&mut sim, 1, 50);
    assert_eq!(decided_values(&sim, 5), vec![77]);
}

#[test]
fn set_priority_moves_leadership() {
    let mut sim = cluster(3, 4);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    sim.server_mut(1).unwrap().set_priority(100);
    sim.run_until(20 * ELECTION_TICKS, |s| s.stable_leader() == Some(1))
        .expect("the server with the higher priority takes over");
}

#[test]
fn a_one_node_cluster_leads_itself_and_decides_alone() {
    let mut sim = cluster(1, 0);
    assert_eq!(sim.run_until_stable_leader(ELECTION_TICKS).unwrap(), 1);
    for v in 0..5 {
        sim.append(1, v).unwrap();
    }
    let writes_before = sim.storage(1).unwrap().write_count();
    let server = sim.server_mut(1).unwrap();
    assert_eq!(
        server.get_accepted_idx(),
        5,
        "appended entries are visible at once"
    );
    assert_eq!(
        server.get_decided_idx(),
        0,
        "but written only when messages are taken"
    );
    server.take_outgoing_messages(&mut Vec::new());
    assert_eq!(server.get_decided_idx(), 5, "decided without any message");
    let writes = sim.storage(1).unwrap().write_count() - writes_before;
    assert_eq!(
        writes, 2,
        "group commit: one write for the 5 entries, one for the decided index"
    );
}

#[test]
fn sparse_pids_elect_and_replicate() {
    let mut sim = cluster_with(SimConfig::new(vec![5, 6, 7], 1));
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 7);
    for v in 0..10 {
        sim.append(5 + v % 3, v).unwrap();
    }
    decide_all(&mut sim, 10, 100);
    // Trimming is bounded by what all three accepted, not pinned at 0 by the missing pids 1..4.
    sim.server_mut(7).unwrap().trim(None).expect("leader trims");
    sim.run(ELECTION_TICKS);
    for pid in [5, 6, 7] {
        assert_eq!(sim.server(pid).unwrap().get_compacted_idx(), 10);
    }
}

/// A server whose connection to a peer comes back in the middle of a heartbeat round asks that
/// peer again at once, instead of going without its reply until the round ends. (At start-up,
/// when connections come up during the first round, every server would otherwise end that round
/// without replies and re-elect right after the first election.) Healed at each point of a round
/// in turn, so a request that only happened to start a new round cannot pass for it.
#[test]
fn a_reconnected_peer_is_asked_for_its_heartbeat_in_the_same_round() {
    use omnipaxos::messages::ballot_leader_election::HeartbeatMsg;
    use omnipaxos::messages::Message;
    let mut sim = led_by(1, 3, 7);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 1);
    for offset in 0..ELECTION_TICKS {
        sim.disconnect(2, 3);
        sim.run(ELECTION_TICKS + offset);
        sim.copy(usize::MAX, |m| {
            matches!(m, Message::BLE(b) if b.from == 2 && b.to == 3
                && matches!(b.msg, HeartbeatMsg::Request(_)))
        });
        sim.heal_link(2, 3);
        sim.heal_link(3, 2);
        sim.step();
        let asked = sim.take_held().len();
        sim.stop_intercepting();
        assert!(
            asked >= 1,
            "healed {offset} ticks into a round: 2 did not ask 3 at once"
        );
    }
}
