//! One node: an `omnipaxos_runtime` node (consensus, TCP between nodes, durable storage,
//! reconfiguration) and this service's state machine, applied from the runtime's stream of
//! decided entries.
//!
//! - A write is appended with `append_notify` and answered once the state machine applied it
//!   here. A write that meets an election (no leader yet, the leader went away before it was
//!   decided) is sent again, with the same request id, until the request's deadline; the state
//!   machine applies a write once however many copies are decided ([`crate::machine`]).
//! - A read asks for a linearizable read point (the core's read index, or a lease when
//!   configured; nothing is written to the log) and is answered from this node's map once it
//!   applied up to that point, on followers too.
//! - Reconfiguration is the runtime's: a node moves to the next configuration by itself, and
//!   the new nodes' peer addresses travel in the StopSign's metadata.

use crate::compaction::SnapshotPolicy;
use crate::entry::{KvCommand, RequestId, Write, WriteOp};
use crate::machine::{KvMachine, Outcome};
use omnipaxos::util::LogEntry;
use omnipaxos::ClusterConfig;
use omnipaxos_runtime::{AppendError, OmniPaxosHandle, Role};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// How long a request may take, retries included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before sending a write again when no leader could take it.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No decision or read point within the deadline (an election, no quorum). A write may
    /// still be applied later.
    #[error("{0}")]
    Unavailable(String),
    /// This node left the cluster in a reconfiguration.
    #[error("this node left the cluster when configuration {0} ended")]
    Retired(u32),
}

/// What `GET /status` shows.
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
    /// Appends and reads waiting for an outcome in the runtime.
    pub pending_requests: usize,
    /// Storage writes since the node started.
    pub storage_writes: u64,
    /// `leader`, `candidate`, `follower` or `retired`.
    pub role: &'static str,
    /// How this node sees each peer of its configuration.
    pub peers: BTreeMap<u64, PeerLink>,
    /// Leader changes this node saw since it started.
    pub leader_changes: u64,
    /// Entries decided since the node started.
    pub decided_entries: u64,
}

/// One peer as a node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerLink {
    /// The transport has a connection to it.
    pub connected: bool,
    /// It answered a heartbeat in the last election round.
    pub heartbeat: bool,
}

/// Where the state machine is: the configuration and the number of its entries applied.
type Position = (u32, usize);

/// The state machine and who waits for it.
#[derive(Default)]
struct Applied {
    machine: KvMachine,
    position: Position,
    /// Writes of this node waiting for their outcome.
    waiters: HashMap<RequestId, oneshot::Sender<Outcome>>,
}

/// This start of the node as a client of the log: its session and its unanswered requests.
struct Session {
    life: u64,
    requests: Mutex<Requests>,
}

/// Request numbers: the next one, and those not answered yet. One lock covers both, so that a
/// number is open from the moment it exists: computed apart, `done_below` could be read between
/// the two steps, pass a request that was just numbered, and make the state machine ignore
/// every copy of it (a PUT would then be answered once decided, and never take effect).
#[derive(Debug)]
struct Requests {
    next_seq: u64,
    open: BTreeSet<u64>,
}

impl Session {
    fn new(life: u64) -> Self {
        let requests = Requests {
            next_seq: 1,
            open: BTreeSet::new(),
        };
        Self {
            life,
            requests: Mutex::new(requests),
        }
    }

    fn requests(&self) -> MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers a new request, open until [`Session::end`].
    fn begin(&self) -> u64 {
        let mut r = self.requests();
        let seq = r.next_seq;
        r.next_seq += 1;
        r.open.insert(seq);
        seq
    }

    /// Request `seq` was answered or given up.
    fn end(&self, seq: u64) {
        self.requests().open.remove(&seq);
    }

    /// Every request numbered below this is answered or given up.
    fn done_below(&self) -> u64 {
        let r = self.requests();
        r.open.first().copied().unwrap_or(r.next_seq)
    }
}

/// A running node, shared by the HTTP handlers.
pub struct Node {
    pid: u64,
    handle: OmniPaxosHandle<KvCommand>,
    applied: Arc<Mutex<Applied>>,
    position: watch::Receiver<Position>,
    session: Session,
}

