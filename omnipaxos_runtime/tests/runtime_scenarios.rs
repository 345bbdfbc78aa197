//! Runtime nodes on the simulator, scenarios the runtime-node sweep found, written out.

use omnipaxos_runtime::simulation::RuntimeSimulation;
use omnipaxos_storage::memory_storage::MemoryStorage;

/// The leader settles entries a follower sent in its previous life after the follower
/// restarted and sent new ones: its answers carry only request numbers, and a new life that
/// numbered its requests from 1 again took the old entries' indices for its own appends (an
/// `Ok(idx)` naming another entry).
#[test]
fn a_restarted_follower_does_not_take_answers_meant_for_its_previous_life() {
    let mut sim = RuntimeSimulation::new(vec![1, 2, 3], 3, |_| MemoryStorage::<u64>::default());
    sim.run(50);
    let leader = (1..=3)
        .find(|&p| sim.core(p).and_then(|c| c.get_current_leader()) == Some((p, true)))
        .expect("a leader");
    let [follower, third] = match leader {
        1 => [2, 3],
        2 => [1, 3],
        _ => [1, 2],
    };
    // The leader can decide only with the follower: its entries stay undecided while the
    // follower is down.
    sim.disconnect(leader, third);
    let old: Vec<_> = (0..3).map(|v| sim.append(follower, 100 + v)).collect();
    sim.run(2); // placed by the leader, not yet accepted by the follower
    sim.crash(follower);
    sim.run(5);
    sim.restart(follower);
    let new: Vec<_> = (0..3).map(|v| sim.append(follower, 200 + v)).collect();
    sim.run(300);
    sim.reconnect_all();
    sim.run(300);
    for id in &old {
        assert!(
            sim.outcome(*id).is_none(),
            "its caller died with the old life"
        );
    }
    for id in &new {
        assert!(
            sim.outcome(*id).is_some(),
            "every new append has an outcome"
        );
    }
    // The point: every outcome names the truth (with numbers restarting at 1, the new
    // appends were answered `Ok(0)`, `Ok(1)`, `Ok(2)`: the old entries' indices).
    sim.check_outcomes().unwrap();
}
