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
//! - The keys live outside the log, in the node's [`StateStore`]; the log is compacted behind
//!   frequent small checkpoints ([`crate::compaction`]). A node whose log starts after a
//!   compacted prefix it never applied copies the state from another node in chunks
//!   ([`crate::transfer`]) and replays its log from there.

use crate::auth::{Access, AuthOp, AuthState, Principal, Refused, STATE_KEY};
use crate::compaction::CheckpointPolicy;
use crate::divergence::Digests;
use crate::entry::{KvCommand, RequestId, Write, WriteOp};
use crate::health::{FaultKind, Health};
use crate::machine::{Outcome, Sessions};
use crate::state_store::{Position, Recovery, StateStore, TransferProgress};
use crate::transfer::{self, ChunkRequest, HttpDonors};
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, ProposeErr};
use omnipaxos_runtime::{AppendError, OmniPaxosEvent, OmniPaxosHandle, Role};
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
    /// Its author may not make it, where it was decided or read (401 or 403).
    #[error("{0}")]
    Refused(Refused),
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
    /// The state store: checkpoints and transfers.
    pub state: StateStatus,
    /// Leader changes this node saw since it started.
    pub leader_changes: u64,
    /// Entries decided since the node started.
    pub decided_entries: u64,
    /// Why this node does not take part (or its state differs), if so.
    pub fault: Option<crate::health::Fault>,
    /// Comparisons of this node's digests with another node's at a common position
    /// (`crate::divergence`).
    pub digest_comparisons: u64,
}

/// One peer as a node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerLink {
    /// The transport has a connection to it.
    pub connected: bool,
    /// It answered a heartbeat in the last election round.
    pub heartbeat: bool,
}

/// The state machine's place in the history and who waits for it.
#[derive(Default)]
struct Applied {
    /// The sessions at `position` (the keys are in the store).
    sessions: Sessions,
    position: Position,
    keys: usize,
    /// Writes of this node waiting for their outcome.
    waiters: HashMap<RequestId, oneshot::Sender<Outcome>>,
    /// A state transfer into this node is under way: its keys are incomplete, so it serves
    /// no chunks to others.
    receiving: bool,
    /// Counts the transfers started here: a chunk read while one started is not served.
    transfers_started: u64,
    state: StateStatus,
    /// Users, roles and grants at `position`.
    auth: AuthState,
    /// Digests of the keys at agreed positions, to compare with the other nodes'.
    digests: Digests,
}

/// The state store and its transfers, as `GET /status` shows them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StateStatus {
    /// Where the keys are: (configuration, entries of its log applied).
    pub position: Position,
    /// The position of the last checkpoint (the log is compacted up to it).
    pub checkpoint: Position,
    /// Transfers into this node completed since it started.
    pub transfers: u64,
    pub receiving: bool,
    /// Bytes of keys and values received in transfers.
    pub received_bytes: u64,
    /// The largest chunk this node served, and received (bytes of the HTTP body).
    pub largest_chunk_sent: usize,
    pub largest_chunk_received: usize,
    /// How long the last transfer took, and its rate.
    pub last_transfer_ms: u64,
    pub last_transfer_mb_per_s: f64,
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
    store: StateStore,
    applied: Arc<Mutex<Applied>>,
    position: watch::Receiver<Position>,
    session: Session,
    health: Arc<Health>,
    /// Comparisons of this node's digests with another node's at a common position.
    comparisons: std::sync::atomic::AtomicU64,
}

