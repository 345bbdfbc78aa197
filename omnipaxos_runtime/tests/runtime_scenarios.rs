//! Runtime nodes on the simulator, scenarios the runtime-node sweep found, written out.

use omnipaxos_runtime::simulation::RuntimeSimulation;
use omnipaxos_storage::memory_storage::MemoryStorage;

type Sim = RuntimeSimulation<u64, MemoryStorage<u64>>;

/// Three nodes from `seed`, run until a leader is elected; with that leader.
fn three_nodes_led(seed: u64) -> (Sim, u64) {
    let mut sim = RuntimeSimulation::new(vec![1, 2, 3], seed, |_| MemoryStorage::<u64>::default());
    sim.run(50);
    let leader = (1..=3)
        .find(|&p| sim.core(p).and_then(|c| c.get_current_leader()) == Some((p, true)))
        .expect("a leader");
    (sim, leader)
}

/// The leader settles entries a follower sent in its previous life after the follower
/// restarted and sent new ones: its answers carry only request numbers, and a new life that
/// numbered its requests from 1 again took the old entries' indices for its own appends (an
/// `Ok(idx)` naming another entry).
#[test]
fn a_restarted_follower_does_not_take_answers_meant_for_its_previous_life() {
    let (mut sim, leader) = three_nodes_led(3);
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

/// Runs until node `pid` runs configuration `config_id`, for at most `steps` steps.
fn run_until_in(sim: &mut Sim, pid: u64, config_id: u32, steps: usize) -> bool {
    for _ in 0..steps {
        if sim.configuration(pid) == Some(config_id) {
            return true;
        }
        sim.step();
    }
    sim.configuration(pid) == Some(config_id)
}

/// A node down while the cluster moved on twice restarted in the first configuration, which
/// its peers kept only as an idle log: nobody answered it, and it never caught up. Ended
/// configurations now run until every other node of theirs was heard from in a later one.
#[test]
fn a_node_down_for_two_reconfigurations_catches_up() {
    let (mut sim, leader) = three_nodes_led(11);
    let lagger = if leader == 1 { 2 } else { 1 };
    let first = sim.append(leader, 10);
    sim.run(20);
    sim.crash(lagger);
    for config_id in [2, 3] {
        let proposer = (1..=3).find(|&p| p != lagger).unwrap_or(1);
        sim.reconfigure(proposer, vec![1, 2, 3]).unwrap();
        let others: Vec<u64> = (1..=3).filter(|&p| p != lagger).collect();
        for p in others {
            assert!(
                run_until_in(&mut sim, p, config_id, 300),
                "node {p} reaches {config_id}"
            );
        }
    }
    sim.restart(lagger);
    assert!(
        run_until_in(&mut sim, lagger, 3, 600),
        "the restarted node reaches configuration 3"
    );
    let from_lagger = sim.append(lagger, 11);
    sim.run(300);
    assert!(matches!(sim.outcome(first), Some(Ok(0))));
    assert!(matches!(sim.outcome(from_lagger), Some(Ok(_))));
    sim.check_outcomes().unwrap();
}

/// A node left out of configuration 2 lost its link to the leader as configuration 1 ended;
/// still linked to the third node, it stood in configuration 1, won it (the third node's ended
/// instance promised, with the decided StopSign) and answered a read with a point in
/// configuration 1, missing a write acknowledged in configuration 2 before the read was made.
/// Reads are no longer answered from an ended configuration: they are asked again in the next
/// one, or time out on a node that retires.
#[test]
fn a_read_on_a_node_leaving_with_an_ended_configuration_is_never_stale() {
    let (mut sim, leader) = three_nodes_led(13);
    let late = if leader == 3 { 2 } else { 3 };
    let third = 6 - leader - late;
    sim.disconnect(late, leader);
    sim.reconfigure(leader, vec![leader, third]).unwrap();
    assert!(run_until_in(&mut sim, leader, 2, 300));
    let written = sim.append(leader, 20);
    for _ in 0..100 {
        if sim.outcome(written).is_some() {
            break;
        }
        sim.step();
    }
    assert!(
        matches!(sim.outcome(written), Some(Ok(0))),
        "{:?}",
        sim.outcome(written)
    );
    let reads: Vec<_> = (0..40)
        .map(|_| {
            sim.run(2);
            sim.read(late)
        })
        .collect();
    sim.run(600);
    for read in reads {
        assert!(
            !matches!(sim.read_outcome(read), Some(Ok(p)) if p.config_id == 1),
            "{:?}",
            sim.read_outcome(read)
        );
    }
    sim.check_outcomes().unwrap();
}
