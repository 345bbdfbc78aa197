//! Golden traces: scripted scenarios whose whole Sequence Paxos message trace is compared with a
//! checked-in file (heartbeats left out), so a protocol change shows up as a readable diff.
//! Election and failover, a lost message, forwarding (with a duplicate), compaction,
//! reconfiguration and partial connectivity (the paper's quorum-loss scenario).
//! `UPDATE_GOLDEN=1 cargo test -p omnipaxos --all-features --test golden_traces` rewrites them.

mod common;
use common::*;
use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::messages::Message;
use omnipaxos::simulation::{SimConfig, Simulation};
use omnipaxos::storage::{Entry, Storage};
use omnipaxos::ClusterConfig;
use std::hash::Hash;

fn compare<T: Entry + Eq + Hash, B: Storage<T>>(name: &str, sim: &Simulation<T, B>) {
    let trace: String = sim
        .trace()
        .filter(|l| !l.contains("Heartbeat"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = format!("{}/tests/golden/{name}.trace", env!("CARGO_MANIFEST_DIR"));
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(&path, &trace).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != trace {
        let first = expected
            .lines()
            .zip(trace.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(trace.lines().count()));
        panic!(
            "trace of {name} differs from {path} at line {}:\n  expected: {:?}\n  actual:   {:?}\n(rerun with UPDATE_GOLDEN=1 to accept the new trace)",
            first + 1,
            expected.lines().nth(first),
            trace.lines().nth(first)
        );
    }
}

fn traced_cluster(n: u64) -> Sim {
    let mut config = SimConfig::new((1..=n).collect(), 1);
    config.trace_len = 100_000;
    cluster_with(config)
}

#[test]
fn election_replication_and_failover() {
    let mut sim = traced_cluster(3);
    sim.run_until_stable_leader(50).unwrap();
    sim.append(3, 10).unwrap();
    sim.append(1, 11).unwrap();
    sim.run(2);
    sim.crash(3);
    sim.run_until(100, |s| s.stable_leader().is_some()).unwrap();
    sim.append(1, 12).unwrap();
    sim.run(2);
    sim.restart(3).unwrap();
    sim.run_until(100, |s| s.all_decided(3)).unwrap();
    compare("election_replication_and_failover", &sim);
}

#[test]
fn a_follower_resynchronises_after_a_lost_message() {
    let mut sim = traced_cluster(3);
    let leader = sim.run_until_stable_leader(50).unwrap();
    sim.append(leader, 1).unwrap();
    sim.run(1);
    sim.cut_link(leader, 1);
    sim.append(leader, 2).unwrap();
    sim.run(1);
    sim.heal_link(leader, 1);
    sim.append(leader, 3).unwrap();
    sim.run_until(100, |s| s.all_decided(3)).unwrap();
    compare("a_follower_resynchronises_after_a_lost_message", &sim);
}

#[test]
fn forwarding_with_a_duplicated_forward() {
    let mut sim = traced_cluster(3);
    let leader = sim.run_until_stable_leader(50).unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    sim.copy(1, |m| {
        matches!(m, Message::SequencePaxos(p) if matches!(p.msg, PaxosMsg::ForwardedEntries(_)))
    });
    sim.append(follower, 20).unwrap();
    sim.append(follower, 21).unwrap();
    sim.run_until(50, |s| s.all_decided(2)).unwrap();
    let duplicate = sim.take_held().remove(0);
    sim.inject(duplicate); // dropped: taken once
    sim.append(follower, 22).unwrap();
    sim.run_until(50, |s| s.all_decided(3)).unwrap();
    sim.run(2);
    assert_eq!(decided_values(&sim, leader), vec![20, 21, 22]);
    compare("forwarding_with_a_duplicated_forward", &sim);
}

#[test]
fn compaction_snapshot_then_trim() {
    let mut config = SimConfig::new(vec![1, 2, 3], 1);
    config.trace_len = 100_000;
    let mut sim: AddSim = Simulation::new(config, |_| {
        omnipaxos_storage::memory_storage::MemoryStorage::default()
    });
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 1..=4 {
        sim.append(leader, Add(v)).unwrap();
    }
    sim.run_until(50, |s| s.all_decided(4)).unwrap();
    sim.server_mut(leader)
        .unwrap()
        .snapshot(Some(2), false)
        .unwrap();
    sim.run(1);
    sim.server_mut(leader).unwrap().trim(Some(3)).unwrap();
    sim.run(1);
    for pid in 1..=3 {
        assert_eq!(sim.server(pid).unwrap().get_compacted_idx(), 3);
    }
    compare("compaction_snapshot_then_trim", &sim);
}

#[test]
fn reconfiguration_by_stopsign() {
    let mut sim = traced_cluster(3);
    let leader = sim.run_until_stable_leader(50).unwrap();
    sim.append(leader, 1).unwrap();
    sim.run(1);
    let next = ClusterConfig {
        configuration_id: 2,
        nodes: vec![1, 2, 4],
        flexible_quorum: None,
    };
    let follower = if leader == 1 { 2 } else { 1 };
    sim.server_mut(follower)
        .unwrap()
        .reconfigure(next, None)
        .unwrap();
    sim.run_until(50, |s| s.all_decided(2)).unwrap();
    sim.run(2);
    assert!(sim.server(3).unwrap().is_reconfigured().is_some());
    compare("reconfiguration_by_stopsign", &sim);
}

#[test]
fn partial_connectivity_quorum_loss() {
    // The paper's quorum-loss scenario: every link but those through server 3 is cut, so only 3
    // is quorum-connected and takes over from 5.
    let mut sim = traced_cluster(5);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 5);
    sim.append(5, 1).unwrap();
    sim.run_until(50, |s| s.all_decided(1)).unwrap();
    for a in [1, 2, 4, 5] {
        for b in [1, 2, 4, 5] {
            if a < b {
                sim.disconnect(a, b);
            }
        }
    }
    sim.run_until(50, |s| s.leader() == Some(3)).unwrap();
    sim.append(1, 2).unwrap();
    sim.run_until(50, |s| s.all_decided(2)).unwrap();
    sim.run(2);
    compare("partial_connectivity_quorum_loss", &sim);
}
