//! Golden traces: scripted scenarios whose whole Sequence Paxos message trace is compared with a
//! checked-in file (heartbeats left out), so a protocol change shows up as a readable diff.
//! `UPDATE_GOLDEN=1 cargo test -p omnipaxos --all-features --test golden_traces` rewrites them.

mod common;
use common::*;
use omnipaxos::simulation::SimConfig;

fn compare(name: &str, sim: &Sim) {
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
