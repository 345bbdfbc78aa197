//! Exact outcomes for appends, as a state machine: inputs in (a submission, a peer's request or
//! answer, a pass, a tick), effects out (answers to callers, messages to peers). No I/O, no
//! clock: time comes in as [`Micros`] (microseconds since the node started), the node around it
//! as a [`NodeView`].
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

use super::{Micros, NodeView};
use crate::errors::AppendError;
use crate::wire::{NodeId, RemoteOutcome, RuntimeEntry, WireMessage};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::ProposeErr;
use std::collections::{BTreeMap, VecDeque};

/// The limits the tracker works within (from `RuntimeConfig`), in microseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppendLimits {
    /// Appends and remote entries waiting here at most; more are refused.
    pub(crate) max_pending: usize,
    /// How long an append waits for a known but unreachable leader before `NoLeader`.
    pub(crate) leader_unreachable: Micros,
    /// The deadline of an entry relayed for another node.
    pub(crate) relay_timeout: Micros,
    /// How long a leader holds new entries while a batch is in flight.
    pub(crate) batch_hold: Micros,
}

/// An answer for a caller on this node: its reply handle, the outcome, and (for `Ok`) how long
/// the append took from submission.
pub(crate) struct Answer<T: RuntimeEntry, R> {
    pub(crate) reply: R,
    pub(crate) result: Result<usize, AppendError<T>>,
    pub(crate) took: Option<Micros>,
}

enum LocalState {
    /// Waiting for a leader to go to, since then.
    Waiting { since: Micros },
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
enum Reply<R> {
    /// A caller on this node (`None`: fire and forget).
    Caller(Option<R>),
    /// Another node whose entry this node relays to the leader, by its request number there.
    Relay { to: NodeId, req: u64 },
}

struct LocalAppend<T, R> {
    /// Kept until the entry is placed: to resend it, or to hand it back in an error.
    entry: Option<T>,
    reply: Reply<R>,
    /// The configuration whose sealed log refused it: it waits for the next one.
    sealed_in: Option<u32>,
    /// When it reached this node: the start of its append-to-decide latency.
    submitted: Micros,
    deadline: Micros,
    state: LocalState,
}

/// Who waits for an entry placed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Local(u64),
    Remote { from: NodeId, req: u64 },
}

/// The appends of one node. `R` is how a caller is answered (a channel in the runtime, a
/// number in tests).
pub(crate) struct AppendTracker<T: RuntimeEntry, R> {
    /// This node's incarnation, sent with every answer to a peer.
    incarnation: u64,
    limits: AppendLimits,
    /// The number of the last request made here. Numbers start at random in every life of the
    /// node: a leader still settling entries of this node's previous life answers them by
    /// number, and a new life counting from 1 again took those answers for its own (an `Ok`
    /// with another entry's index; found by the runtime-node sweep).
    next_req: u64,
    local: BTreeMap<u64, LocalAppend<T, R>>,
    waiting: VecDeque<u64>,
    /// Entries placed here, by index, all in ballot `placed_in`.
    placed: BTreeMap<usize, Owner>,
    placed_in: Ballot,
    /// The last incarnation announced by each peer's runtime.
    incarnations: BTreeMap<NodeId, u64>,
    /// Outcomes to send to other nodes at the end of the pass.
    outcomes: BTreeMap<NodeId, Vec<(u64, RemoteOutcome)>>,
    /// Entries to send, by receiver, at the end of the pass.
    outgoing: Vec<(NodeId, WireMessage<T>)>,
    /// Entries other nodes sent this leader, to place with the next batch.
    remote: Vec<(NodeId, u64, T)>,
    /// Since when new entries wait for the batch in flight to be decided.
    held_since: Option<Micros>,
    answers: Vec<Answer<T, R>>,
    /// Appends answered `Ok` on this node.
    pub(crate) decided: u64,
    /// Appends submitted on this node.
    pub(crate) submitted: u64,
}