impl Node {
    /// Starts applying the node's decided log (from the start of its history) and returns the
    /// node. `first_config` is the configuration the history starts with (the one the node was
    /// built with; 0 for a node that joins, whose history starts with the handover). Must run
    /// inside the Tokio runtime the handle's node runs on.
    pub async fn start(
        pid: u64,
        first_config: u32,
        handle: OmniPaxosHandle<KvCommand>,
    ) -> Result<Arc<Self>, String> {
        let stream = handle
            .subscribe_decided(0)
            .await
            .map_err(|e| format!("cannot read the decided log: {e}"))?;
        let applied = Arc::new(Mutex::new(Applied {
            position: (first_config, 0),
            ..Applied::default()
        }));
        let (position_tx, position) = watch::channel((first_config, 0));
        let node = Arc::new(Node {
            pid,
            handle: handle.clone(),
            applied: applied.clone(),
            position,
            session: Session::new(omnipaxos_runtime::wire::random_id()),
        });
        tokio::spawn(apply_decided(stream, handle, applied, position_tx));
        Ok(node)
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        lock(&self.applied)
    }

    /// The runtime handle (for shutting the node down).
    pub fn handle(&self) -> &OmniPaxosHandle<KvCommand> {
        &self.handle
    }

    fn retired(&self) -> Option<u32> {
        let metrics = self.handle.metrics();
        let m = metrics.borrow();
        (m.role == Role::Retired).then_some(m.configuration_id)
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: String, value: String) -> Result<Outcome, RequestError> {
        self.write(WriteOp::Put { key, value }).await
    }

    /// Removes `key`; `Outcome::Deleted(false)` if it did not exist.
    pub async fn delete(&self, key: String) -> Result<Outcome, RequestError> {
        self.write(WriteOp::Delete { key }).await
    }

    async fn write(&self, op: WriteOp) -> Result<Outcome, RequestError> {
        if let Some(config) = self.retired() {
            return Err(RequestError::Retired(config));
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let seq = self.session.begin();
        let id = RequestId {
            node: self.pid,
            life: self.session.life,
            seq,
        };
        let (tx, mut outcome) = oneshot::channel();
        self.applied().waiters.insert(id, tx);
        // Also when the client goes away mid-request (the future is dropped): an entry left in
        // `open` would hold `done_below` back for good.
        let _open = OpenRequest { node: self, id };
        self.propose_until(id, op, &mut outcome, deadline).await
    }

    /// Proposes `cmd` (again) until a copy is applied here or the deadline passes.
    async fn propose_until(
        &self,
        id: RequestId,
        op: WriteOp,
        outcome: &mut oneshot::Receiver<Outcome>,
        deadline: Instant,
    ) -> Result<Outcome, RequestError> {
        let gave_up = || {
            RequestError::Unavailable(format!(
                "not decided within {} s (a leader election or a partition?); it may still be applied later",
                REQUEST_TIMEOUT.as_secs()
            ))
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(gave_up());
            }
            let copy = KvCommand::Write(Write {
                id,
                done_below: self.session.done_below(),
                op: op.clone(),
            });
            let appended = tokio::select! {
                biased;
                applied = &mut *outcome => return applied.map_err(|_| gave_up()),
                appended = self.handle.append_notify_with_timeout(copy, left) => appended,
            };
            match appended {
                // Decided, so ordered and durable: a PUT's outcome is known, and a later read
                // waits for a read point past it anyway.
                Ok(_) if matches!(op, WriteOp::Put { .. }) => return Ok(Outcome::Written),
                // Whether a DELETE found the key: the state machine says in a moment.
                Ok(_) => {
                    return match tokio::time::timeout_at(deadline, outcome).await {
                        Ok(Ok(applied)) => Ok(applied),
                        _ => Err(gave_up()),
                    }
                }
                Err(AppendError::Timeout | AppendError::Shutdown) => return Err(gave_up()),
                Err(AppendError::Propose(e)) => {
                    return match self.retired() {
                        Some(config) => Err(RequestError::Retired(config)),
                        None => Err(RequestError::Unavailable(format!("not accepted: {e:?}"))),
                    }
                }
                // The leader went away before deciding it (it may still be decided: the state
                // machine applies one copy), or none could take it: send it again.
                Err(e) => {
                    tracing::debug!(?e, "retrying a write");
                    if !matches!(e, AppendError::InDoubt { .. }) {
                        let pause = Instant::now() + RETRY_PAUSE;
                        tokio::select! {
                            applied = &mut *outcome => return applied.map_err(|_| gave_up()),
                            _ = tokio::time::sleep_until(pause.min(deadline)) => {}
                        }
                    }
                }
            }
        }
    }

