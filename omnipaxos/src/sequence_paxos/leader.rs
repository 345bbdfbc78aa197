//! The leader role: Prepare phase, adopting the most up-to-date log, synchronising followers,
//! replicating entries and deciding.

use super::{Phase, Role, SequencePaxos};
use crate::ballot::Ballot;
use crate::ids::NodeId;
use crate::logging::log;
use crate::messages::sequence_paxos::{
    AcceptDecide, AcceptStopSign, AcceptSync, Accepted, Decide, PaxosMsg, Prepare, PrepareReq,
    Promise,
};
use crate::storage::internal_storage::{StorageResult, SyncOutcome};
use crate::storage::{Entry, StopSign, Storage};
use crate::util::{LogSync, SequenceNumber};

/// What a follower's promise said about its log.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct PromiseMeta {
    n_accepted: Ballot,
    accepted_idx: usize,
    decided_idx: usize,
}

/// The leader's view of one follower within its ballot.
struct PeerProgress<T: Entry> {
    promise: Option<PromiseMeta>,
    /// Entries the follower offered in its promise, kept until the read quorum is reached.
    log_sync: Option<LogSync<T>>,
    /// Whether the follower was sent an `AcceptSync` and now receives the entry stream.
    synced: bool,
    /// The follower's accepted index in this ballot, as last reported.
    accepted_idx: usize,
    seq: SequenceNumber,
    /// Index in `outgoing` of a not-yet-taken `AcceptDecide` to this follower.
    pending_msg: Option<usize>,
    /// Something was sent to this follower since the last resend check: an answer may still be
    /// on its way, so the check leaves it alone this time.
    sent_since_check: bool,
}

impl<T: Entry> PeerProgress<T> {
    /// Numbers the next message of this follower's session. `merge_slot` is where the message
    /// will sit in `outgoing` if later entries may be merged into it (an `AcceptDecide`).
    fn next_message(&mut self, merge_slot: Option<usize>) -> SequenceNumber {
        self.seq = self.seq.next();
        self.pending_msg = merge_slot;
        self.sent_since_check = true;
        self.seq
    }
}

impl<T: Entry> Default for PeerProgress<T> {
    fn default() -> Self {
        Self {
            promise: None,
            log_sync: None,
            synced: false,
            accepted_idx: 0,
            seq: SequenceNumber::default(),
            pending_msg: None,
            sent_since_check: false,
        }
    }
}

/// Per-follower progress, aligned with `SequencePaxos::peers`.
pub(super) struct LeaderState<T: Entry> {
    progress: Vec<PeerProgress<T>>,
    /// The promise whose log the leader adopted.
    max_promise: PromiseMeta,
    /// Reused by `quorum_accepted`, so deciding allocates nothing per `Accepted`.
    scratch: Vec<usize>,
}

impl<T: Entry> LeaderState<T> {
    pub(super) fn new(num_peers: usize) -> Self {
        Self {
            progress: (0..num_peers).map(|_| PeerProgress::default()).collect(),
            max_promise: PromiseMeta::default(),
            scratch: Vec::with_capacity(num_peers + 1),
        }
    }

    pub(super) fn reset(&mut self, num_peers: usize) {
        *self = Self::new(num_peers);
    }

    /// Forgets every promise but keeps the session counters: within one ballot sessions must
    /// keep growing so followers can tell a new sync from a late duplicate.
    fn forget_promises(&mut self) {
        for p in &mut self.progress {
            *p = PeerProgress {
                seq: p.seq,
                ..PeerProgress::default()
            };
        }
    }

    pub(super) fn close_merge_window(&mut self) {
        for p in &mut self.progress {
            p.pending_msg = None;
        }
    }

    fn promised_count(&self) -> usize {
        self.progress.iter().filter(|p| p.promise.is_some()).count()
    }