impl Node {
    /// Starts applying the node's decided log (from the start of its history) onto `store`
    /// and returns the node. `first_config` is the configuration the history starts with (the
    /// one the node was built with; 0 for a node that joins, whose history starts with the
    /// handover). `donors` are the other nodes, asked for state transfers of at most
    /// `chunk_bytes` per chunk; `health` hears of faults. Must run inside the Tokio runtime the
    /// handle's node runs on.
    pub async fn start(
        pid: u64,
        first_config: u32,
        handle: OmniPaxosHandle<KvCommand>,
        store: StateStore,
        donors: HttpDonors,
        chunk_bytes: usize,
        health: Arc<Health>,
    ) -> Result<Arc<Self>, String> {
        let stream = handle
            .subscribe_decided(0)
            .await
            .map_err(|e| format!("cannot read the decided log: {e}"))?;
        // Where the keys are: at a checkpoint, at the start of the history, or in the middle
        // of a transfer (which resumes before anything else is applied).
        let (position, sessions, resume) = match store.recovery()? {
            None => ((first_config, 0), Sessions::default(), None),
            Some(Recovery::Checkpoint { position, sessions }) => (position, sessions, None),
            Some(Recovery::Transfer(progress)) => ((0, 0), Sessions::default(), Some(progress)),
        };
        let keys = {
            let counting = store.clone();
            tokio::task::spawn_blocking(move || counting.count_keys())
                .await
                .map_err(|e| e.to_string())?
        };
        let auth = load_auth(&store)?;
        // The keys may hold writes up to the last reservation, beyond the checkpoint.
        let reserved = store.reserved()?.unwrap_or(position);
        let mut digests = Digests::default();
        digests.inexact_until(reserved.max(position));
        let applied = Arc::new(Mutex::new(Applied {
            digests,
            sessions,
            position,
            keys,
            auth,
            state: StateStatus {
                checkpoint: position,
                ..StateStatus::default()
            },
            ..Applied::default()
        }));
        let (position_tx, position_rx) = watch::channel(position);
        let node = Arc::new(Node {
            pid,
            handle: handle.clone(),
            store: store.clone(),
            applied: applied.clone(),
            position: position_rx,
            session: Session::new(omnipaxos_runtime::wire::random_id()),
            health: health.clone(),
            comparisons: Default::default(),
        });
        tokio::spawn(watch_storage(handle.clone(), health.clone()));
        let applier = Applier {
            handle,
            store,
            applied,
            position: position_tx,
            donors: donors.reporting_to(health.clone()),
            health,
            chunk_bytes,
            checkpoints: CheckpointPolicy::default(),
            checkpointing: None,
            reserved,
            reserving: None,
            reserve_ahead: RESERVE_AHEAD,
        };
        tokio::spawn(applier.run(stream, resume));
        Ok(node)
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        lock(&self.applied)
    }

    /// Counts a comparison of digests with another node's at a common position.
    pub fn note_comparison(&self) {
        self.comparisons
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node's pid.
    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// The digests of the keys at recent agreed positions.
    pub fn digests(&self) -> Vec<(Position, u64)> {
        self.applied().digests.list()
    }

    /// Whether this node takes part, and why not.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
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

    /// Sets `key` to `value`, for `by`.
    pub async fn put(
        &self,
        by: Principal,
        key: String,
        value: String,
    ) -> Result<Outcome, RequestError> {
        self.write(Some(by), WriteOp::Put { key, value }).await
    }

    /// Removes `key`, for `by`; `Outcome::Deleted(false)` if it did not exist.
    pub async fn delete(&self, by: Principal, key: String) -> Result<Outcome, RequestError> {
        self.write(Some(by), WriteOp::Delete { key }).await
    }

    /// Changes users, roles or grants, for `by` (who must be an admin where it is decided).
    pub async fn change_auth(&self, by: Principal, op: AuthOp) -> Result<Outcome, RequestError> {
        self.write(Some(by), WriteOp::Auth(op)).await
    }

    /// Creates `root` with the password hashed in `root_password_hash`, if the cluster has no
    /// user yet (the state machine ignores it otherwise). Retried until some bootstrap is
    /// applied here.
    pub async fn bootstrap(&self, root_password_hash: String) -> Result<(), String> {
        let op = WriteOp::Auth(AuthOp::Bootstrap {
            root_password_hash,
            token_key: crate::auth::new_token_key()?,
        });
        while !self.applied().auth.is_set_up() {
            match self.write(None, op.clone()).await {
                Ok(_) => {}
                Err(RequestError::Retired(_)) => return Ok(()),
                Err(e) => tracing::debug!("bootstrapping root: {e}"),
            }
        }
        Ok(())
    }

    /// Proposes `op` for `by` and waits for the state machine's outcome here: whether it took
    /// effect is known only where it is decided (its author's permission is checked there).
    async fn write(&self, by: Option<Principal>, op: WriteOp) -> Result<Outcome, RequestError> {
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
        match self
            .propose_until(id, by, op, &mut outcome, deadline)
            .await?
        {
            Outcome::Refused(r) => Err(RequestError::Refused(r)),
            done => Ok(done),
        }
    }

    /// Proposes `cmd` (again) until a copy is applied here or the deadline passes.
    async fn propose_until(
        &self,
        id: RequestId,
        by: Option<Principal>,
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
                by: by.clone(),
                op: op.clone(),
            });
            let appended = tokio::select! {
                biased;
                applied = &mut *outcome => return applied.map_err(|_| gave_up()),
                appended = self.handle.append_notify_with_timeout(copy, left) => appended,
            };
            match appended {
                // Decided: whether it took effect (its author's permission where it was
                // decided, whether a DELETE found the key), the state machine says in a moment.
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
    /// The value of `key` at a linearizable read point, if `by` may read it there.
    pub async fn get(&self, by: &Principal, key: &str) -> Result<Option<String>, RequestError> {
        self.at_read_point(by, Access::Read(key)).await?;
        self.store.get(key).map_err(RequestError::Unavailable)
    }

    /// Waits until this node applied everything decided before now (a linearizable read
    /// point), then checks that `by` may do `access` there: a change of users, roles or grants
    /// decided before the request is in force for it.
    pub async fn at_read_point(
        &self,
        by: &Principal,
        access: Access<'_>,
    ) -> Result<(), RequestError> {
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
        self.check_here(by, access)
    }

    /// Whether `by` may do `access` as far as this node applied (no read point: for a quick
    /// refusal, or for what needs no linearizable answer, like cluster status).
    pub fn check_here(&self, by: &Principal, access: Access<'_>) -> Result<(), RequestError> {
        self.applied()
            .auth
            .check(by, access)
            .map_err(RequestError::Refused)
    }

    /// The principal a bearer token names, checked against the cluster's token key as this
    /// node applied it (no log write; whether the user still exists is checked with the
    /// request's access).
    pub fn token_principal(&self, token: &str) -> Result<Principal, Refused> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.applied().auth.principal_of_token(token, now)
    }