impl<T: RuntimeEntry, R> AppendTracker<T, R> {
    /// A tracker for a node whose runtime announces `incarnation`, numbering its requests from
    /// `first_req` on (random per life, see `next_req`).
    pub(crate) fn new(incarnation: u64, first_req: u64, limits: AppendLimits) -> Self {
        Self {
            incarnation,
            limits,
            next_req: first_req,
            local: BTreeMap::new(),
            waiting: VecDeque::new(),
            placed: BTreeMap::new(),
            placed_in: Ballot::default(),
            incarnations: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            outgoing: Vec::new(),
            remote: Vec::new(),
            held_since: None,
            answers: Vec::new(),
            decided: 0,
            submitted: 0,
        }
    }

    /// This node's incarnation (announced to peers in `Hello`).
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether entries placed here wait for their fate (`observe` has work to do).
    pub(crate) fn has_placed(&self) -> bool {
        !self.placed.is_empty()
    }

    /// Appends and remote entries waiting for an outcome here.
    pub(crate) fn pending(&self) -> usize {
        self.local.len() + self.placed.len() + self.remote.len()
    }

    /// The answers for callers on this node, to send now.
    pub(crate) fn take_answers(&mut self) -> std::vec::Drain<'_, Answer<T, R>> {
        self.answers.drain(..)
    }

    /// The messages for other nodes, to send now: entries for a leader (or a relay), and the
    /// outcomes owed to the nodes whose entries this node placed or relayed.
    pub(crate) fn take_messages(&mut self) -> Vec<(NodeId, WireMessage<T>)> {
        let mut out = std::mem::take(&mut self.outgoing);
        for (to, outcomes) in std::mem::take(&mut self.outcomes) {
            out.push((
                to,
                WireMessage::AppendOutcome {
                    incarnation: self.incarnation,
                    outcomes,
                },
            ));
        }
        out
    }

    /// A new append from a caller on this node (`reply: None`: fire and forget).
    pub(crate) fn submit(&mut self, entry: T, reply: Option<R>, now: Micros, deadline: Micros) {
        if self.pending() >= self.limits.max_pending {
            if let Some(reply) = reply {
                self.answers.push(Answer {
                    reply,
                    result: Err(AppendError::TooManyOutstanding),
                    took: None,
                });
            }
            return;
        }
        self.submitted += 1;
        self.enqueue(entry, Reply::Caller(reply), now, deadline);
    }

    fn enqueue(&mut self, entry: T, reply: Reply<R>, now: Micros, deadline: Micros) {
        self.next_req = self.next_req.wrapping_add(1);
        let req = self.next_req;
        self.local.insert(
            req,
            LocalAppend {
                entry: Some(entry),
                reply,
                sealed_in: None,
                submitted: now,
                deadline,
                state: LocalState::Waiting { since: now },
            },
        );
        self.waiting.push_back(req);
    }

    fn answer(&mut self, req: u64, result: Result<usize, AppendError<T>>, now: Micros) {
        let Some(append) = self.local.remove(&req) else {
            return;
        };
        match append.reply {
            Reply::Caller(reply) => {
                let took = result.is_ok().then(|| now.saturating_sub(append.submitted));
                if result.is_ok() {
                    self.decided += 1;
                }
                if let Some(reply) = reply {
                    self.answers.push(Answer {
                        reply,
                        result,
                        took,
                    });
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

    fn settle(&mut self, owner: Owner, idx: usize, decided: bool, now: Micros) {
        match owner {
            Owner::Local(req) if decided => self.answer(req, Ok(idx), now),
            Owner::Local(req) => self.answer(
                req,
                Err(AppendError::InDoubt {
                    log_entry_idx: Some(idx),
                }),
                now,
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
                self.answers.push(Answer {
                    reply,
                    result: Err(AppendError::Shutdown),
                    took: None,
                });
            }
        }
        self.waiting.clear();
    }

    /// Where to send appends: the leader if it is reachable, else (for this node's own
    /// appends only) a peer that is connected and can relay. With the incarnation it had.
    fn route(&self, node: &impl NodeView<T>, leader: NodeId) -> Option<(NodeId, u64, bool)> {
        let reachable = |pid: NodeId| {
            node.is_connected(pid)
                .then(|| self.incarnations.get(&pid).copied())
                .flatten()
        };
        if let Some(incarnation) = reachable(leader) {
            return Some((leader, incarnation, false));
        }
        let me = node.me();
        node.nodes()
            .into_iter()
            .filter(|&pid| pid != me && pid != leader)
            .find_map(|pid| reachable(pid).map(|inc| (pid, inc, true)))
    }

    /// The end of a pass: places the waiting appends here if this node leads, or sends them to
    /// the leader (or a relay).
    pub(crate) fn dispatch(&mut self, node: &mut impl NodeView<T>, now: Micros) {
        if node.retired() {
            self.fail_waiting_retired(now);
        }
        let promise = node.leader_ballot();
        let leader = promise.pid;
        let config_id = node.config_id();
        let me = node.me();
        let leads = leader == me && node.is_ready_leader();
        if !leads {
            // Entries other nodes sent while this node led: never placed, safe to resend.
            for (from, req, _) in std::mem::take(&mut self.remote) {
                self.tell(from, req, RemoteOutcome::NotLeader);
            }
        }
        if self.waiting.is_empty() && self.remote.is_empty() {
            return;
        }
        if leads && self.hold_for_batch(now) {
            return;
        }
        if leader == me {
            if leads {
                for (from, req, entry) in std::mem::take(&mut self.remote) {
                    self.place(node, entry, Owner::Remote { from, req }, now);
                }
                let mut keep = VecDeque::new();
                while let Some(req) = self.waiting.pop_front() {
                    let Some(append) = self.local.get_mut(&req) else {
                        continue;
                    };
                    if append.sealed_in == Some(config_id) {
                        keep.push_back(req);
                    } else if let Some(entry) = append.entry.take() {
                        self.place(node, entry, Owner::Local(req), now);
                    }
                }
                self.waiting.extend(keep);
            }
            return;
        }
        let route = if leader == 0 {
            None
        } else {
            self.route(node, leader)
        };
        let Some((to, incarnation, relayed)) = route else {
            self.fail_unreachable(leader != 0, config_id, now);
            return;
        };
        let mut entries = Vec::with_capacity(self.waiting.len());
        let mut keep = VecDeque::new();
        while let Some(req) = self.waiting.pop_front() {
            let Some(append) = self.local.get_mut(&req) else {
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
        self.waiting = keep;
        if !self.waiting.is_empty() {
            self.fail_unreachable(true, config_id, now);
        }
        if !entries.is_empty() {
            let msg = WireMessage::Append {
                incarnation: self.incarnation,
                ballot: promise,
                entries,
            };
            self.outgoing.push((to, msg));
        }
    }

    /// Batching on the leader: while a batch is in flight (placed, not yet decided), new
    /// entries wait for its decision, so that everything that arrives meanwhile goes out as
    /// one batch (one storage write, one message per follower). A lone writer never waits (no
    /// batch is in flight); a waiting entry is held at most `batch_hold`, and a backlog of
    /// `MAX_HELD` goes out at once.
    fn hold_for_batch(&mut self, now: Micros) -> bool {
        const MAX_HELD: usize = 4096;
        let backlog = self.waiting.len() + self.remote.len();
        if self.placed.is_empty() || backlog >= MAX_HELD {
            self.held_since = None;
            return false;
        }
        let since = *self.held_since.get_or_insert(now);
        if now.saturating_sub(since) < self.limits.batch_hold {
            return true;
        }
        self.held_since = None;
        false
    }

    /// With the leader known but out of reach (or no leader known), appends wait: for a known
    /// leader at most `leader_unreachable`, then they fail with `NoLeader`.
    fn fail_unreachable(&mut self, leader_known: bool, config_id: u32, now: Micros) {
        if !leader_known {
            return;
        }
        let limit = self.limits.leader_unreachable;
        let mut still = VecDeque::new();
        while let Some(req) = self.waiting.pop_front() {
            let expired = match self.local.get(&req) {
                // Waiting for the next configuration, not for a leader: until its deadline.
                Some(a) if a.sealed_in == Some(config_id) => false,
                Some(LocalAppend {
                    state: LocalState::Waiting { since },
                    ..
                }) => now.saturating_sub(*since) >= limit,
                _ => continue,
            };
            if expired {
                self.answer(req, Err(AppendError::NoLeader), now);
            } else {
                still.push_back(req);
            }
        }
        self.waiting = still;
    }

    /// Appends `entry` on this node, which leads; records its index for `owner`.
    fn place(&mut self, node: &mut impl NodeView<T>, entry: T, owner: Owner, now: Micros) {
        let before = node.log_end();
        match node.append(entry) {
            Ok(()) => {
                self.placed_in = node.promise();
                if node.log_end() == before + 1 {
                    if let Owner::Local(req) = owner {
                        if let Some(a) = self.local.get_mut(&req) {
                            a.state = LocalState::Placed;
                        }
                    }
                    self.placed.insert(before, owner);
                } else {
                    // Not where a leader puts it: the core kept it for later. Its fate
                    // cannot be followed from here.
                    tracing::warn!(pid = node.me(), "an append did not land at the log's end");
                    self.in_doubt(owner, None, now);
                }
            }
            Err(ProposeErr::PendingReconfigEntry(entry)) if node.follows_reconfigurations() => {
                // The log is sealed; the next configuration takes it (a remote sender
                // learns `Sealed` and sends it again there).
                let config_id = node.config_id();
                match owner {
                    Owner::Local(req) => {
                        if let Some(a) = self.local.get_mut(&req) {
                            a.entry = Some(entry);
                            a.sealed_in = Some(config_id);
                            a.state = LocalState::Waiting { since: now };
                            self.waiting.push_back(req);
                        }
                    }
                    Owner::Remote { from, req } => self.tell(from, req, RemoteOutcome::Sealed),
                }
            }
            Err(err) => match owner {
                Owner::Local(req) => self.answer(req, Err(AppendError::Propose(err)), now),
                Owner::Remote { from, req } => {
                    let outcome = match err {
                        ProposeErr::PendingReconfigEntry(_) => RemoteOutcome::Sealed,
                        err => RemoteOutcome::Rejected(format!("{err:?}")),
                    };
                    self.tell(from, req, outcome)
                }
            },
        }
    }

    fn in_doubt(&mut self, owner: Owner, idx: Option<usize>, now: Micros) {
        match owner {
            Owner::Local(req) => {
                self.answer(req, Err(AppendError::InDoubt { log_entry_idx: idx }), now)
            }
            Owner::Remote { from, req } => self.tell(from, req, RemoteOutcome::InDoubt { idx }),
        }
    }

    /// Settles what the last call into the core decided. Called after every call that can
    /// change the ballot or the decided index.
    pub(crate) fn observe(&mut self, node: &impl NodeView<T>, now: Micros) {
        if self.placed.is_empty() {
            return;
        }
        if node.promise() != self.placed_in {
            for (idx, owner) in std::mem::take(&mut self.placed) {
                self.settle(owner, idx, false, now);
            }
            return;
        }
        let decided = node.decided_idx();
        while let Some(entry) = self.placed.first_entry() {
            if *entry.key() >= decided {
                break;
            }
            let (idx, owner) = entry.remove_entry();
            self.settle(owner, idx, true, now);
        }
        // A leader deposed before its batch was written takes the batch back: what is no longer
        // in its log has an unknown fate.
        let log_end = node.log_end();
        while let Some(entry) = self.placed.last_entry() {
            if *entry.key() < log_end {
                break;
            }
            let (idx, owner) = entry.remove_entry();
            self.settle(owner, idx, false, now);
        }
    }

    /// Entries another node asks this one, as leader of `ballot`, to append.
    pub(crate) fn on_remote_append(
        &mut self,
        node: &impl NodeView<T>,
        from: NodeId,
        incarnation: u64,
        ballot: Ballot,
        entries: Vec<(u64, T)>,
        now: Micros,
    ) {
        self.note_incarnation(from, incarnation, now);
        let promise = node.promise();
        let leads = ballot == promise && node.is_ready_leader() && node.leader_ballot() == promise;
        // Not the leader, but following the same one and connected to it: relay.
        let relays = !leads
            && ballot == promise
            && promise.pid != node.me()
            && from != promise.pid
            && self
                .route(node, promise.pid)
                .is_some_and(|(to, _, relayed)| to == promise.pid && !relayed);
        for (req, entry) in entries {
            let room = self.pending() < self.limits.max_pending;
            if leads && room {
                self.remote.push((from, req, entry));
            } else if relays && room {
                let deadline = now + self.limits.relay_timeout;
                self.enqueue(entry, Reply::Relay { to: from, req }, now, deadline);
            } else {
                self.tell(from, req, RemoteOutcome::NotLeader);
            }
        }
    }

    /// The leader's answer about entries this node sent it.
    pub(crate) fn on_outcomes(
        &mut self,
        node: &impl NodeView<T>,
        from: NodeId,
        incarnation: u64,
        outcomes: Vec<(u64, RemoteOutcome)>,
        now: Micros,
    ) {
        self.note_incarnation(from, incarnation, now);
        for (req, outcome) in outcomes {
            let Some(append) = self.local.get_mut(&req) else {
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
            let same_life = sent_to == incarnation;
            let result = match outcome {
                RemoteOutcome::Decided { idx } => Ok(idx),
                RemoteOutcome::InDoubt { idx } => Err(AppendError::InDoubt { log_entry_idx: idx }),
                RemoteOutcome::NotLeader if same_life => {
                    // That life of the leader did not take it: safe to send it again.
                    append.state = LocalState::Waiting { since: now };
                    self.waiting.push_back(req);
                    continue;
                }
                RemoteOutcome::NotLeader => Err(AppendError::InDoubt {
                    log_entry_idx: None,
                }),
                RemoteOutcome::Sealed if same_life && node.follows_reconfigurations() => {
                    // Never appended there; the next configuration takes it.
                    append.sealed_in = Some(config_id);
                    append.state = LocalState::Waiting { since: now };
                    self.waiting.push_back(req);
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
            self.answer(req, result, now);
        }
    }

    /// A peer's runtime announced its incarnation; a new one means it restarted, and entries
    /// sent to its previous life will get no answer.
    pub(crate) fn note_incarnation(&mut self, peer: NodeId, incarnation: u64, now: Micros) {
        let previous = self.incarnations.insert(peer, incarnation);
        if previous.is_some_and(|p| p != incarnation) {
            self.abandon_sent_to(peer, now);
        }
    }

    /// The connection to `peer` broke (answers queued on it are lost) or it restarted: what
    /// was sent to it has an unknown fate.
    pub(crate) fn abandon_sent_to(&mut self, peer: NodeId, now: Micros) {
        let lost: Vec<u64> = self
            .local
            .iter()
            .filter(|(_, a)| matches!(a.state, LocalState::Sent { to, .. } if to == peer))
            .map(|(req, _)| *req)
            .collect();
        for req in lost {
            self.answer(
                req,
                Err(AppendError::InDoubt {
                    log_entry_idx: None,
                }),
                now,
            );
        }
    }

    /// This node retired with its configuration: appends waiting for the next one fail.
    pub(crate) fn fail_waiting_retired(&mut self, now: Micros) {
        while let Some(req) = self.waiting.pop_front() {
            let entry = self.local.get_mut(&req).and_then(|a| a.entry.take());
            let err = match entry {
                Some(entry) => AppendError::Propose(ProposeErr::PendingReconfigEntry(entry)),
                None => AppendError::InDoubt {
                    log_entry_idx: None,
                },
            };
            self.answer(req, Err(err), now);
        }
    }

    /// Answers the appends whose deadline passed.
    pub(crate) fn expire(&mut self, now: Micros) {
        let expired: Vec<(u64, bool)> = self
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
            self.answer(req, Err(err), now);
        }
        let local = &self.local;
        self.waiting.retain(|req| local.contains_key(req));
    }
}