    /// The highest index that `write` servers (the leader, accepting `own`, included) have
    /// accepted in this ballot, if that many servers are synchronised.
    fn quorum_accepted(&mut self, own: usize, write: usize) -> Option<usize> {
        self.scratch.clear();
        self.scratch.push(own);
        for p in &self.progress {
            if p.synced {
                self.scratch.push(p.accepted_idx);
            }
        }
        if write == 0 || self.scratch.len() < write {
            return None;
        }
        self.scratch.sort_unstable_by(|a, b| b.cmp(a));
        Some(self.scratch[write - 1])
    }

    /// Accepted indexes of every server as known here, `None` for those not synchronised.
    pub(super) fn accepted_indexes(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.progress
            .iter()
            .map(|p| p.synced.then_some(p.accepted_idx))
    }
}

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    fn peer_index(&self, pid: NodeId) -> Option<usize> {
        self.peers.iter().position(|p| *p == pid)
    }

    fn prepare_message(&self) -> PaxosMsg<T> {
        let s = &self.internal_storage;
        PaxosMsg::Prepare(Prepare {
            n: s.promise(),
            decided_idx: s.decided_idx(),
            n_accepted: s.accepted_round(),
            accepted_idx: s.accepted_idx(),
        })
    }

    /// BLE elected this server with ballot `n`: start the Prepare phase.
    pub(super) fn become_leader(&mut self, n: Ballot) -> StorageResult<()> {
        self.reads.leadership_lost();
        self.lease_lost();
        // Entries still in the batch are written now; the log synchronisation covers them.
        self.internal_storage.flush_batch()?;
        self.internal_storage.set_promise(n)?;
        log!(info, self.pid, "leading with ballot {n}, Prepare phase");
        self.role = Role::Leader;
        self.phase = Phase::Prepare;
        self.leader_state.reset(self.peers.len());
        for i in 0..self.peers.len() {
            self.send_prepare(i);
        }
        if self.quorum.is_read_quorum(1) {
            self.handle_majority_promises()?;
        }
        Ok(())
    }

    pub(super) fn handle_promise(&mut self, prom: Promise<T>, from: NodeId) -> StorageResult<()> {
        if self.role != Role::Leader || prom.n != self.promise() {
            self.dropped("a Promise", from, "not for the ballot this server leads");
            return Ok(());
        }
        let Some(i) = self.peer_index(from) else {
            self.dropped("a Promise", from, "not a peer");
            return Ok(());
        };
        let meta = PromiseMeta {
            n_accepted: prom.n_accepted,
            accepted_idx: prom.accepted_idx,
            decided_idx: prom.decided_idx,
        };
        let progress = &mut self.leader_state.progress[i];
        match self.phase {
            Phase::Prepare => {
                progress.promise = Some(meta);
                progress.log_sync = prom.log_sync;
                if self
                    .quorum
                    .is_read_quorum(self.leader_state.promised_count() + 1)
                {
                    self.handle_majority_promises()?;
                }
            }
            Phase::Accept => {
                // A late promise: the log is settled, this follower just needs a sync.
                progress.promise = Some(meta);
                self.send_accept_sync(i)?;
            }
            Phase::Recover | Phase::None => self.dropped(
                "a Promise",
                from,
                "this leader is not preparing or accepting",
            ),
        }
        Ok(())
    }

    /// A read quorum promised: adopt the most up-to-date log among the promises (Paxos' "value
    /// with the highest accepted round"), then synchronise every promised follower.
    fn handle_majority_promises(&mut self) -> StorageResult<()> {
        let s = &self.internal_storage;
        let own = PromiseMeta {
            n_accepted: s.accepted_round(),
            accepted_idx: s.accepted_idx(),
            decided_idx: s.decided_idx(),
        };
        let mut max = own;
        let mut max_peer = None;
        let mut max_decided = own.decided_idx;
        for (i, p) in self.leader_state.progress.iter().enumerate() {
            if let Some(meta) = p.promise {
                max_decided = max_decided.max(meta.decided_idx);
                if (meta.n_accepted, meta.accepted_idx) > (max.n_accepted, max.accepted_idx) {
                    max = meta;
                    max_peer = Some(i);
                }
            }
        }
        let sync = max_peer.and_then(|i| self.leader_state.progress[i].log_sync.take());
        for p in &mut self.leader_state.progress {
            p.log_sync = None;
        }
        let n = self.promise();
        if self.internal_storage.sync_log(n, max_decided, sync)? == SyncOutcome::Gap {
            // The most up-to-date promise does not connect to our log (it was computed against
            // another Prepare). Ask again on the resend timer rather than adopt a log with a
            // hole; asking at once could make duplicated promises multiply into a storm.
            log!(
                warn,
                self.pid,
                "promise sync does not fit the log, re-preparing"
            );
            self.leader_state.forget_promises();
            return Ok(());
        }
        self.leader_state.max_promise = max;
        if self.internal_storage.stopsign().is_none() {
            let pending = std::mem::take(&mut self.pending_proposals);
            if !pending.is_empty() {
                self.internal_storage.append_entries(pending);
            }
            self.internal_storage.flush_batch()?;
            if let Some(ss) = self.pending_stopsign.take() {
                self.internal_storage.set_stopsign(Some(ss))?;
            }
        }
        self.phase = Phase::Accept;
        log!(
            info,
            self.pid,
            "ballot {n} in Accept phase, log length {}",
            self.internal_storage.accepted_idx()
        );
        for i in 0..self.peers.len() {
            if self.leader_state.progress[i].promise.is_some() {
                self.send_accept_sync(i)?;
            }
        }
        // Reads wait until everything adopted (what earlier leaders may have decided) is
        // decided in this ballot.
        let adopted = self.internal_storage.accepted_idx();
        self.reads_ready_from(adopted);
        self.try_decide()
    }

    /// Sends follower `i` the leader's log from the longest prefix the two provably share.
    fn send_accept_sync(&mut self, i: usize) -> StorageResult<()> {
        let Some(meta) = self.leader_state.progress[i].promise else {
            return Ok(());
        };
        let n = self.promise();
        let max = self.leader_state.max_promise;
        let storage = &self.internal_storage;
        // Logs accepted in the same round are prefixes of that round's leader log; otherwise
        // only the decided prefix is known to match (a stale leader may have appended more).
        let shared = if meta.n_accepted == n {
            meta.accepted_idx
        } else if meta.n_accepted == max.n_accepted {
            meta.accepted_idx.min(max.accepted_idx)
        } else {
            meta.decided_idx
        };
        let log_sync = storage.log_sync_from(shared)?;
        let decided_idx = storage.decided_idx();
        let progress = &mut self.leader_state.progress[i];
        progress.seq = progress.seq.new_session();
        progress.synced = true;
        progress.accepted_idx = 0;
        progress.pending_msg = None;
        progress.sent_since_check = true;
        let seq_num = progress.seq;
        let peer = self.peers[i];
        self.send(
            peer,
            PaxosMsg::AcceptSync(AcceptSync {
                n,
                seq_num,
                decided_idx,
                log_sync,
            }),
        );
        Ok(())
    }

    /// The `AcceptDecide` to follower `i` still waiting in `outgoing`: later entries and
    /// decisions merge into it instead of making new messages.
    fn pending_accept_decide(&mut self, i: usize) -> Option<&mut AcceptDecide<T>> {
        let pos = self.leader_state.progress[i].pending_msg?;
        match self.outgoing.get_mut(pos).map(|m| &mut m.msg) {
            Some(PaxosMsg::AcceptDecide(acc)) => Some(acc),
            _ => None,
        }
    }

    /// Sends follower `i` the next message of its session, built from its sequence number.
    /// A `mergeable` message (an `AcceptDecide`) takes later entries and decisions until
    /// `outgoing` is taken.
    fn send_in_session(
        &mut self,
        i: usize,
        mergeable: bool,
        msg: impl FnOnce(SequenceNumber) -> PaxosMsg<T>,
    ) {
        let slot = mergeable.then_some(self.outgoing.len());
        let seq_num = self.leader_state.progress[i].next_message(slot);
        let peer = self.peers[i];
        self.send(peer, msg(seq_num));
    }

    /// The synchronised followers: those that receive the entry stream.
    fn synced_followers(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.leader_state.progress[i].synced)
            .collect()
    }

    /// Streams newly written entries to every synchronised follower.
    pub(super) fn send_accept_decide(&mut self, mut entries: Vec<T>) {
        let n = self.promise();
        let decided_idx = self.internal_storage.decided_idx();
        let synced = self.synced_followers();
        for (k, &i) in synced.iter().enumerate() {
            // The last follower takes the entries themselves; the others get a copy.
            let batch = if k + 1 == synced.len() {
                std::mem::take(&mut entries)
            } else {
                entries.clone()
            };
            if let Some(acc) = self.pending_accept_decide(i) {
                acc.entries.extend(batch);
                acc.decided_idx = decided_idx;
                continue;
            }
            self.send_in_session(i, true, |seq_num| {
                PaxosMsg::AcceptDecide(AcceptDecide {
                    n,
                    seq_num,
                    decided_idx,
                    entries: batch,
                })
            });
        }
    }

    pub(super) fn handle_accepted(&mut self, acc: Accepted, from: NodeId) -> StorageResult<()> {
        if self.role != Role::Leader || self.phase != Phase::Accept || acc.n != self.promise() {
            self.dropped("an Accepted", from, "not for the ballot this server leads");
            return Ok(());
        }
        let Some(i) = self.peer_index(from) else {
            self.dropped("an Accepted", from, "not a peer");
            return Ok(());
        };
        let own_accepted = self.internal_storage.accepted_idx();
        if !self.leader_state.progress[i].synced {
            self.dropped(
                "an Accepted",
                from,
                "the follower is being synchronised again",
            );
            return Ok(());
        }
        let progress = &mut self.leader_state.progress[i];
        // A follower cannot have accepted more than we sent; cap what a faulty peer claims.
        let claimed = acc.accepted_idx.min(own_accepted);
        if claimed <= progress.accepted_idx {
            if self.internal_storage.decided_idx() == 0 {
                return Ok(()); // nothing decided yet: nothing to tell
            }
            // Nothing new: the follower is waiting for a decision it may have missed (it repeats
            // its acknowledgement on its resend timer until it learns one), or this is a
            // duplicate. Tell it where we are; followers never answer a `Decide`, so this
            // cannot turn into an exchange.
            self.send_decide_to(i);
            return Ok(());
        }
        progress.accepted_idx = claimed;
        self.read_confirmed_by_accepted(from, claimed);
        if claimed > self.internal_storage.decided_idx() {
            self.try_decide()?;
        }
        Ok(())
    }

    /// Decides the highest index a write quorum (leader included) has accepted in this ballot.
    pub(super) fn try_decide(&mut self) -> StorageResult<()> {
        if !self.is_accepting_leader() {
            return Ok(());
        }
        let own = self.internal_storage.accepted_idx();
        let Some(quorum_accepted) = self.leader_state.quorum_accepted(own, self.quorum.write)
        else {
            return Ok(());
        };
        // Followers can be ahead of this leader's own write (pipelined replication); what is
        // decided here never passes what is written here.
        let quorum_accepted = quorum_accepted.min(own);
        if quorum_accepted > self.internal_storage.decided_idx() {
            self.internal_storage.set_decided_idx(quorum_accepted)?;
            self.send_decide();
        }
        Ok(())
    }

    /// Tells every synchronised follower the decided index, piggybacked on a pending
    /// `AcceptDecide` when there is one.
    fn send_decide(&mut self) {
        // Indices, not `synced_followers()`: deciding is the hot path and allocates nothing.
        for i in 0..self.peers.len() {
            if self.leader_state.progress[i].synced {
                self.send_decide_to(i);
            }
        }
    }

    fn send_decide_to(&mut self, i: usize) {
        let n = self.promise();
        let decided_idx = self.internal_storage.decided_idx();
        if let Some(acc) = self.pending_accept_decide(i) {
            acc.decided_idx = decided_idx;
            return;
        }
        self.send_in_session(i, false, |seq_num| {
            PaxosMsg::Decide(Decide {
                n,
                seq_num,
                decided_idx,
            })
        });
    }

    /// Seals the log with `ss` and asks the followers to accept it.
    pub(super) fn accept_stopsign_as_leader(&mut self, ss: StopSign) -> StorageResult<()> {
        let written = self.internal_storage.flush_batch()?;
        if !written.is_empty() {
            self.send_accept_decide(written);
        }
        self.internal_storage.set_stopsign(Some(ss.clone()))?;
        log!(info, self.pid, "accepted {ss}");
        let n = self.promise();
        for i in self.synced_followers() {
            let ss = ss.clone();
            self.send_in_session(i, false, |seq_num| {
                PaxosMsg::AcceptStopSign(AcceptStopSign { n, seq_num, ss })
            });
        }
        self.try_decide()
    }

    /// A follower lost track (restart, gap): forget its promise and prepare it again.
    pub(super) fn handle_prepare_req(&mut self, req: PrepareReq, from: NodeId) {
        if self.role != Role::Leader || req.n > self.promise() {
            self.dropped("a PrepareReq", from, "this server does not lead");
            return;
        }
        let Some(i) = self.peer_index(from) else {
            self.dropped("a PrepareReq", from, "not a peer");
            return;
        };
        // Keep the session counter: sessions must keep growing within this ballot, so that old
        // messages (and forwards tagged with an old session) are recognised as stale.
        let seq = self.leader_state.progress[i].seq;
        self.leader_state.progress[i] = PeerProgress {
            seq,
            ..PeerProgress::default()
        };
        self.send_prepare(i);
    }

    fn send_prepare(&mut self, i: usize) {
        let prepare = self.prepare_message();
        self.leader_state.progress[i].sent_since_check = true;
        let peer = self.peers[i];
        self.send(peer, prepare);
    }

    pub(super) fn handle_not_accepted(&mut self, n: Ballot, from: NodeId) {
        if self.role == Role::Leader {
            self.observe_higher_ballot(n);
        } else {
            self.dropped("a NotAccepted", from, "this server does not lead");
        }
    }

    /// Resend check, on the resend timer, for each follower nothing was sent to since the last
    /// check (an answer to that may still be on its way): a `Prepare` while it has not
    /// promised; while it has not acknowledged the whole log (an `AcceptDecide` or its
    /// `Accepted` was lost), an empty `AcceptDecide` with the next sequence number, a probe that
    /// it always answers, or that reveals a gap and makes it ask for a fresh sync. The check
    /// repeats every period until answered: one message per follower per period at most.
    pub(super) fn resend_as_leader(&mut self) {
        let n = self.promise();
        let own_accepted = self.internal_storage.accepted_idx();
        let decided_idx = self.internal_storage.decided_idx();
        let in_accept = self.phase == Phase::Accept;
        for i in 0..self.peers.len() {
            let progress = &mut self.leader_state.progress[i];
            if std::mem::take(&mut progress.sent_since_check) {
                continue;
            }
            if progress.promise.is_none() {
                self.send_prepare(i);
            } else if in_accept && progress.synced && progress.accepted_idx < own_accepted {
                self.send_in_session(i, false, |seq_num| {
                    PaxosMsg::AcceptDecide(AcceptDecide {
                        n,
                        seq_num,
                        decided_idx,
                        entries: Vec::new(),
                    })
                });
            }
            // What the check itself sent is not "recent": the next check may repeat it.
            self.leader_state.progress[i].sent_since_check = false;
        }
        self.resend_read_confirm();
    }

    /// The leader-side view of each server's accepted index, self included, keyed by pid.
    pub(crate) fn known_accepted_indexes(&self) -> Vec<(NodeId, Option<usize>)> {
        let own = (self.pid, Some(self.internal_storage.accepted_idx()));
        std::iter::once(own)
            .chain(
                self.peers
                    .iter()
                    .copied()
                    .zip(self.leader_state.accepted_indexes()),
            )
            .collect()
    }
}
