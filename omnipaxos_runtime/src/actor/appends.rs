//! Exact outcomes for appends.
//!
//! An entry gets its index only on a leader in the accept phase: there `append` puts it right
//! after the accepted log (and batch), so its index is known for certain at that moment. A node
//! that is not the leader sends its entries to the leader's runtime ([`WireMessage::Append`]),
//! which places them and answers once it knows their fate ([`WireMessage::AppendOutcome`]).
//!
//! The leader knows an entry is decided at index `i` when its decided index passes `i` while it
//! still holds the ballot it placed the entry in: within one ballot the leader's log only grows,
//! so what is decided at `i` is what it put there. If the ballot changes first, the next leader
//! may or may not have kept the entry, which no node can tell without comparing entries: the
//! outcome is `InDoubt`, never a guess.
//!
//! A node that cannot reach the leader sends its entries to a peer that can, which relays them
//! (once: a relayed entry is never relayed again) and reports their outcome back.
//!
//! A non-leader resends an entry only when the leader's runtime said it did not take it
//! (`NotLeader`) *and* that answer came from the same life of the leader that the entry was
//! sent to (runtimes announce a random incarnation on every connection). Anything else (a
//! broken connection, a restart, silence until the deadline) ends in `InDoubt` or `Timeout`, so
//! an entry is never proposed twice by the runtime.

use super::Actor;
use crate::errors::AppendError;
use crate::prometheus::observe;
use crate::transport::Transport;
use crate::wire::{NodeId, RemoteOutcome, RuntimeEntry, WireMessage};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::Storage;
use omnipaxos::ProposeErr;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;
use tokio::sync::oneshot;

/// Where the outcome of an append goes.
pub(crate) type AppendReply<T> = oneshot::Sender<Result<usize, AppendError<T>>>;

enum LocalState {
    /// Waiting for a leader to go to, since `since`.
    Waiting { since: Instant },
    /// Sent to `to`'s runtime, whose incarnation then was `incarnation`, for the leader of
    /// configuration `config_id`.
    Sent {
        to: NodeId,
        incarnation: u64,
        config_id: u32,
    },
    /// Placed here, this node being the leader.
    Placed,
}

/// Who gets an append's outcome.
enum Reply<T: RuntimeEntry> {
    /// A caller on this node (`None`: fire and forget).
    Caller(Option<AppendReply<T>>),
    /// Another node whose entry this node relays to the leader, by its request number there.
    Relay { to: NodeId, req: u64 },
}

struct LocalAppend<T: RuntimeEntry> {
    /// Kept until the entry is placed: to resend it, or to hand it back in an error.
    entry: Option<T>,
    reply: Reply<T>,
    /// The configuration whose sealed log refused it: it waits for the next one.
    sealed_in: Option<u32>,
    /// When it reached this node: the start of its append-to-decide latency.
    submitted: Instant,
    deadline: Instant,
    state: LocalState,
}

/// Who waits for an entry placed here.
#[derive(Clone, Copy)]
enum Owner {
    Local(u64),
    Remote { from: NodeId, req: u64 },
}

pub(crate) struct Appends<T: RuntimeEntry> {
    next_req: u64,
    local: BTreeMap<u64, LocalAppend<T>>,
    waiting: VecDeque<u64>,
    /// Entries placed here, by index, all in ballot `placed_in`.
    placed: BTreeMap<usize, Owner>,
    placed_in: Ballot,
    /// The last incarnation announced by each peer's runtime.
    incarnations: BTreeMap<NodeId, u64>,
    /// Outcomes to send to other nodes at the end of the pass.
    outcomes: BTreeMap<NodeId, Vec<(u64, RemoteOutcome)>>,
    /// Entries other nodes sent this leader, to place with the next batch.
    remote: Vec<(NodeId, u64, T)>,
    /// Since when new entries wait for the batch in flight to be decided.
    held_since: Option<Instant>,
    /// Appends answered `Ok` on this node.
    pub(crate) decided: u64,
    /// Appends submitted on this node.
    pub(crate) submitted: u64,
    /// Where the time from submission to `Ok` goes.
    append_to_decide: Histogram,
}