    /// A token for `user` if `password` is theirs at a linearizable read point (a user created
    /// through any node authenticates here at once), valid for `ttl`.
    pub async fn issue_token(
        &self,
        user: &str,
        password: String,
        ttl: Duration,
    ) -> Result<(String, u64), RequestError> {
        let anyone = Principal::Node(self.pid);
        self.at_read_point(&anyone, Access::Status).await?;
        let auth = self.applied().auth.clone();
        let name = user.to_string();
        let verified = tokio::task::spawn_blocking(move || {
            auth.verify_password(&name, &password)
                .map(|generation| (auth, generation))
        })
        .await
        .map_err(|e| RequestError::Unavailable(e.to_string()))?;
        let (auth, generation) = verified.map_err(RequestError::Refused)?;
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + ttl.as_secs();
        Ok((auth.issue_token(user, generation, expires), expires))
    }

    /// Users and roles (no password hashes) at a read point, for an admin.
    pub async fn auth_listing(&self, by: &Principal) -> Result<serde_json::Value, RequestError> {
        self.at_read_point(by, Access::Admin).await?;
        let a = self.applied();
        let users: BTreeMap<&String, &BTreeSet<String>> =
            a.auth.users.iter().map(|(n, u)| (n, &u.roles)).collect();
        Ok(serde_json::json!({ "users": users, "roles": a.auth.roles }))
    }

    /// Whether the cluster has users yet (as far as this node applied).
    pub fn auth_is_set_up(&self) -> bool {
        self.applied().auth.is_set_up()
    }

    /// Proposes the next configuration; the new nodes' peer addresses travel with it.
    pub async fn reconfigure(
        &self,
        next: ClusterConfig,
        new_peers: BTreeMap<u64, SocketAddr>,
    ) -> Result<(), ReconfigureRefused> {
        use omnipaxos_runtime::ReconfigureError;
        use ReconfigureRefused::{Conflict, Invalid};
        // Everything is checked before anything changes: a refused request adds no peer.
        let current = self.handle.metrics().borrow().configuration_id;
        next.validate().map_err(|e| Invalid(e.to_string()))?;
        if next.configuration_id <= current {
            return Err(Invalid(format!(
                "configuration_id {} must be greater than the current configuration's ({current})",
                next.configuration_id
            )));
        }
        if let Some(pid) = new_peers.keys().find(|p| !next.nodes.contains(p)) {
            return Err(Invalid(format!(
                "new_peers names node {pid}, which is not in nodes"
            )));
        }
        for (pid, address) in &new_peers {
            let _ = self.handle.add_peer(*pid, address.to_string()).await;
        }
        let metadata = serde_json::to_vec(&new_peers).map_err(|e| Invalid(e.to_string()))?;
        self.handle
            .reconfigure(next, Some(metadata))
            .await
            .map_err(|e| match e {
                ReconfigureError::Propose(ProposeErr::ConfigError(e, ..)) => Invalid(e.to_string()),
                other => Conflict(other.to_string()),
            })
    }