    /// The value of `key` (`None`: no such key), linearizable.
    pub async fn get(&self, key: &str) -> Result<Option<String>, RequestError> {
        if let Some(config) = self.retired() {
            return Err(RequestError::Retired(config));
        }
        let failed = || {
            RequestError::Unavailable(format!(
                "no linearizable read within {} s (a leader election or a partition?)",
                REQUEST_TIMEOUT.as_secs()
            ))
        };
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let point = tokio::time::timeout_at(deadline, self.handle.read_linearizable_at())
            .await
            .map_err(|_| failed())?
            .map_err(|_| failed())?;
        let mut position = self.position.clone();
        let reached = |p: &Position| *p >= (point.config_id, point.idx);
        tokio::time::timeout_at(deadline, position.wait_for(reached))
            .await
            .map_err(|_| failed())?
            .map_err(|_| failed())?;
        Ok(self.applied().machine.map.get(key).cloned())
    }

    /// Proposes the next configuration; the new nodes' peer addresses travel with it.
    pub async fn reconfigure(
        &self,
        next: ClusterConfig,
        new_peers: BTreeMap<u64, SocketAddr>,
    ) -> Result<(), String> {
        for (pid, address) in &new_peers {
            let _ = self.handle.add_peer(*pid, address.to_string()).await;
        }
        let metadata = serde_json::to_vec(&new_peers).map_err(|e| e.to_string())?;
        self.handle
            .reconfigure(next, Some(metadata))
            .await
            .map_err(|e| e.to_string())
    }

    /// The state of the last configuration that ended here, for nodes that join.
    pub async fn handover(&self) -> Option<omnipaxos::reconfiguration::Handover<KvCommand>> {
        self.handle.handover().await.ok().flatten().map(|(_, h)| h)
    }

    pub async fn status(&self) -> Status {
        let m = self.handle.metrics().borrow().clone();
        let leader = self.handle.current_leader().await.ok().flatten();
        let (applied_idx, keys) = {
            let a = self.applied();
            let idx = if a.position.0 == m.configuration_id {
                a.position.1
            } else {
                0
            };
            (idx, a.machine.map.len())
        };
        let mut nodes: Vec<u64> = m.peers.keys().copied().chain([self.pid]).collect();
        nodes.sort_unstable();
        Status {
            pid: self.pid,
            leader: leader.map(|(pid, _)| pid),
            leader_ready: leader.is_some_and(|(_, ready)| ready),
            ballot: (m.ballot.n, m.ballot.pid),
            decided_idx: m.decided_idx,
            applied_idx,
            compacted_idx: m.compacted_idx,
            configuration_id: m.configuration_id,
            nodes,
            retired: m.role == Role::Retired,
            peers_connected: m
                .peers
                .iter()
                .filter(|(_, p)| p.connected)
                .map(|(pid, _)| *pid)
                .collect(),
            keys,
            pending_requests: m.pending_requests,
            storage_writes: m.storage_writes,
            role: match m.role {
                Role::Leader => "leader",
                Role::Candidate => "candidate",
                Role::Follower => "follower",
                Role::Retired => "retired",
            },
            peers: m
                .peers
                .iter()
                .map(|(pid, p)| {
                    let link = PeerLink {
                        connected: p.connected,
                        heartbeat: p.heartbeat,
                    };
                    (*pid, link)
                })
                .collect(),
            leader_changes: m.leader_changes,
            decided_entries: m.decided_entries,
        }
    }
}

/// A write of this node's session not answered yet; forgotten when dropped.
struct OpenRequest<'a> {
    node: &'a Node,
    id: RequestId,
}

impl Drop for OpenRequest<'_> {
    fn drop(&mut self) {
        self.node.applied().waiters.remove(&self.id);
        self.node.session.end(self.id.seq);
    }
}

fn lock(applied: &Mutex<Applied>) -> MutexGuard<'_, Applied> {
    applied.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies the decided log as the runtime streams it, answers the waiting writes, learns the
