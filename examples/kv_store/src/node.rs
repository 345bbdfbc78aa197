//! One node: the task that owns the `OmniPaxos` instance (no lock, no await while it holds
//! it), fed by the peer transport, a tick every `tick_ms`, and client requests. A request is
//! answered when its entry is decided and applied here; if that takes longer than
//! `REQUEST_TIMEOUT` (an election, a partition) it is answered with an error.

use crate::config::NodeConfig;
use crate::entry::{KvCommand, KvState, Outcome, RequestId};
use crate::net::{self, NetEvent, Peers};
use omnipaxos::OmniPaxos;
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a request may wait for its decision.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Compact the log into a snapshot every this many applied entries.
const SNAPSHOT_EVERY: usize = 1000;

type Server = OmniPaxos<KvCommand, PersistentStorage<KvCommand>>;

/// A client request and where to send its outcome.
pub enum Request {
    Propose(KvCommandKind, oneshot::Sender<Result<Outcome, String>>),
    Status(oneshot::Sender<Status>),
}

/// A request before it gets its id.
pub enum KvCommandKind {
    Put { key: String, value: String },
    Delete { key: String },
    Read { key: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub pid: u64,
    pub leader: Option<u64>,
    pub leader_ready: bool,
    pub ballot: (u32, u64),
    pub decided_idx: usize,
    pub applied_idx: usize,
    pub compacted_idx: usize,
    pub configuration_id: u32,
    pub peers_connected: Vec<u64>,
    pub keys: usize,
}

struct Waiter {
    reply: oneshot::Sender<Result<Outcome, String>>,
    deadline: Instant,
}

pub struct Node {
    server: Server,
    state: KvState,
    peers: Peers,
    configuration_id: u32,
    next_request: u64,
    waiters: HashMap<RequestId, Waiter>,
    outgoing: Vec<net::Msg>,
    last_leader: Option<u64>,
    last_snapshot: usize,
}

impl Node {
    pub fn open(config: &NodeConfig, peers: Peers) -> Result<Self, String> {
        let storage_config =
            PersistentStorageConfig::with_path(config.data_dir.to_string_lossy().to_string());
        let storage = PersistentStorage::try_open(storage_config)
            .map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
        let server = config
            .omnipaxos
            .clone()
            .build(storage)
            .map_err(|e| e.to_string())?;
        let mut node = Node {
            server,
            state: KvState::default(),
            peers,
            configuration_id: config.omnipaxos.cluster_config.configuration_id,
            next_request: 0,
            waiters: HashMap::new(),
            outgoing: Vec::new(),
            last_leader: None,
            last_snapshot: 0,
        };
        node.apply_decided();
        if node.state.applied_idx > 0 {
            tracing::info!(
                applied = node.state.applied_idx,
                keys = node.state.map.len(),
                "recovered the state from storage"
            );
        }
        node.last_snapshot = node.state.applied_idx;
        Ok(node)
    }

    /// The node's loop; returns when every input is closed.
    pub async fn run(
        mut self,
        tick: Duration,
        mut net: mpsc::Receiver<NetEvent>,
        mut requests: mpsc::Receiver<Request>,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.server.tick();
                    self.expire_waiters();
                }
                event = net.recv() => match event {
                    Some(NetEvent::Message(m)) => self.server.handle_incoming(*m),
                    Some(NetEvent::Reconnected(pid)) => self.server.reconnected(pid),
                    None => return,
                },
                request = requests.recv() => match request {
                    Some(r) => self.handle_request(r),
                    None => return,
                },
            }
            self.server.take_outgoing_messages(&mut self.outgoing);
            for msg in self.outgoing.drain(..) {
                self.peers.send(msg);
            }
            self.apply_decided();
            self.log_leader_change();
        }
    }

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Propose(kind, reply) => {
                self.next_request += 1;
                let id = (self.server.get_pid(), self.next_request);
                let cmd = match kind {
                    KvCommandKind::Put { key, value } => KvCommand::Put { id, key, value },
                    KvCommandKind::Delete { key } => KvCommand::Delete { id, key },
                    KvCommandKind::Read { key } => KvCommand::Read { id, key },
                };
                match self.server.append(cmd) {
                    Ok(()) => {
                        let deadline = Instant::now() + REQUEST_TIMEOUT;
                        self.waiters.insert(id, Waiter { reply, deadline });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("not accepted: {e}")));
                    }
                }
            }
        }
    }

    fn apply_decided(&mut self) {
        let Some(entries) = self.server.read_decided_suffix(self.state.applied_idx) else {
            return;
        };
        for (id, outcome) in self.state.apply(entries) {
            if let Some(w) = self.waiters.remove(&id) {
                let _ = w.reply.send(Ok(outcome));
            }
        }
        if self.state.applied_idx >= self.last_snapshot + SNAPSHOT_EVERY {
            if let Err(e) = self.server.snapshot(Some(self.state.applied_idx), true) {
                tracing::warn!("snapshot failed: {e}");
            }
            self.last_snapshot = self.state.applied_idx;
        }
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        let expired: Vec<RequestId> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiters.remove(&id) {
                let _ = w.reply.send(Err(format!(
                    "not decided within {} s (a leader election or a partition?); it may still be applied later",
                    REQUEST_TIMEOUT.as_secs()
                )));
            }
        }
    }

    fn log_leader_change(&mut self) {
        let leader = self
            .server
            .get_current_leader()
            .filter(|(_, ready)| *ready)
            .map(|(pid, _)| pid);
        if leader.is_some() && leader != self.last_leader {
            tracing::info!(leader = leader.unwrap_or(0), "leader change");
            self.last_leader = leader;
        }
    }

    fn status(&self) -> Status {
        let promise = self.server.get_promise();
        let leader = self.server.get_current_leader();
        Status {
            pid: self.server.get_pid(),
            leader: leader.map(|(pid, _)| pid),
            leader_ready: leader.is_some_and(|(_, ready)| ready),
            ballot: (promise.n, promise.pid),
            decided_idx: self.server.get_decided_idx(),
            applied_idx: self.state.applied_idx,
            compacted_idx: self.server.get_compacted_idx(),
            configuration_id: self.configuration_id,
            peers_connected: self.peers.connected(),
            keys: self.state.map.len(),
        }
    }
}