    /// The state of the last configuration that ended here, for nodes that join.
    pub async fn handover(&self) -> Option<omnipaxos::reconfiguration::Handover<KvCommand>> {
        self.handle.handover().await.ok().flatten().map(|(_, h)| h)
    }

    pub async fn status(&self) -> Status {
        let m = self.handle.metrics().borrow().clone();
        let leader = self.handle.current_leader().await.ok().flatten();
        let (applied_idx, keys, state) = {
            let a = self.applied();
            let idx = if a.position.0 == m.configuration_id {
                a.position.1
            } else {
                0
            };
            let state = StateStatus {
                position: a.position,
                ..a.state.clone()
            };
            (idx, a.keys, state)
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
            state,
            leader_changes: m.leader_changes,
            decided_entries: m.decided_entries,
            fault: self.health.fault(),
            digest_comparisons: self.comparisons.load(std::sync::atomic::Ordering::Relaxed),
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

/// The auth state the store holds (none yet: an empty one).
fn load_auth(store: &StateStore) -> Result<AuthState, String> {
    match store.get(STATE_KEY)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| format!("the auth state: {e}")),
        None => Ok(AuthState::default()),
    }
}

fn lock(applied: &Mutex<Applied>) -> MutexGuard<'_, Applied> {
    applied.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a chunk was not served.
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefused {
    /// This node cannot serve it now (it is behind the position asked for, or receiving a
    /// transfer itself); another node may.
    #[error("{0}")]
    NotNow(String),
    /// The state store failed.
    #[error("{0}")]
    Store(String),
}

impl Node {
    /// Serves one chunk of a state transfer to another node: the keys after `request.after`,
    /// read at a position of at least `request.min`; the HTTP body, at most
    /// `request.max_bytes` long (or one key).
    pub async fn serve_chunk(&self, request: ChunkRequest) -> Result<Vec<u8>, ChunkRefused> {
        let (position, sessions, epoch) = {
            let a = self.applied();
            if a.receiving {
                return Err(ChunkRefused::NotNow("receiving a state transfer".into()));
            }
            if a.position < request.min {
                return Err(ChunkRefused::NotNow(format!(
                    "at {:?}, behind {:?}",
                    a.position, request.min
                )));
            }
            let sessions = request.with_sessions.then(|| a.sessions.clone());
            (a.position, sessions, a.transfers_started)
        };
        let max_bytes = request.max_bytes.clamp(1, transfer::MAX_CHUNK_BYTES);
        let (store, applied) = (self.store.clone(), self.applied.clone());
        let body = tokio::task::spawn_blocking(move || {
            let mut keys = store.keys_after(request.after.as_deref());
            let until = || lock(&applied).position;
            transfer::encode_chunk(position, sessions.as_ref(), &mut keys, max_bytes, &until)
        })
        .await
        .map_err(|e| ChunkRefused::Store(e.to_string()))?
        .map_err(ChunkRefused::Store)?;
        let mut a = self.applied();
        // A transfer that started meanwhile cleared the keys under the scan.
        if a.receiving || a.transfers_started != epoch {
            return Err(ChunkRefused::NotNow("receiving a state transfer".into()));
        }
        a.state.largest_chunk_sent = a.state.largest_chunk_sent.max(body.len());
        Ok(body)
    }
}

/// What to do with one decided entry, given where the keys are.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// It is in the keys already.
    Skip,
    /// It comes next: apply it.
    Apply,
    /// Entries before it are missing here (compacted away before this node applied them):
    /// the keys must first be brought to at least this position.
    Transfer(Position),
}

/// Where entry `entry` of configuration `config_id` at `idx` stands against `at`.
fn step(at: Position, config_id: u32, idx: usize, entry: &LogEntry<KvCommand>) -> Step {
    let here = (config_id, idx);
    let (covers, after) = match entry {
        LogEntry::Snapshotted(s) => ((config_id, s.trimmed_idx), (config_id, s.trimmed_idx)),
        LogEntry::Trimmed(end) => ((config_id, *end), (config_id, *end)),
        LogEntry::StopSign(ss, _) => (here, (ss.next_config.configuration_id, 0)),
        _ => (here, (config_id, idx + 1)),
    };
    if after <= at {
        Step::Skip
    } else if matches!(entry, LogEntry::Snapshotted(_) | LogEntry::Trimmed(_)) || here != at {
        Step::Transfer(covers)
    } else {
        Step::Apply
    }
}