/// addresses of nodes that join, and compacts the log now and then.
async fn apply_decided(
    mut stream: omnipaxos_runtime::DecidedStream<KvCommand>,
    handle: OmniPaxosHandle<KvCommand>,
    applied: Arc<Mutex<Applied>>,
    position: watch::Sender<Position>,
) {
    let mut snapshots = SnapshotPolicy::new(handle.metrics().borrow().pid);
    // The state the current configuration started from; `None` in the first configuration of
    // the stream, whose snapshots are complete (a configuration's snapshot covers its own log).
    let mut config_start: Option<KvMachine> = None;
    let mut at: Position = lock(&applied).position;
    loop {
        // A snapshot stalls this node, so it waits for a quiet moment (no decided entry for a
        // while) unless the log grew far past its period (`compaction.rs`).
        let decided = match tokio::time::timeout(QUIET, stream.next()).await {
            Ok(Some(decided)) => decided,
            Ok(None) => return,
            Err(_) => {
                maybe_snapshot(&handle, &mut snapshots, at, true).await;
                continue;
            }
        };
        let mut new_peers = None;
        let now_at = {
            let mut a = lock(&applied);
            let next = (decided.config_id, decided.idx + 1);
            match decided.entry {
                LogEntry::Decided(cmd) => {
                    let KvCommand::Write(Write { id, .. }) = &cmd;
                    let id = *id;
                    if let Some(outcome) = a.machine.apply(cmd) {
                        if let Some(waiter) = a.waiters.remove(&id) {
                            let _ = waiter.send(outcome);
                        }
                    }
                    a.position = next;
                }
                LogEntry::Snapshotted(s) => {
                    let snapshot = s.snapshot.into_state();
                    a.machine = match &config_start {
                        Some(start) => start.clone().then(snapshot),
                        None => snapshot.untracked(),
                    };
                    a.position = (decided.config_id, s.trimmed_idx);
                }
                LogEntry::Trimmed(idx) => a.position = (decided.config_id, idx),
                LogEntry::StopSign(ss, _) => {
                    new_peers = ss
                        .metadata
                        .as_deref()
                        .and_then(|m| serde_json::from_slice::<BTreeMap<u64, SocketAddr>>(m).ok());
                    // Everything of the ended configuration is applied: the next one starts.
                    config_start = Some(a.machine.clone());
                    a.position = (ss.next_config.configuration_id, 0);
                    snapshots.new_log();
                }
                LogEntry::Undecided(_) => {}
            }
            a.position
        };
        let _ = position.send(now_at);
        for (pid, address) in new_peers.into_iter().flatten() {
            let _ = handle.add_peer(pid, address.to_string()).await;
        }
        at = now_at;
        maybe_snapshot(&handle, &mut snapshots, at, false).await;
    }
}

/// How long without a decided entry counts as a quiet moment for a snapshot.
const QUIET: Duration = Duration::from_millis(200);

/// Compacts the current log up to `at` if the schedule says so.
async fn maybe_snapshot(
    handle: &OmniPaxosHandle<KvCommand>,
    snapshots: &mut SnapshotPolicy,
    at: Position,
    quiet: bool,
) {
    let (config_id, idx) = at;
    // Called for every decided entry: the arithmetic first (a leader's threshold is only
    // higher), the metrics only when a snapshot may be due.
    if !snapshots.due(idx, false, quiet) {
        return;
    }
    let (current, leading) = {
        let m = handle.metrics();
        let m = m.borrow();
        (m.configuration_id, m.role == Role::Leader)
    };
    if current != config_id || !snapshots.due(idx, leading, quiet) {
        return;
    }
    let started = std::time::Instant::now();
    match handle.snapshot(Some(idx), true).await {
        Ok(()) => tracing::info!(
            idx,
            ms = started.elapsed().as_millis() as u64,
            "compacted the log into a snapshot"
        ),
        Err(e) => tracing::warn!("snapshot failed: {e}"),
    }
    snapshots.taken(idx);
}

#[cfg(test)]
mod tests {
    use super::Session;

    #[test]
    fn done_below_never_passes_an_open_request() {
        let session = Session::new(7);
        assert_eq!(session.done_below(), 1, "nothing numbered yet");
        let first = session.begin();
        let second = session.begin();
        assert_eq!((first, second), (1, 2));
        assert_eq!(session.done_below(), 1);
        session.end(second);
        assert_eq!(session.done_below(), 1, "the first is still open");
        session.end(first);
        assert_eq!(session.done_below(), 3);
        // Numbered and open in one step: no moment where the new number is taken but not
        // open, which is when done_below could pass it.
        let third = session.begin();
        assert!(session.done_below() <= third);
    }
}
