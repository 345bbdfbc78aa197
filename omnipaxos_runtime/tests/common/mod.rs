//! A small cluster on the in-memory transport, and helpers to wait for what the tests need.

#![allow(dead_code)]

pub mod proxy;

use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_runtime::transport::memory::MemoryNetwork;
use omnipaxos_runtime::{spawn_actor, Metrics, OmniPaxosHandle, RuntimeConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::future::Future;
use std::time::Duration;

/// Guards every wait: a test that cannot make progress fails instead of hanging. Generous, so
/// that a slow machine only makes tests slower, never failing.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(out) => out,
        Err(_) => panic!("no progress within {PATIENCE:?}: {what}"),
    }
}

pub fn server_config(pid: u64) -> ServerConfig {
    ServerConfig {
        pid,
        // The runtime's recommended rounds (300 ms at 10 ms ticks): a loaded test machine
        // does not cause elections.
        election_tick_timeout: omnipaxos_runtime::config::DEFAULT_ELECTION_TICKS,
        resend_message_tick_timeout: omnipaxos_runtime::config::DEFAULT_RESEND_TICKS,
        ..Default::default()
    }
}

pub fn cluster_config(nodes: &[u64]) -> ClusterConfig {
    config(1, nodes)
}

/// Configuration `id` of `nodes`.
pub fn config(id: u32, nodes: &[u64]) -> ClusterConfig {
    ClusterConfig {
        configuration_id: id,
        nodes: nodes.to_vec(),
        ..Default::default()
    }
}

/// Starts one node per transport, on memory storage, with the tests' server settings.
pub fn spawn_nodes<Tr: omnipaxos_runtime::transport::Transport<u64>>(
    nodes: &[u64],
    transports: Vec<Tr>,
) -> Vec<OmniPaxosHandle<u64>> {
    nodes
        .iter()
        .zip(transports)
        .map(|(&pid, transport)| {
            let op: OmniPaxos<u64, MemoryStorage<u64>> = cluster_config(nodes)
                .build_for_server(server_config(pid), MemoryStorage::default())
                .expect("valid config");
            spawn_actor(op, RuntimeConfig::default(), transport)
        })
        .collect()
}

pub fn memory_cluster(nodes: &[u64]) -> (MemoryNetwork<u64>, Vec<OmniPaxosHandle<u64>>) {
    let net = MemoryNetwork::new();
    let handles = spawn_nodes(nodes, nodes.iter().map(|_| net.transport()).collect());
    (net, handles)
}

/// Waits until `handle`'s metrics satisfy `ready`, and returns them.
pub async fn wait_metrics(
    handle: &OmniPaxosHandle<u64>,
    what: &str,
    ready: impl FnMut(&Metrics) -> bool,
) -> Metrics {
    let mut rx = handle.metrics();
    within(
        what,
        async move { rx.wait_for(ready).await.map(|m| m.clone()) },
    )
    .await
    .expect("node running")
}

/// Metrics published after this call (the node publishes every tick).
pub async fn fresh_metrics(handle: &OmniPaxosHandle<u64>) -> Metrics {
    let mut rx = handle.metrics();
    rx.borrow_and_update();
    within("a metrics update", async {
        let _ = rx.changed().await;
        let _ = rx.changed().await;
    })
    .await;
    let m = rx.borrow().clone();
    m
}

/// Waits until every handle sees the same leader, one of them, in the accept phase; returns
/// its pid.
pub async fn wait_leader(handles: &[OmniPaxosHandle<u64>]) -> u64 {
    within("a leader everywhere", async {
        loop {
            let mut views = Vec::new();
            for h in handles {
                views.push(fresh_metrics(h).await);
            }
            let leader = views[0].leader.unwrap_or(0);
            let agreed = views.iter().all(|m| m.leader == Some(leader));
            let leads = views
                .iter()
                .any(|m| m.pid == leader && m.role == omnipaxos_runtime::Role::Leader);
            if agreed && leads && views.iter().any(|m| m.pid == leader) {
                return leader;
            }
        }
    })
    .await
}