/// Records the runtime's storage failure (its log's store) in `health`.
async fn watch_storage(handle: OmniPaxosHandle<KvCommand>, health: Arc<Health>) {
    let mut events = handle.subscribe_events();
    let mut metrics = handle.metrics();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(OmniPaxosEvent::StorageFailed { error }) => {
                    health.fail(FaultKind::Storage, format!("the log's storage failed: {error}"));
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            // Events may be missed when lagging: the metrics say it too (without the cause).
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                if metrics.borrow_and_update().storage_failed {
                    health.fail(FaultKind::Storage, "the log's storage failed (see the log)");
                    return;
                }
            }
        }
    }
}

/// Applies the decided log as the runtime streams it onto the state store, answers the waiting
/// writes, learns the addresses of nodes that join, checkpoints now and then, and fetches the
/// state from another node when its log starts after entries it never applied.
struct Applier {
    handle: OmniPaxosHandle<KvCommand>,
    store: StateStore,
    applied: Arc<Mutex<Applied>>,
    position: watch::Sender<Position>,
    donors: HttpDonors,
    chunk_bytes: usize,
    checkpoints: CheckpointPolicy,
    /// The checkpoint being written, if any.
    checkpointing: Option<tokio::task::JoinHandle<()>>,
    health: Arc<Health>,
    /// The keys may be written up to here ([`StateStore::reserve`]).
    reserved: Position,
    /// The next reservation, being written in the background.
    reserving: Option<(Position, tokio::task::JoinHandle<Result<(), String>>)>,
    /// How far ahead the last reservation reached (the next one reaches twice as far).
    reserve_ahead: usize,
}

/// How far ahead of the keys' position a node's first reservation reaches; each next one
/// reaches twice as far, up to [`RESERVE_AHEAD_MAX`] (a busy node syncs one every few seconds,
/// not one every few milliseconds, next to its log's syncs). The next one is written in the
/// background once half of the current one is used, so the applier waits for the disk only if
/// it overtakes the writing. After a crash, digests resume at most this far on.
const RESERVE_AHEAD: usize = 1024;
const RESERVE_AHEAD_MAX: usize = 1 << 16;

impl Applier {
    async fn run(
        mut self,
        mut stream: omnipaxos_runtime::DecidedStream<KvCommand>,
        resume: Option<TransferProgress>,
    ) {
        if let Some(progress) = resume {
            if self.transfer(progress).await.is_err() {
                return;
            }
        }
        while let Some(decided) = stream.next().await {
            if let LogEntry::StopSign(ss, _) = &decided.entry {
                self.learn_peers(ss.metadata.as_deref()).await;
            }
            loop {
                let at = lock(&self.applied).position;
                match step(at, decided.config_id, decided.idx, &decided.entry) {
                    Step::Skip => break,
                    Step::Transfer(needed) => {
                        let progress = TransferProgress {
                            needed,
                            start: None,
                            cursor: None,
                            until: None,
                        };
                        if self.transfer(progress).await.is_err() {
                            return;
                        }
                    }
                    Step::Apply => {
                        if let Err(e) = self
                            .reserve_for(decided.config_id, decided.idx, &decided.entry)
                            .await
                        {
                            self.health.fail(FaultKind::Storage, e);
                            return;
                        }
                        if let Err(e) = self.apply(decided.config_id, decided.idx, &decided.entry) {
                            // Nothing is lost: the log holds the entry, and a restart
                            // replays it from the last checkpoint.
                            let cause = format!("cannot apply decided entries any more: {e}");
                            self.health.fail(FaultKind::Storage, cause);
                            return;
                        }
                        break;
                    }
                }
            }
            let _ = self.position.send(lock(&self.applied).position);
            if self.checkpoints.due() && self.checkpointing.as_ref().is_none_or(|c| c.is_finished())
            {
                self.checkpoint();
            }
        }
    }

