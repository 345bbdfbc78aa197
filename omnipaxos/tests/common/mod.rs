//! Helpers shared by the simulator tests: cluster builders and workload entries.
#![allow(dead_code)]

use omnipaxos::simulation::{NetworkConfig, SimConfig, Simulation};
use omnipaxos::util::NodeId;
use omnipaxos_storage::memory_storage::MemoryStorage;

pub type Sim = Simulation<u64, MemoryStorage<u64>>;

/// Ticks per election round in the simulator's default config.
pub const ELECTION_TICKS: usize = 5;

/// A cluster of servers `1..=n` on a reliable network.
pub fn cluster(n: u64, seed: u64) -> Sim {
    cluster_with(SimConfig::new((1..=n).collect(), seed))
}

pub fn cluster_with(config: SimConfig) -> Sim {
    Simulation::new(config, |_| MemoryStorage::default())
}

/// A cluster on a network that loses, duplicates and reorders.
pub fn lossy_cluster(n: u64, seed: u64) -> Sim {
    let mut config = SimConfig::new((1..=n).collect(), seed);
    config.server_config.election_tick_timeout = 10;
    config.network = NetworkConfig::lossy(0.05, 0.05, 2);
    cluster_with(config)
}

/// Runs until a leader is in the accept phase, failing the test with the seed otherwise.
pub fn elect(sim: &mut Sim, max_steps: usize) -> NodeId {
    sim.run_until_leader(max_steps)
        .unwrap_or_else(|e| panic!("no leader: {e}"))
}

/// Runs until every live server decided `idx`, failing the test with the seed otherwise.
pub fn decide_all(sim: &mut Sim, idx: usize, max_steps: usize) {
    sim.run_until(max_steps, |s| s.all_decided(idx))
        .unwrap_or_else(|e| {
            let decided: Vec<_> = s_decided(sim);
            panic!("not decided {idx} everywhere: {e}; decided indexes {decided:?}")
        });
}

pub fn s_decided(sim: &Sim) -> Vec<(NodeId, usize)> {
    sim.live_pids()
        .into_iter()
        .map(|p| (p, sim.server(p).unwrap().get_decided_idx()))
        .collect()
}

/// The decided entries of server `pid`, in order.
pub fn decided_values(sim: &Sim, pid: NodeId) -> Vec<u64> {
    use omnipaxos::util::LogEntry;
    let server = sim.server(pid).expect("live server");
    server
        .read_decided_suffix(0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            LogEntry::Decided(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// The last Sequence Paxos events of the trace (heartbeats left out), for failure messages.
pub fn recent_protocol_events(sim: &Sim) -> String {
    let lines: Vec<&String> = sim.trace().filter(|l| !l.contains("Heartbeat")).collect();
    let start = lines.len().saturating_sub(80);
    lines[start..]
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
