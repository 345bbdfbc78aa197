//! One node: the task that owns the `OmniPaxos` instance (no lock, no await while it holds
//! it), fed by the peer transport, a tick every `tick_ms`, and client requests. A write is
//! answered when its entry is decided and applied here. A read goes through the core's read
//! index (`OmniPaxos::read_index`, nothing written to the log) and is answered from this node's
//! map once it has applied up to the read's index; a read that fails (a leader change, no
//! leader yet) is asked again on the next tick. Anything that takes longer than
//! `REQUEST_TIMEOUT` (an election, a partition) is answered with an error.
//!
//! Reconfiguration: when the current configuration's StopSign is decided, the node keeps the
//! `Handover` (served at `GET /handover` to nodes that join), and if it belongs to the next
//! configuration it starts that configuration's instance on a new store directory, keeping the
//! map; otherwise it retires. Every configuration has its own directory `data_dir/config-<id>`,
//! so a restart replays them in order.

use crate::config::NodeConfig;
use crate::entry::{KvCommand, KvState, Outcome, RequestId};
use crate::net::{self, NetEvent, Peers};
use omnipaxos::reconfiguration::Handover;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a request may wait for its decision.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Compact the log into a snapshot every this many applied entries.
const SNAPSHOT_EVERY: usize = 1000;
/// How long a joining node tries to fetch the handover.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

type Server = OmniPaxos<KvCommand, PersistentStorage<KvCommand>>;
pub type KvHandover = Handover<KvCommand>;

/// A client request and where to send its outcome.
pub enum Request {
    Propose(KvCommandKind, oneshot::Sender<Result<Outcome, String>>),
    Status(oneshot::Sender<Status>),
    /// Propose the next configuration; the metadata carries the new nodes' peer addresses.
    Reconfigure(
        ClusterConfig,
        BTreeMap<u64, SocketAddr>,
        oneshot::Sender<Result<(), String>>,
    ),
    Handover(oneshot::Sender<Option<KvHandover>>),
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
    pub nodes: Vec<u64>,
    pub retired: bool,
    pub peers_connected: Vec<u64>,
    pub keys: usize,
}

struct Waiter {
    reply: oneshot::Sender<Result<Outcome, String>>,
    deadline: Instant,
}

/// A linearizable read: asked of the core, then waiting for its index to be applied here.
struct PendingRead {
    key: String,
    waiter: Waiter,
    /// The read index, once the core gave it.
    index: Option<usize>,
}

pub struct Node {
    server: Server,
    server_config: ServerConfig,
    read_lease: Option<omnipaxos::ReadLease>,
    cluster: ClusterConfig,
    data_dir: PathBuf,
    state: KvState,
    peers: Peers,
    next_request: u64,
    waiters: HashMap<RequestId, Waiter>,
    /// Reads by their number (`ctx` of the core's read index).
    reads: HashMap<u64, PendingRead>,
    /// Reads to ask (again) of the core on the next tick: not asked yet, or failed.
    reads_to_ask: Vec<u64>,
    outgoing: Vec<net::Msg>,
    last_leader: Option<u64>,
    last_snapshot: usize,
    handover: Option<KvHandover>,
    retired: bool,
    /// The instance of the configuration this node ended last, kept running (sealed: it takes
    /// no entries) so that nodes which missed the StopSign still learn it from us.
    previous: Option<(u32, Server)>,
}

fn open_instance(
    data_dir: &Path,
    cluster: &ClusterConfig,
    server: &ServerConfig,
    read_lease: Option<omnipaxos::ReadLease>,
) -> Result<Server, String> {
    let dir = data_dir.join(format!("config-{}", cluster.configuration_id));
    let storage = PersistentStorage::try_open(PersistentStorageConfig::with_path(
        dir.to_string_lossy().to_string(),
    ))
    .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let mut instance = cluster
        .clone()
        .build_for_server(server.clone(), storage)
        .map_err(|e| e.to_string())?;
    instance.set_read_lease(read_lease);
    Ok(instance)
}