    /// Applies the entry that comes next.
    fn apply(
        &mut self,
        config_id: u32,
        idx: usize,
        entry: &LogEntry<KvCommand>,
    ) -> Result<(), String> {
        let mut a = lock(&self.applied);
        match entry {
            LogEntry::Decided(cmd) => {
                let KvCommand::Write(Write { id, .. }) = cmd;
                let id = *id;
                let a = &mut *a;
                if let Some(done) = a
                    .sessions
                    .apply(&mut self.store, &mut a.auth, cmd.clone())?
                {
                    a.keys = a.keys.saturating_add_signed(done.keys_delta as isize);
                    self.checkpoints.applied(done.bytes);
                    if let Some(waiter) = a.waiters.remove(&id) {
                        let _ = waiter.send(done.outcome);
                    }
                } else {
                    self.checkpoints.applied(0);
                }
                a.position = (config_id, idx + 1);
            }
            // Everything of the ended configuration is applied: the next one starts.
            LogEntry::StopSign(ss, _) => a.position = (ss.next_config.configuration_id, 0),
            _ => a.position = (config_id, idx + 1),
        }
        let (position, digest) = (a.position, self.store.digest());
        a.digests.applied(position, digest);
        Ok(())
    }

    /// Before the keys go past the reservation: records a new one durably (a crash then
    /// knows how far the keys may be ahead of the checkpoint it replays from).
    async fn reserve_for(
        &mut self,
        config_id: u32,
        idx: usize,
        entry: &LogEntry<KvCommand>,
    ) -> Result<(), String> {
        let after = match entry {
            LogEntry::StopSign(ss, _) => (ss.next_config.configuration_id, 0),
            _ => (config_id, idx + 1),
        };
        let finished = self
            .reserving
            .as_ref()
            .is_some_and(|(_, writing)| writing.is_finished());
        if finished || (after > self.reserved && self.reserving.is_some()) {
            if let Some((target, writing)) = self.reserving.take() {
                writing.await.map_err(|e| e.to_string())??;
                self.reserved = target;
            }
        }
        let store = self.store.clone();
        if after > self.reserved {
            let next = (after.0, after.1 + self.reserve_ahead);
            tokio::task::spawn_blocking(move || store.reserve(next))
                .await
                .map_err(|e| e.to_string())??;
            self.reserved = next;
        } else if self.reserving.is_none()
            && after.0 == self.reserved.0
            && self.reserved.1 - after.1 < self.reserve_ahead / 2
        {
            self.reserve_ahead = (self.reserve_ahead * 2).min(RESERVE_AHEAD_MAX);
            let next = (after.0, after.1 + self.reserve_ahead);
            let writing = tokio::task::spawn_blocking(move || store.reserve(next));
            self.reserving = Some((next, writing));
        }
        Ok(())
    }

    async fn learn_peers(&self, metadata: Option<&[u8]>) {
        let new_peers =
            metadata.and_then(|m| serde_json::from_slice::<BTreeMap<u64, SocketAddr>>(m).ok());
        for (pid, address) in new_peers.into_iter().flatten() {
            let _ = self.handle.add_peer(pid, address.to_string()).await;
        }
    }

