//! Three nodes on `omnipaxos_runtime` in one process, talking TCP on 127.0.0.1. It shows an
//! election, appends from every node resolving with their exact decided index, the leader
//! crashing and a new one taking over, and the crashed node restarting from its storage and
//! catching up. Exits 0 if every node ends with the same log and every reported index is right,
//! 1 otherwise.
//!
//! Run it with `cargo run --release -p local_cluster`.

use omnipaxos::macros::Entry;
use omnipaxos::util::{LogEntry, NodeId};
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_runtime::config::{DEFAULT_ELECTION_TICKS, DEFAULT_RESEND_TICKS};
use omnipaxos_runtime::transport::tcp::TcpTransport;
use omnipaxos_runtime::transport::Transport;
use omnipaxos_runtime::{spawn_actor, NetworkConfig, OmniPaxosHandle, Role, RuntimeConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Entry, serde::Serialize, serde::Deserialize)]
struct KeyValue {
    key: String,
    value: u64,
}

/// A node's storage, kept by `main` so that it outlives a crash of the node.
type Storage = Arc<Mutex<MemoryStorage<KeyValue>>>;
type Node = OmniPaxosHandle<KeyValue>;

const NODES: [NodeId; 3] = [1, 2, 3];

fn start(
    pid: NodeId,
    storage: Storage,
    addrs: &BTreeMap<NodeId, SocketAddr>,
) -> Result<Node, String> {
    let cluster = ClusterConfig {
        configuration_id: 1,
        nodes: NODES.to_vec(),
        ..Default::default()
    };
    let server = ServerConfig {
        pid,
        election_tick_timeout: DEFAULT_ELECTION_TICKS,
        resend_message_tick_timeout: DEFAULT_RESEND_TICKS,
        ..Default::default()
    };
    let op: OmniPaxos<KeyValue, Storage> = cluster
        .build_for_server(server, storage)
        .map_err(|e| e.to_string())?;
    let mut transport = TcpTransport::bind(pid, NetworkConfig::new(addrs[&pid], BTreeMap::new()))
        .map_err(|e| format!("node {pid}: {e}"))?;
    for (&peer, addr) in addrs.iter().filter(|(p, _)| **p != pid) {
        transport.add_peer(peer, Some(addr.to_string()));
    }
    Ok(spawn_actor(op, RuntimeConfig::default(), transport))
}

/// Waits until the nodes agree on a leader among them; returns it.
async fn leader_of(nodes: &BTreeMap<NodeId, Node>) -> NodeId {
    loop {
        let mut views = Vec::new();
        for node in nodes.values() {
            let mut rx = node.metrics();
            let _ = rx.changed().await;
            views.push(rx.borrow().clone());
        }
        let leader = views[0].leader.unwrap_or(0);
        let agreed = views.iter().all(|m| m.leader == Some(leader));
        if agreed
            && views
                .iter()
                .any(|m| m.pid == leader && m.role == Role::Leader)
        {
            return leader;
        }
    }
}

/// Appends `count` entries from every node at once; returns (entry, index) for those decided.
async fn append_from_all(
    nodes: &BTreeMap<NodeId, Node>,
    round: &str,
    count: u64,
) -> Vec<(KeyValue, usize)> {
    let mut tasks = Vec::new();
    for (pid, node) in nodes {
        for i in 0..count {
            let node = node.clone();
            let kv = KeyValue {
                key: format!("{round}-{pid}-{i}"),
                value: i,
            };
            tasks.push(tokio::spawn(async move {
                (kv.clone(), node.append_notify(kv).await)
            }));
        }
    }
    let mut decided = Vec::new();
    for t in tasks {
        if let Ok((kv, result)) = t.await {
            match result {
                Ok(idx) => decided.push((kv, idx)),
                Err(e) => println!("  {}: {e}", kv.key),
            }
        }
    }
    decided
}

async fn log_of(node: &Node) -> Vec<Option<KeyValue>> {
    let entries = node
        .read_decided_suffix(0)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|e| match e {
            LogEntry::Decided(kv) => Some(kv),
            _ => None,
        })
        .collect()
}

async fn run() -> Result<(), String> {
    let t0 = Instant::now();
    let say = |msg: String| println!("[{:6.2}s] {msg}", t0.elapsed().as_secs_f64());
    let mut addrs = BTreeMap::new();
    for pid in NODES {
        // Reserve a free port for each node: every node must know the others' addresses.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        addrs.insert(pid, probe.local_addr().map_err(|e| e.to_string())?);
    }
    let storages: BTreeMap<NodeId, Storage> =
        NODES.iter().map(|&p| (p, Storage::default())).collect();
    let mut nodes = BTreeMap::new();
    for pid in NODES {
        nodes.insert(pid, start(pid, storages[&pid].clone(), &addrs)?);
    }
    say(format!(
        "started nodes {NODES:?} on {:?}",
        addrs.values().collect::<Vec<_>>()
    ));
    let leader = leader_of(&nodes).await;
    say(format!("node {leader} is the leader"));

    let mut decided = append_from_all(&nodes, "a", 100).await;
    let mut metrics = nodes[&leader].metrics();
    let _ = metrics.changed().await; // published every tick
    let writes = metrics.borrow().storage_writes;
    say(format!("{} appends from all three nodes decided, each with its exact index ({writes} storage writes on the leader)", decided.len()));

    say(format!("crashing the leader, node {leader}"));
    if let Some(node) = nodes.remove(&leader) {
        node.shutdown().await;
    }
    let t_crash = Instant::now();
    let next = leader_of(&nodes).await;
    say(format!(
        "node {next} took over after {:.2}s",
        t_crash.elapsed().as_secs_f64()
    ));
    decided.extend(append_from_all(&nodes, "b", 100).await);

    say(format!("restarting node {leader} from its storage"));
    nodes.insert(leader, start(leader, storages[&leader].clone(), &addrs)?);
    let target = nodes[&next]
        .decided_idx()
        .await
        .map_err(|e| e.to_string())?;
    let mut rx = nodes[&leader].metrics();
    rx.wait_for(|m| m.decided_idx >= target)
        .await
        .map_err(|e| e.to_string())?;
    say(format!("node {leader} caught up to index {target}"));

    let logs: Vec<_> = futures_join(&nodes).await;
    let reference = &logs[0];
    let mut ok = logs.iter().all(|l| l[..target] == reference[..target]);
    for (kv, idx) in &decided {
        ok &= reference.get(*idx) == Some(&Some(kv.clone()));
    }
    for node in nodes.values() {
        node.shutdown().await;
    }
    if ok {
        say(format!(
            "every node holds the same {target} entries; all {} reported indices are right",
            decided.len()
        ));
        Ok(())
    } else {
        Err("the logs differ, or an index was wrong".into())
    }
}

async fn futures_join(nodes: &BTreeMap<NodeId, Node>) -> Vec<Vec<Option<KeyValue>>> {
    let mut logs = Vec::new();
    for node in nodes.values() {
        logs.push(log_of(node).await);
    }
    logs
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("local_cluster failed: {e}");
        std::process::exit(1);
    }
}
