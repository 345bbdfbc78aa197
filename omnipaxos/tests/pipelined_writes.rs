//! Pipelined replication (`OmniPaxos::take_outgoing_messages_pipelined`): a leader sends new
//! entries to its followers before writing them itself. A leader that crashes in between must
//! lose nothing decided and decide nothing twice; the entries it sent live on in its followers'
//! logs and are decided once by the next leader.

use omnipaxos::simulation::{SimConfig, Simulation};
use omnipaxos_storage::memory_storage::MemoryStorage;

fn pipelined(seed: u64) -> Simulation<u64, MemoryStorage<u64>> {
    let mut config = SimConfig::new(vec![1, 2, 3], seed);
    config.pipelined_writes = true;
    // What a crashed leader sent still arrives (it left the machine before the crash).
    config.network.in_flight_survives_crash = true;
    Simulation::new(config, |_| MemoryStorage::default())
}

fn decided_count(sim: &Simulation<u64, MemoryStorage<u64>>, value: u64) -> usize {
    sim.chosen().iter().filter(|e| **e == Some(value)).count()
}

#[test]
fn entries_replicated_before_the_leaders_write_are_decided_once() {
    let mut sim = pipelined(7);
    let leader = sim.run_until_stable_leader(500).unwrap();
    let follower = sim.pids().into_iter().find(|p| *p != leader).unwrap();
    for v in 1..=20 {
        // Appended on a follower: forwarded, appended by the leader while messages are
        // delivered, and sent on before the leader writes it.
        sim.append(follower, v).unwrap();
        sim.step();
    }
    sim.run_until(500, |s| s.all_decided(20)).unwrap();
    for v in 1..=20 {
        assert_eq!(decided_count(&sim, v), 1, "{v} decided once");
    }
    sim.assert_invariants_fully();
}

#[test]
fn a_leader_that_crashes_between_sending_and_writing_loses_nothing_and_doubles_nothing() {
    let mut sim = pipelined(11);
    let leader = sim.run_until_stable_leader(500).unwrap();
    let follower = sim.pids().into_iter().find(|p| *p != leader).unwrap();
    sim.append(follower, 1).unwrap();
    sim.run_until(500, |s| s.all_decided(1)).unwrap();
    // The next entry the leader sends makes it crash before its own write of it.
    sim.set_crash_before_write(1.0);
    sim.append(follower, 2).unwrap();
    sim.run_until(500, |s| {
        s.trace()
            .any(|l| l.contains("crashes after sending, before writing"))
    })
    .unwrap();
    sim.set_crash_before_write(0.0);
    // The followers accepted 2 in the leader's ballot; the next leader finds it and decides it.
    sim.run_until(2000, |s| s.all_decided(2)).unwrap();
    let next = sim.run_until_stable_leader(2000).unwrap();
    sim.append(next, 3).unwrap();
    sim.run_until(2000, |s| s.all_decided(3)).unwrap();
    for v in 1..=3 {
        assert_eq!(decided_count(&sim, v), 1, "{v} decided exactly once");
    }
    sim.assert_invariants_fully();
}