/// The decided log of `handle` as values (`None` for compacted or StopSign slots).
pub async fn decided_log(handle: &OmniPaxosHandle<u64>) -> Vec<Option<u64>> {
    let entries = handle
        .read_decided_suffix(0)
        .await
        .expect("running")
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|e| match e {
            LogEntry::Decided(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// Waits until `handle` decided at least `idx + 1` entries.
pub async fn wait_decided(handle: &OmniPaxosHandle<u64>, len: usize) {
    wait_metrics(handle, "decided entries", |m| m.decided_idx >= len).await;
}

/// Binds one TCP transport per node on 127.0.0.1 (port 0) and tells each the others' addresses.
pub fn tcp_transports(
    nodes: &[u64],
    configure: impl Fn(u64, &mut omnipaxos_runtime::NetworkConfig),
) -> Vec<omnipaxos_runtime::transport::tcp::TcpTransport<u64>> {
    use omnipaxos_runtime::transport::Transport;
    let mut transports: Vec<_> = nodes
        .iter()
        .map(|&pid| {
            let mut config = omnipaxos_runtime::NetworkConfig::new(
                "127.0.0.1:0".parse().expect("address"),
                Default::default(),
            );
            configure(pid, &mut config);
            omnipaxos_runtime::transport::tcp::TcpTransport::bind(pid, config).expect("bind")
        })
        .collect();
    let addresses: Vec<String> = transports
        .iter()
        .map(|t| t.local_addr().expect("bound").to_string())
        .collect();
    for (i, t) in transports.iter_mut().enumerate() {
        for (j, &pid) in nodes.iter().enumerate() {
            if i != j {
                t.add_peer(pid, Some(addresses[j].clone()));
            }
        }
    }
    transports
}

/// What tests appended and what became of it. A leader change makes some outcomes unknown
/// (`InDoubt`, `Timeout`); such values may be decided at most once, never twice.
#[derive(Default, Debug)]
pub struct Ledger {
    pub decided: Vec<(u64, usize)>,
    pub in_doubt: Vec<u64>,
}

impl Ledger {
    /// Appends `value` on `handle` and records the outcome; the index if decided.
    pub async fn append(&mut self, handle: &OmniPaxosHandle<u64>, value: u64) -> Option<usize> {
        let result = within("append", handle.append_notify(value)).await;
        self.record(value, result)
    }

    pub fn record(
        &mut self,
        value: u64,
        result: Result<usize, omnipaxos_runtime::AppendError<u64>>,
    ) -> Option<usize> {
        use omnipaxos_runtime::AppendError;
        match result {
            Ok(idx) => {
                self.decided.push((value, idx));
                Some(idx)
            }
            Err(AppendError::InDoubt { .. }) | Err(AppendError::Timeout) => {
                self.in_doubt.push(value);
                None
            }
            // Never proposed.
            Err(AppendError::NoLeader) => None,
            Err(other) => panic!("{value}: unexpected outcome {other}"),
        }
    }

    /// Appends fresh values from `first` on until one is decided; returns (value, index).
    pub async fn append_until_decided(
        &mut self,
        handle: &OmniPaxosHandle<u64>,
        first: u64,
    ) -> (u64, usize) {
        for value in first.. {
            if let Some(idx) = self.append(handle, value).await {
                return (value, idx);
            }
        }
        unreachable!("u64 values run out")
    }

    /// On every handle: each decided value is at the index it was reported at, and no value
    /// appears twice in the decided log.
    pub async fn check(&self, handles: &[OmniPaxosHandle<u64>]) {
        let top = self.decided.iter().map(|(_, i)| i + 1).max().unwrap_or(0);
        for h in handles {
            wait_decided(h, top).await;
            let log = decided_log(h).await;
            for (value, idx) in &self.decided {
                assert_eq!(log[*idx], Some(*value), "{value} was reported at {idx}");
            }
            let mut seen = std::collections::BTreeSet::new();
            for v in log.iter().flatten() {
                assert!(seen.insert(*v), "{v} decided twice: {log:?}");
            }
        }
    }
}

/// Raw frames as the TCP transport writes them (4-byte length, kind byte, body), for tests that
/// play a stranger on the wire.
pub fn raw_frames(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (kind, body) in frames {
        bytes.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
        bytes.push(*kind);
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Writes raw frames to `addr`, as a stranger would (errors ignored: the node may hang up).
pub async fn send_raw(addr: std::net::SocketAddr, frames: &[(u8, Vec<u8>)]) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
        let _ = stream.write_all(&raw_frames(frames)).await;
        let _ = stream.flush().await;
    }
}
