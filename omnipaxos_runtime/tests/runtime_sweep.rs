//! Random fault schedules on whole runtime nodes (engine, core, storage) on the simulator:
//! appends, linearizable reads, decided-entry subscriptions and reconfigurations (the same
//! nodes, or one fewer) on every node while nodes crash and restart and connections break and
//! come back; then every fault heals. Every outcome must
//! be exact (`RuntimeSimulation::check_outcomes`: an `Ok(idx)` is the entry decided at `idx` on
//! every node, "never decided" errors are never decided, nothing is decided twice, a read
//! covers every append acknowledged before it, a subscriber gets the decided log in order),
//! and the healed cluster must decide an append and answer a read on every node. 600 schedules here; `SIM_SEEDS=N` runs N.

use omnipaxos::simulation::SimRng;
use omnipaxos_runtime::simulation::RuntimeSimulation;
use omnipaxos_storage::memory_storage::MemoryStorage;

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

/// One schedule; `Err` names the seed and what broke.
fn schedule(seed: u64) -> Result<(), String> {
    let n: u64 = if seed % 3 == 0 { 5 } else { 3 };
    let pids: Vec<u64> = (1..=n).collect();
    let mut sim = RuntimeSimulation::new(pids.clone(), seed, |_| MemoryStorage::<u64>::default());
    let mut rng = SimRng::new(seed ^ 0x5eed_5eed);
    let mut next_value = seed * 1_000_000;
    let mut value = || {
        next_value += 1;
        next_value
    };
    let mut down: Vec<u64> = Vec::new();
    for step in 0..300 {
        let pid = *rng.pick(&pids).unwrap_or(&1);
        let other = *rng.pick(&pids).unwrap_or(&1);
        match rng.range(0, 99) {
            0..=29 => {
                sim.append(pid, value());
            }
            30..=33 => {
                sim.read(pid);
            }
            34 => {
                sim.subscribe(pid, rng.range(0, 3) as usize);
            }
            35..=36 if !down.contains(&pid) && down.len() + 1 < pids.len() => {
                sim.crash(pid);
                down.push(pid);
            }
            37..=40 if !down.is_empty() => {
                let back = down.remove(0);
                sim.restart(back);
            }
            41..=43 if pid != other => sim.disconnect(pid, other),
            44..=48 if pid != other => sim.reconnect(pid, other),
            // Now and then the next configuration: the same nodes, or (of four or more) all but
            // one.
            49 if step > 50 && rng.range(0, 3) == 0 => {
                let mut next = sim
                    .core(pid)
                    .map(|op| op.get_config().cluster_config.nodes.clone())
                    .unwrap_or_default();
                if next.len() > 3 {
                    next.retain(|p| *p != other);
                }
                let _ = sim.reconfigure(pid, next);
            }
            _ => {}
        }
        sim.step();
        if step % 50 == 49 {
            sim.check_outcomes()
                .map_err(|e| format!("seed {seed}, step {step}: {e}"))?;
        }
    }
    // Liveness: every fault heals, every append of a live caller resolves, and every node's
    // next append is decided.
    sim.reconnect_all();
    for pid in down.drain(..) {
        sim.restart(pid);
    }
    sim.run(600);
    // Retired nodes left the cluster: their appends are refused, by design.
    let serving: Vec<u64> = pids.iter().copied().filter(|&p| !sim.retired(p)).collect();
    let last: Vec<_> = serving
        .iter()
        .map(|&pid| sim.append(pid, value()))
        .collect();
    sim.run(300);
    let reads: Vec<_> = serving.iter().map(|&pid| sim.read(pid)).collect();
    let subscription = sim.subscribe(serving[0], 0);
    sim.run(300);
    for (pid, id) in serving.iter().zip(reads) {
        if !matches!(sim.read_outcome(id), Some(Ok(_))) {
            let state = sim.core(*pid).map(|op| {
                (
                    op.get_config().cluster_config.configuration_id,
                    op.get_current_leader(),
                    op.get_decided_idx(),
                    op.is_reconfigured().is_some(),
                )
            });
            let configs: Vec<_> = pids.iter().map(|&p| sim.configuration(p)).collect();
            return Err(format!(
                "seed {seed}: node {pid}'s read after healing: {:?} (configuration, leader, \
                 decided, ended: {state:?}; every node's configuration: {configs:?})",
                sim.read_outcome(id)
            ));
        }
    }
    // A subscriber from 0 got the node's whole history, up to its current log's decided end.
    let current = sim.configuration(serving[0]);
    let decided = sim.core(serving[0]).map_or(0, |op| op.get_decided_idx());
    let received = sim.received(subscription);
    let in_current = received
        .iter()
        .filter(|e| Some(e.config_id) == current)
        .count();
    if in_current != decided || received.first().map(|e| (e.config_id, e.idx)) != Some((1, 0)) {
        return Err(format!(
            "seed {seed}: a subscriber from 0 received {} entries, {in_current} of the {decided} \
             decided in configuration {current:?}",
            received.len()
        ));
    }
    for (pid, id) in serving.iter().zip(last) {
        match sim.outcome(id) {
            Some(Ok(_)) => {}
            other => {
                return Err(format!(
                    "seed {seed}: node {pid}'s append after healing: {other:?}"
                ))
            }
        }
    }
    sim.check_outcomes()
        .map_err(|e| format!("seed {seed}, after healing: {e}"))
}

#[test]
fn runtime_nodes_give_exact_outcomes_under_random_faults_and_recover() {
    let failures: Vec<String> = (0..seeds()).filter_map(|s| schedule(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} schedules failed:\n{}",
        failures.len(),
        seeds(),
        failures.join("\n")
    );
}