    /// Flushes the keys, records the position and the sessions, then compacts the log up to
    /// it (in the background: applying goes on meanwhile).
    fn checkpoint(&mut self) {
        self.checkpoints.started();
        let (position, sessions) = {
            let a = lock(&self.applied);
            (a.position, a.sessions.clone())
        };
        let (store, handle, applied) = (
            self.store.clone(),
            self.handle.clone(),
            self.applied.clone(),
        );
        self.checkpointing = Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let record = Recovery::Checkpoint { position, sessions };
            let written = tokio::task::spawn_blocking(move || store.record(&record)).await;
            if let Err(e) = written.map_err(|e| e.to_string()).and_then(|r| r) {
                tracing::warn!("checkpoint failed: {e}");
                return;
            }
            lock(&applied).state.checkpoint = position;
            let (config_id, idx) = position;
            if handle.metrics().borrow().configuration_id != config_id {
                return;
            }
            match handle.snapshot(Some(idx), true).await {
                Ok(()) => tracing::debug!(
                    idx,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpointed and compacted the log"
                ),
                Err(e) => tracing::warn!("compaction after a checkpoint failed: {e}"),
            }
        }));
    }

    /// Brings the keys to a position of at least `progress.needed` by copying them from
    /// another node; `Err` if the state store failed (the node stops applying).
    async fn transfer(&mut self, progress: TransferProgress) -> Result<(), ()> {
        // A checkpoint still being written would record the keys about to be replaced.
        if let Some(pending) = self.checkpointing.take() {
            let _ = pending.await;
        }
        {
            let mut a = lock(&self.applied);
            a.receiving = true;
            a.transfers_started += 1;
            a.state.receiving = true;
        }
        tracing::info!(needed = ?progress.needed, "fetching the state from another node");
        let started = std::time::Instant::now();
        let result =
            transfer::receive(&self.store, progress, &mut self.donors, self.chunk_bytes).await;
        let keys = {
            let counting = self.store.clone();
            tokio::task::spawn_blocking(move || counting.count_keys())
                .await
                .unwrap_or(0)
        };
        // The auth state came with the keys.
        let auth = load_auth(&self.store);
        let mut a = lock(&self.applied);
        a.receiving = false;
        a.state.receiving = false;
        match result {
            Ok((sessions, report)) => {
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(?report, seconds, "state transfer complete");
                a.sessions = sessions;
                a.position = report.start;
                a.keys = keys;
                match auth {
                    Ok(auth) => a.auth = auth,
                    Err(e) => {
                        let cause = format!("the transferred auth state is unreadable: {e}");
                        self.health.fail(FaultKind::Storage, cause);
                        return Err(());
                    }
                }
                a.state.checkpoint = report.start;
                a.digests.inexact_until(report.until);
                a.state.transfers += 1;
                a.state.received_bytes += report.bytes;
                a.state.largest_chunk_received =
                    a.state.largest_chunk_received.max(report.largest_chunk);
                a.state.last_transfer_ms = (seconds * 1000.0) as u64;
                a.state.last_transfer_mb_per_s = report.bytes as f64 / 1e6 / seconds.max(1e-6);
                self.checkpoints.started();
                Ok(())
            }
            Err(e) => {
                let cause = format!("state transfer failed: {e}");
                self.health.fail(FaultKind::CannotCatchUp, cause);
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{step, Session, Step};
    use crate::entry::{KVSnapshot, KvCommand};
    use omnipaxos::util::{LogEntry, SnapshottedEntry};

    fn decided() -> LogEntry<KvCommand> {
        LogEntry::Decided(KvCommand::Write(crate::entry::Write {
            id: crate::entry::RequestId {
                node: 1,
                life: 1,
                seq: 1,
            },
            done_below: 1,
            by: None,
            op: crate::entry::WriteOp::Delete { key: "k".into() },
        }))
    }

    fn snapshotted(trimmed_idx: usize) -> LogEntry<KvCommand> {
        LogEntry::Snapshotted(SnapshottedEntry::with(trimmed_idx, KVSnapshot))
    }

    #[test]
    fn entries_already_in_the_keys_are_skipped_the_next_is_applied_a_gap_is_transferred() {
        assert_eq!(step((1, 5), 1, 4, &decided()), Step::Skip);
        assert_eq!(step((1, 5), 1, 5, &decided()), Step::Apply);
        assert_eq!(step((1, 5), 1, 7, &decided()), Step::Transfer((1, 7)));
        // A later configuration's entries are applied after its start only.
        assert_eq!(step((2, 0), 2, 0, &decided()), Step::Apply);
        assert_eq!(
            step((0, 0), 1, 0, &decided()),
            Step::Transfer((1, 0)),
            "a joiner"
        );
        assert_eq!(step((2, 3), 1, 9, &decided()), Step::Skip);
    }

    #[test]
    fn a_compacted_prefix_is_skipped_if_applied_and_transferred_if_not() {
        assert_eq!(step((1, 500), 1, 0, &snapshotted(400)), Step::Skip);
        assert_eq!(step((1, 400), 1, 0, &snapshotted(400)), Step::Skip);
        assert_eq!(
            step((1, 300), 1, 0, &snapshotted(400)),
            Step::Transfer((1, 400))
        );
        assert_eq!(
            step((0, 0), 1, 0, &snapshotted(400)),
            Step::Transfer((1, 400))
        );
    }

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

/// Why `POST /reconfigure` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureRefused {
    /// The configuration cannot follow the current one (400).
    #[error("{0}")]
    Invalid(String),
    /// A reconfiguration is pending or this node cannot propose now (409).
    #[error("{0}")]
    Conflict(String),
}
