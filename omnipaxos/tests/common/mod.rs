//! Helpers shared by the simulator tests: cluster builders and workload entries.
#![allow(dead_code)]

pub mod node;

use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::messages::Message;
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

/// Servers `1..=n` where server `leader` wins every election it can (highest priority).
pub fn led_by(leader: NodeId, n: u64, seed: u64) -> Sim {
    let mut config = SimConfig::new((1..=n).collect(), seed);
    config.priorities.insert(leader, 10);
    cluster_with(config)
}

/// Matches the Sequence Paxos messages from `from` to `to` that `kind` accepts (for
/// `Simulation::hold` and `copy`).
pub fn paxos_between(
    from: NodeId,
    to: NodeId,
    kind: fn(&PaxosMsg<u64>) -> bool,
) -> impl Fn(&Message<u64>) -> bool {
    move |m| matches!(m, Message::SequencePaxos(p) if p.from == from && p.to == to && kind(&p.msg))
}

/// Matches the Sequence Paxos messages, between any servers, that `kind` accepts.
pub fn paxos_of_kind(kind: fn(&PaxosMsg<u64>) -> bool) -> impl Fn(&Message<u64>) -> bool {
    move |m| matches!(m, Message::SequencePaxos(p) if kind(&p.msg))
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

/// An entry whose log compacts into a running total: used where snapshots matter.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    omnipaxos::macros::Entry,
)]
#[snapshot(Total)]
pub struct Add(pub u64);

/// The application state of an `Add` log: the sum and the number of entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Total {
    pub sum: u64,
    pub count: u64,
}

impl omnipaxos::storage::Snapshot<Add> for Total {
    fn create(entries: &[Add]) -> Self {
        Total {
            sum: entries.iter().map(|a| a.0).sum(),
            count: entries.len() as u64,
        }
    }
    fn merge(&mut self, delta: Self) {
        self.sum += delta.sum;
        self.count += delta.count;
    }
    fn use_snapshots() -> bool {
        true
    }
}

pub type AddSim = Simulation<Add, MemoryStorage<Add>>;

pub fn add_cluster(n: u64, seed: u64) -> AddSim {
    Simulation::new(SimConfig::new((1..=n).collect(), seed), |_| {
        MemoryStorage::default()
    })
}

/// The application state of server `pid`: its snapshot (if any) plus its decided entries.
pub fn total_of<B: omnipaxos::storage::Storage<Add>>(
    server: &omnipaxos::OmniPaxos<Add, B>,
) -> Total {
    use omnipaxos::storage::Snapshot;
    use omnipaxos::util::LogEntry;
    let mut total = Total::default();
    for entry in server.read_decided_suffix(0).unwrap_or_default() {
        match entry {
            LogEntry::Decided(a) => total.merge(Total::create(&[a])),
            LogEntry::Snapshotted(s) => total.merge(s.snapshot),
            LogEntry::Trimmed(_) => panic!("an Add log is never trimmed without a snapshot"),
            LogEntry::StopSign(..) | LogEntry::Undecided(_) => {}
        }
    }
    total
}