impl<T: RuntimeEntry> Appends<T> {
    pub(crate) fn new(append_to_decide: Histogram) -> Self {
        Self {
            next_req: 0,
            local: BTreeMap::new(),
            waiting: VecDeque::new(),
            placed: BTreeMap::new(),
            placed_in: Ballot::default(),
            incarnations: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            remote: Vec::new(),
            held_since: None,
            decided: 0,
            submitted: 0,
            append_to_decide,
        }
    }

    /// Appends and remote entries waiting for an outcome here.
    pub(crate) fn pending(&self) -> usize {
        self.local.len() + self.placed.len() + self.remote.len()
    }

    fn answer(&mut self, req: u64, result: Result<usize, AppendError<T>>) {
        let Some(append) = self.local.remove(&req) else {
            return;
        };
        match append.reply {
            Reply::Caller(reply) => {
                if result.is_ok() {
                    self.decided += 1;
                    observe(&self.append_to_decide, append.submitted.elapsed());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Reply::Relay { to, req } => {
                let outcome = match result {
                    Ok(idx) => RemoteOutcome::Decided { idx },
                    // Never sent to a leader from here.
                    Err(AppendError::NoLeader) | Err(AppendError::TooManyOutstanding) => {
                        RemoteOutcome::NotLeader
                    }
                    Err(AppendError::Propose(_)) => RemoteOutcome::Sealed,
                    Err(AppendError::Rejected { reason }) => RemoteOutcome::Rejected(reason),
                    Err(AppendError::InDoubt { log_entry_idx }) => {
                        RemoteOutcome::InDoubt { idx: log_entry_idx }
                    }
                    Err(_) => RemoteOutcome::InDoubt { idx: None },
                };
                self.tell(to, req, outcome);
            }
        }
    }

    fn settle(&mut self, owner: Owner, idx: usize, decided: bool) {
        match owner {
            Owner::Local(req) if decided => self.answer(req, Ok(idx)),
            Owner::Local(req) => self.answer(
                req,
                Err(AppendError::InDoubt {
                    log_entry_idx: Some(idx),
                }),
            ),
            Owner::Remote { from, req } => {
                let outcome = if decided {
                    RemoteOutcome::Decided { idx }
                } else {
                    RemoteOutcome::InDoubt { idx: Some(idx) }
                };
                self.tell(from, req, outcome);
            }
        }
    }

    /// Queues `outcome` for request `req` of node `to`.
    fn tell(&mut self, to: NodeId, req: u64, outcome: RemoteOutcome) {
        self.outcomes.entry(to).or_default().push((req, outcome));
    }

    /// Every append still waiting gets `Shutdown`.
    pub(crate) fn shut_down(&mut self) {
        for (_, append) in std::mem::take(&mut self.local) {
            if let Reply::Caller(Some(reply)) = append.reply {
                let _ = reply.send(Err(AppendError::Shutdown));
            }
        }
    }

    /// Outcomes owed to other nodes, to send now.
    pub(crate) fn take_outcomes(&mut self) -> BTreeMap<NodeId, Vec<(u64, RemoteOutcome)>> {
        std::mem::take(&mut self.outcomes)
    }
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// A new append from a handle.
    pub(crate) fn submit_append(
        &mut self,
        entry: T,
        reply: Option<AppendReply<T>>,
        deadline: Instant,
    ) {
        let appends = &mut self.appends;
        if appends.pending() >= self.config.max_pending_appends {
            if let Some(reply) = reply {
                let _ = reply.send(Err(AppendError::TooManyOutstanding));
            }
            return;
        }
        appends.next_req += 1;
        appends.submitted += 1;
        let req = appends.next_req;
        let now = Instant::now();
        let state = LocalState::Waiting { since: now };
        appends.local.insert(
            req,
            LocalAppend {
                entry: Some(entry),
                reply: Reply::Caller(reply),
                sealed_in: None,
                submitted: now,
                deadline,
                state,
            },
        );
        appends.waiting.push_back(req);
    }

    /// An entry another node cannot get to the leader itself: relayed from here.
    fn submit_relay(&mut self, entry: T, to: NodeId, req: u64) {
        self.appends.next_req += 1;
        let own = self.appends.next_req;
        let now = Instant::now();
        let append = LocalAppend {
            entry: Some(entry),
            reply: Reply::Relay { to, req },
            sealed_in: None,
            submitted: now,
            deadline: now + self.config.append_notify_timeout,
            state: LocalState::Waiting { since: now },
        };
        self.appends.local.insert(own, append);
        self.appends.waiting.push_back(own);
    }

    /// Where to send appends: the leader if it is reachable, else (for this node's own
    /// appends only) a peer that is connected and can relay. With the incarnation it had.
    fn route(&self, leader: NodeId) -> Option<(NodeId, u64, bool)> {
        let reachable = |pid: NodeId| {
            self.transport
                .is_connected(pid)
                .then(|| self.appends.incarnations.get(&pid).copied())
                .flatten()
        };
        if let Some(incarnation) = reachable(leader) {
            return Some((leader, incarnation, false));
        }
        self.op
            .get_config()
            .cluster_config
            .nodes
            .iter()
            .filter(|&&pid| pid != self.me && pid != leader)
            .find_map(|&pid| reachable(pid).map(|inc| (pid, inc, true)))
    }

    /// Places the waiting appends here if this node leads, or sends them to the leader.
    pub(crate) fn dispatch_appends(&mut self) {
        if self.reconf.retired {
            self.fail_waiting_retired();
        }
        let promise = self.leader_ballot();
        let leader = promise.pid;
        let config_id = self.config_id();
        let leads = leader == self.me && self.is_ready_leader();
        if !leads {
            // Entries other nodes sent while this node led: never placed, safe to resend.
            for (from, req, _) in std::mem::take(&mut self.appends.remote) {
                self.appends.tell(from, req, RemoteOutcome::NotLeader);
            }
        }
        if self.appends.waiting.is_empty() && self.appends.remote.is_empty() {
            return;
        }
        if leads && self.hold_for_batch() {
            return;
        }
        if leader == self.me {
            if leads {
                for (from, req, entry) in std::mem::take(&mut self.appends.remote) {
                    self.place(entry, Owner::Remote { from, req });
                }
                let mut keep = VecDeque::new();
                while let Some(req) = self.appends.waiting.pop_front() {
                    let Some(append) = self.appends.local.get_mut(&req) else {
                        continue;
                    };
                    if append.sealed_in == Some(config_id) {
                        keep.push_back(req);
                    } else if let Some(entry) = append.entry.take() {
                        self.place(entry, Owner::Local(req));
                    }
                }
                self.appends.waiting.extend(keep);
            }
            return;
        }
        let route = if leader == 0 {
            None
        } else {
            self.route(leader)
        };
        let Some((to, incarnation, relayed)) = route else {
            self.fail_unreachable(leader != 0);
            return;
        };
        let mut entries = Vec::with_capacity(self.appends.waiting.len());
        let mut keep = VecDeque::new();
        while let Some(req) = self.appends.waiting.pop_front() {
            let Some(append) = self.appends.local.get_mut(&req) else {
                continue;
            };
            // An entry relayed for another node is never relayed again; one refused by this
            // configuration's sealed log waits for the next configuration.
            let relay_again = relayed && matches!(append.reply, Reply::Relay { .. });
            if relay_again || append.sealed_in == Some(config_id) {
                keep.push_back(req);
                continue;
            }
            if let Some(entry) = &append.entry {
                entries.push((req, entry.clone()));
                append.state = LocalState::Sent {
                    to,
                    incarnation,
                    config_id,
                };
            }
        }
        self.appends.waiting = keep;
        if !self.appends.waiting.is_empty() {
            self.fail_unreachable(true);
        }
        if entries.is_empty() {
            return;
        }
        let msg = WireMessage::Append {
            incarnation: self.incarnation,
            ballot: promise,
            entries,
        };
        self.outbox.entry(to).or_default().push(msg);
    }

    /// Batching on the leader: while a batch is in flight (placed, not yet decided), new
    /// entries wait for its decision, so that everything that arrives meanwhile goes out as
    /// one batch (one storage write, one message per follower). A lone writer never waits (no
    /// batch is in flight); a waiting entry is held at most one tick period, and a backlog of
    /// `MAX_HELD` goes out at once.
    fn hold_for_batch(&mut self) -> bool {
        const MAX_HELD: usize = 4096;
        let backlog = self.appends.waiting.len() + self.appends.remote.len();
        if self.appends.placed.is_empty() || backlog >= MAX_HELD {
            self.appends.held_since = None;
            return false;
        }
        let since = *self.appends.held_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.config.tick_period {
            return true;
        }
        self.appends.held_since = None;
        false
    }

    /// With the leader known but out of reach (or no leader known), appends wait: for a known
    /// leader at most `leader_unreachable_timeout`, then they fail with `NoLeader`.
    fn fail_unreachable(&mut self, leader_known: bool) {
        if !leader_known {
            return;
        }
        let limit = self.config.leader_unreachable_timeout;
        let now = Instant::now();
        let config_id = self.config_id();
        let mut still = VecDeque::new();
        while let Some(req) = self.appends.waiting.pop_front() {
            let expired = match self.appends.local.get(&req) {
                // Waiting for the next configuration, not for a leader: until its deadline.
                Some(a) if a.sealed_in == Some(config_id) => false,
                Some(LocalAppend {
                    state: LocalState::Waiting { since },
                    ..
                }) => now.duration_since(*since) >= limit,
                _ => continue,
            };
            if expired {
                self.appends.answer(req, Err(AppendError::NoLeader));
            } else {
                still.push_back(req);
            }
        }
        self.appends.waiting = still;
    }

    /// The newest leader ballot this node knows of: its promise, or a newer one that leader
    /// election learnt from heartbeats (whose `Prepare` has not reached this node).
    pub(crate) fn leader_ballot(&self) -> Ballot {
        let promise = self.op.get_promise();
        let heard = self.op.ble_leader();
        if heard.pid != 0 && heard > promise {
            heard
        } else {
            promise
        }
    }

    /// Whether this node is the leader in the accept phase (where an append's index is known).
    pub(crate) fn is_ready_leader(&self) -> bool {
        self.op.get_current_leader() == Some((self.me, true))
    }

    /// Appends `entry` on this node, which leads; records its index for `owner`.
    fn place(&mut self, entry: T, owner: Owner) {
        let before = self.op.get_accepted_idx() + self.op.get_batched_len();
        match self.op.append(entry) {
            Ok(()) => {
                let after = self.op.get_accepted_idx() + self.op.get_batched_len();
                self.appends.placed_in = self.op.get_promise();
                if after == before + 1 {
                    if let Owner::Local(req) = owner {
                        if let Some(a) = self.appends.local.get_mut(&req) {
                            a.state = LocalState::Placed;
                        }
                    }
                    self.appends.placed.insert(before, owner);
                } else {
                    // Not where a leader puts it: the core kept it for later. Its fate
                    // cannot be followed from here.
                    tracing::warn!(pid = self.me, "an append did not land at the log's end");
                    self.refuse(owner, None);
                }
            }
            Err(ProposeErr::PendingReconfigEntry(entry))
                if self.reconf.follows() && !self.reconf.retired =>
            {
                // The log is sealed; the next configuration takes it (a remote sender
                // learns `Sealed` and sends it again there).
                let config_id = self.config_id();
                match owner {
                    Owner::Local(req) => {
                        if let Some(a) = self.appends.local.get_mut(&req) {
                            a.entry = Some(entry);
                            a.sealed_in = Some(config_id);
                            a.state = LocalState::Waiting {
                                since: Instant::now(),
                            };
                            self.appends.waiting.push_back(req);
                        }
                    }
                    Owner::Remote { from, req } => {
                        self.appends.tell(from, req, RemoteOutcome::Sealed)
                    }
                }
            }
            Err(ProposeErr::PendingReconfigEntry(entry)) => match owner {
                Owner::Local(req) => self.appends.answer(
                    req,
                    Err(AppendError::Propose(ProposeErr::PendingReconfigEntry(
                        entry,
                    ))),
                ),
                Owner::Remote { from, req } => self.appends.tell(from, req, RemoteOutcome::Sealed),
            },
            Err(err) => match owner {
                Owner::Local(req) => self.appends.answer(req, Err(AppendError::Propose(err))),
                Owner::Remote { from, req } => {
                    self.appends
                        .tell(from, req, RemoteOutcome::Rejected(format!("{err:?}")))
                }
            },
        }
    }

    fn refuse(&mut self, owner: Owner, idx: Option<usize>) {
        match owner {
            Owner::Local(req) => self
                .appends
                .answer(req, Err(AppendError::InDoubt { log_entry_idx: idx })),
            Owner::Remote { from, req } => {
                let outcome = RemoteOutcome::InDoubt { idx };
                self.appends.tell(from, req, outcome);
            }
        }
    }

    /// Settles what the last call into the core decided. Called after every call that can
    /// change the ballot or the decided index.
    pub(crate) fn observe_appends(&mut self) {
        if self.appends.placed.is_empty() {
            return;
        }
        if self.op.get_promise() != self.appends.placed_in {
            for (idx, owner) in std::mem::take(&mut self.appends.placed) {
                self.appends.settle(owner, idx, false);
            }
            return;
        }
        let decided = self.op.get_decided_idx();
        while let Some(entry) = self.appends.placed.first_entry() {
            if *entry.key() >= decided {
                break;
            }
            let (idx, owner) = entry.remove_entry();
            self.appends.settle(owner, idx, true);
        }
        // A leader deposed before its batch was written takes the batch back: what is no longer
        // in its log has an unknown fate.
        let log_end = self.op.get_accepted_idx() + self.op.get_batched_len();
        while let Some(entry) = self.appends.placed.last_entry() {
            if *entry.key() < log_end {
                break;
            }
            let (idx, owner) = entry.remove_entry();
            self.appends.settle(owner, idx, false);
        }
    }

    /// Entries another node asks this one, as leader of `ballot`, to append.
    pub(crate) fn on_remote_append(
        &mut self,
        from: NodeId,
        incarnation: u64,
        ballot: Ballot,
        entries: Vec<(u64, T)>,
    ) {
        self.note_incarnation(from, incarnation);
        let promise = self.op.get_promise();
        let leads = ballot == promise && self.is_ready_leader() && self.leader_ballot() == promise;
        // Not the leader, but following the same one and connected to it: relay.
        let relays = !leads
            && ballot == promise
            && promise.pid != self.me
            && from != promise.pid
            && self
                .route(promise.pid)
                .is_some_and(|(to, _, relayed)| to == promise.pid && !relayed);
        for (req, entry) in entries {
            let room = self.appends.pending() < self.config.max_pending_appends;
            if leads && room {
                self.appends.remote.push((from, req, entry));
            } else if relays && room {
                self.submit_relay(entry, from, req);
            } else {
                self.appends.tell(from, req, RemoteOutcome::NotLeader);
            }
        }
    }

    /// The leader's answer about entries this node sent it.
    pub(crate) fn on_append_outcomes(
        &mut self,
        from: NodeId,
        incarnation: u64,
        outcomes: Vec<(u64, RemoteOutcome)>,
    ) {
        self.note_incarnation(from, incarnation);
        for (req, outcome) in outcomes {
            let Some(append) = self.appends.local.get_mut(&req) else {
                continue;
            };
            let LocalState::Sent {
                to,
                incarnation: sent_to,
                config_id,
            } = append.state
            else {
                continue;
            };
            if to != from {
                continue;
            }
            let result = match outcome {
                RemoteOutcome::Decided { idx } => Ok(idx),
                RemoteOutcome::InDoubt { idx } => Err(AppendError::InDoubt { log_entry_idx: idx }),
                RemoteOutcome::NotLeader if sent_to == incarnation => {
                    // That life of the leader did not take it: safe to send it again.
                    append.state = LocalState::Waiting {
                        since: Instant::now(),
                    };
                    self.appends.waiting.push_back(req);
                    continue;
                }
                RemoteOutcome::NotLeader => Err(AppendError::InDoubt {
                    log_entry_idx: None,
                }),
                RemoteOutcome::Sealed
                    if sent_to == incarnation && self.reconf.follows() && !self.reconf.retired =>
                {
                    // Never appended there; the next configuration takes it.
                    append.sealed_in = Some(config_id);
                    append.state = LocalState::Waiting {
                        since: Instant::now(),
                    };
                    self.appends.waiting.push_back(req);
                    continue;
                }
                RemoteOutcome::Sealed => match append.entry.take() {
                    Some(entry) => Err(AppendError::Propose(ProposeErr::PendingReconfigEntry(
                        entry,
                    ))),
                    None => Err(AppendError::InDoubt {
                        log_entry_idx: None,
                    }),
                },
                RemoteOutcome::Rejected(reason) => Err(AppendError::Rejected { reason }),
            };
            self.appends.answer(req, result);
        }
    }

    /// A peer's runtime announced its incarnation; a new one means it restarted, and entries
    /// sent to its previous life will get no answer.
    pub(crate) fn note_incarnation(&mut self, peer: NodeId, incarnation: u64) {
        let previous = self.appends.incarnations.insert(peer, incarnation);
        if previous.is_some_and(|p| p != incarnation) {
            self.abandon_sent_to(peer);
        }
    }

    /// The connection to `peer` broke (answers queued on it are lost) or it restarted: what
    /// was sent to it has an unknown fate.
    pub(crate) fn abandon_sent_to(&mut self, peer: NodeId) {
        let lost: Vec<u64> = self
            .appends
            .local
            .iter()
            .filter(|(_, a)| matches!(a.state, LocalState::Sent { to, .. } if to == peer))
            .map(|(req, _)| *req)
            .collect();
        for req in lost {
            self.appends.answer(
                req,
                Err(AppendError::InDoubt {
                    log_entry_idx: None,
                }),
            );
        }
    }

    /// This node retired with its configuration: appends waiting for the next one fail.
    pub(crate) fn fail_waiting_retired(&mut self) {
        while let Some(req) = self.appends.waiting.pop_front() {
            let entry = self
                .appends
                .local
                .get_mut(&req)
                .and_then(|a| a.entry.take());
            let err = match entry {
                Some(entry) => AppendError::Propose(ProposeErr::PendingReconfigEntry(entry)),
                None => AppendError::InDoubt {
                    log_entry_idx: None,
                },
            };
            self.appends.answer(req, Err(err));
        }
    }

    /// Answers the appends whose deadline passed.
    pub(crate) fn expire_appends(&mut self, now: Instant) {
        let expired: Vec<(u64, bool)> = self
            .appends
            .local
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(req, a)| (*req, matches!(a.state, LocalState::Waiting { .. })))
            .collect();
        for (req, never_sent) in expired {
            let err = if never_sent {
                AppendError::NoLeader
            } else {
                AppendError::Timeout
            };
            self.appends.answer(req, Err(err));
        }
        let local = &self.appends.local;
        self.appends.waiting.retain(|req| local.contains_key(req));
    }
}