/// Fetches the handover from a node of the previous configuration (blocking, with retries),
/// or reads the copy saved when this node first joined.
fn join_state(data_dir: &Path, from: SocketAddr) -> Result<KvHandover, String> {
    let saved = data_dir.join("handover.json");
    if let Ok(text) = std::fs::read_to_string(&saved) {
        return serde_json::from_str(&text).map_err(|e| format!("{}: {e}", saved.display()));
    }
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        if let Ok(r) = crate::client::request(from, "GET", "/handover", "", Duration::from_secs(5))
        {
            if r.status == 200 {
                let handover: KvHandover = serde_json::from_value(r.body)
                    .map_err(|e| format!("handover from {from}: {e}"))?;
                std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
                let text = serde_json::to_string(&handover).map_err(|e| e.to_string())?;
                std::fs::write(&saved, text).map_err(|e| format!("{}: {e}", saved.display()))?;
                return Ok(handover);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no handover from {from} within {} s",
                JOIN_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where this life's request numbers start: random in the 64-bit space, so that a node that
/// restarts never reuses a number of an earlier life. Otherwise an entry of the earlier life,
/// decided late, would carry the same `(pid, number)` as a new request and answer it.
fn first_request_number() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    // Leave room below u64::MAX so that the counter never wraps in one life.
    h.finish() >> 1
}

impl Node {
    pub fn open(config: &NodeConfig, peers: Peers) -> Result<Self, String> {
        let mut state = KvState::default();
        if let Some(from) = config.join_from {
            let handover = join_state(&config.data_dir, from)?;
            if let Some(snapshot) = handover.complete_snapshot() {
                state.map = snapshot
                    .map
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect();
            }
            tracing::info!(keys = state.map.len(), %from, "joined with the state of the previous configuration");
        }
        let cluster = config.omnipaxos.cluster_config.clone();
        let server_config = config.omnipaxos.server_config.clone();
        let server = open_instance(
            &config.data_dir,
            &cluster,
            &server_config,
            config.read_lease,
        )?;
        let mut node = Node {
            server,
            server_config,
            read_lease: config.read_lease,
            cluster,
            data_dir: config.data_dir.clone(),
            state,
            peers,
            next_request: first_request_number(),
            waiters: HashMap::new(),
            reads: HashMap::new(),
            reads_to_ask: Vec::new(),
            outgoing: Vec::new(),
            last_leader: None,
            last_snapshot: 0,
            handover: None,
            retired: false,
            previous: None,
        };
        node.apply_decided()?;
        if node.state.applied_idx > 0
            || node.cluster.configuration_id != config.omnipaxos.cluster_config.configuration_id
        {
            tracing::info!(
                configuration = node.cluster.configuration_id,
                keys = node.state.map.len(),
                "recovered the state from storage"
            );
        }
        node.last_snapshot = node.state.applied_idx;
        Ok(node)
    }

    /// The pids the transport accepts connections from.
    pub fn allowed_peers(&self) -> net::Allowed {
        self.peers.allowed()
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
                    if let Some((_, previous)) = &mut self.previous {
                        previous.tick();
                    }
                    self.expire_waiters();
                    self.ask_reads();
                }
                event = net.recv() => match event {
                    Some(NetEvent::Message(config_id, m)) => {
                        if config_id == self.cluster.configuration_id {
                            self.server.handle_incoming(*m);
                        } else if let Some((previous_id, previous)) = &mut self.previous {
                            // A node still in the configuration we ended: answer it from there.
                            if *previous_id == config_id {
                                previous.handle_incoming(*m);
                            }
                        }
                    }
                    Some(NetEvent::Reconnected(pid)) => {
                        self.server.reconnected(pid);
                        if let Some((_, previous)) = &mut self.previous {
                            previous.reconnected(pid);
                        }
                    }
                    None => return,
                },
                request = requests.recv() => match request {
                    Some(r) => self.handle_request(r),
                    None => return,
                },
            }
            self.server.take_outgoing_messages(&mut self.outgoing);
            for msg in self.outgoing.drain(..) {
                self.peers.send(self.cluster.configuration_id, msg);
            }
            if let Some((previous_id, previous)) = &mut self.previous {
                previous.take_outgoing_messages(&mut self.outgoing);
                for msg in self.outgoing.drain(..) {
                    self.peers.send(*previous_id, msg);
                }
            }
            if let Err(e) = self.apply_decided() {
                tracing::error!("stopping: {e}");
                return;
            }
            self.serve_reads();
            self.log_leader_change();
        }
    }

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Handover(reply) => {
                let _ = reply.send(self.handover.clone());
            }
            Request::Reconfigure(next, new_peers, reply) => {
                let metadata = serde_json::to_vec(&new_peers).ok();
                let result = self
                    .server
                    .reconfigure(next, metadata)
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            Request::Propose(kind, reply) => {
                if self.retired {
                    let _ = reply.send(Err(format!(
                        "this node left the cluster when configuration {} ended",
                        self.cluster.configuration_id
                    )));
                    return;
                }
                self.next_request = self.next_request.wrapping_add(1);
                let id = (self.server.get_pid(), self.next_request);
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                let cmd = match kind {
                    KvCommandKind::Put { key, value } => KvCommand::Put { id, key, value },
                    KvCommandKind::Delete { key } => KvCommand::Delete { id, key },
                    KvCommandKind::Read { key } => {
                        let ctx = self.next_request;
                        let waiter = Waiter { reply, deadline };
                        let read = PendingRead {
                            key,
                            waiter,
                            index: None,
                        };
                        self.reads.insert(ctx, read);
                        self.ask_read(ctx);
                        return;
                    }
                };
                match self.server.append(cmd) {
                    Ok(()) => {
                        self.waiters.insert(id, Waiter { reply, deadline });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("not accepted: {e:?}")));
                    }
                }
            }
        }
    }

    /// Applies what was decided since the last call; moves to the next configuration when the
    /// current one ended.
    fn apply_decided(&mut self) -> Result<(), String> {
        loop {
            if let Some(entries) = self.server.read_decided_suffix(self.state.applied_idx) {
                for (id, outcome) in self.state.apply(entries) {
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.reply.send(Ok(outcome));
                    }
                }
            }
            if self.state.applied_idx >= self.last_snapshot + SNAPSHOT_EVERY {
                if let Err(e) = self.server.snapshot(Some(self.state.applied_idx), true) {
                    tracing::warn!("snapshot failed: {e}");
                }
                self.last_snapshot = self.state.applied_idx;
            }
            match self.server.is_reconfigured() {
                Some(ss) if !self.retired => self.next_configuration(ss)?,
                _ => return Ok(()),
            }
            if self.retired {
                return Ok(());
            }
        }
    }

    fn next_configuration(&mut self, ss: omnipaxos::storage::StopSign) -> Result<(), String> {
        self.handover = self.server.handover();
        let next = ss.next_config;
        let me = self.server.get_pid();
        tracing::info!(
            ended = self.cluster.configuration_id,
            next = next.configuration_id,
            nodes = ?next.nodes,
            "reconfiguration: configuration ended"
        );
        if !next.nodes.contains(&me) {
            tracing::info!("this node is not part of the next configuration: retiring");
            self.retired = true;
            return Ok(());
        }
        if let Some(peers) = ss
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_slice::<BTreeMap<u64, SocketAddr>>(m).ok())
        {
            for (pid, addr) in peers {
                self.peers.add(pid, addr);
            }
        }
        let ended = std::mem::replace(
            &mut self.server,
            open_instance(&self.data_dir, &next, &self.server_config, self.read_lease)?,
        );
        self.previous = Some((self.cluster.configuration_id, ended));
        self.cluster = next;
        self.state.applied_idx = 0;
        self.last_snapshot = 0;
        // Reads asked of the ended configuration are asked again of the next one.
        for (ctx, read) in self.reads.iter_mut() {
            read.index = None;
            self.reads_to_ask.push(*ctx);
        }
        Ok(())
    }

    /// Asks the core for read `ctx`'s index; if it cannot start now (no leader yet, the
    /// configuration just ended), it is asked again on the next tick.
    fn ask_read(&mut self, ctx: u64) {
        if self.retired {
            if let Some(read) = self.reads.remove(&ctx) {
                let _ = read.waiter.reply.send(Err(format!(
                    "this node left the cluster when configuration {} ended",
                    self.cluster.configuration_id
                )));
            }
            return;
        }
        if self.server.read_index(ctx).is_err() {
            self.reads_to_ask.push(ctx);
        }
    }

    fn ask_reads(&mut self) {
        for ctx in std::mem::take(&mut self.reads_to_ask) {
            if self.reads.contains_key(&ctx) {
                self.ask_read(ctx);
            }
        }
    }

    /// Takes the core's read outcomes and answers every read whose index this node applied.
    fn serve_reads(&mut self) {
        let mut states = Vec::new();
        self.server.take_read_states(&mut states);
        for state in states {
            if let Some(read) = self.reads.get_mut(&state.ctx) {
                read.index = Some(state.index);
            }
        }
        let mut failures = Vec::new();
        self.server.take_read_failures(&mut failures);
        for failure in failures {
            if self.reads.contains_key(&failure.ctx) {
                tracing::debug!(ctx = failure.ctx, reason = %failure.reason, "read failed, asking again");
                self.reads_to_ask.push(failure.ctx);
            }
        }
        let applied = self.state.applied_idx;
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|index| index <= applied))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in ready {
            if let Some(read) = self.reads.remove(&ctx) {
                let value = self.state.map.get(&read.key).cloned();
                let _ = read.waiter.reply.send(Ok(Outcome::Read(value)));
            }
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
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.waiter.deadline <= now)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some(read) = self.reads.remove(&ctx) {
                let _ = read.waiter.reply.send(Err(format!(
                    "no linearizable read within {} s (a leader election or a partition?)",
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
            tracing::info!(
                leader = leader.unwrap_or(0),
                configuration = self.cluster.configuration_id,
                "leader change"
            );
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
            configuration_id: self.cluster.configuration_id,
            nodes: self.cluster.nodes.clone(),
            retired: self.retired,
            peers_connected: self.peers.connected(),
            keys: self.state.map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_request_number;
    use std::collections::BTreeSet;

    #[test]
    fn every_life_of_a_node_numbers_its_requests_from_a_new_start() {
        let starts: BTreeSet<u64> = (0..1000).map(|_| first_request_number()).collect();
        assert_eq!(
            starts.len(),
            1000,
            "two lives started at the same request number"
        );
        assert!(
            starts.iter().all(|s| *s < u64::MAX / 2 + 1),
            "no room to count up"
        );
    }
}
