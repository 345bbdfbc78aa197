//! The follower role: promising, applying the leader's sync, accepting the entry stream in
//! sequence, and learning decisions.

use super::{Phase, Role, SeqCheck, SequencePaxos};
use crate::ballot::Ballot;
use crate::ids::NodeId;
use crate::logging::log;
use crate::messages::sequence_paxos::{
    AcceptDecide, AcceptStopSign, AcceptSync, Accepted, Decide, NotAccepted, PaxosMessage,
    PaxosMsg, Prepare, PrepareReq, Promise,
};
use crate::storage::internal_storage::{StorageResult, SyncOutcome};
use crate::storage::{Entry, Storage};
use crate::util::{LogSync, SequenceNumber};

pub(super) struct FollowerState<T: Entry> {
    /// Sequence number of the last leader message handled in the current session.
    pub(super) seq: SequenceNumber,
    /// The last promise, resent until the leader's sync arrives.
    cached_promise: Option<Promise<T>>,
    /// Index in `outgoing` of a not-yet-taken `Accepted`, so acknowledgements merge.
    pub(super) pending_accepted: Option<usize>,
    /// A `Promise` or `Accepted` was sent since the last resend check: the leader's answer may
    /// still be on its way, so the check leaves it alone this time.
    sent_since_check: bool,
}

impl<T: Entry> Default for FollowerState<T> {
    fn default() -> Self {
        Self {
            seq: SequenceNumber::default(),
            cached_promise: None,
            pending_accepted: None,
            sent_since_check: false,
        }
    }
}

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    pub(super) fn handle_prepare(&mut self, prep: Prepare, from: NodeId) -> StorageResult<()> {
        if prep.n.pid != from {
            self.dropped("a Prepare", from, "its ballot names another server");
            return Ok(());
        }
        let promise = self.promise();
        if prep.n < promise {
            self.dropped("a Prepare", from, "stale ballot (answered NotAccepted)");
            self.send(from, PaxosMsg::NotAccepted(NotAccepted { n: promise }));
            return Ok(());
        }
        if prep.n != promise && self.lease_blocks(prep.n) {
            self.dropped("a Prepare", from, "a read lease holds another ballot");
            return Ok(());
        }
        if prep.n == promise && self.role == Role::Leader {
            self.dropped("a Prepare", from, "it carries this leader's own ballot");
            return Ok(());
        }
        // An equal ballot is answered too, even in the Accept phase: the leader sends Prepare
        // only to followers it has no promise from, so it lost track of this one (e.g. a late
        // duplicate PrepareReq reset it) and will resynchronise it with a new session.
        if self.role == Role::Leader {
            log!(info, self.pid, "stepping down for ballot {}", prep.n);
            self.step_down();
        }
        // Entries still in the batch are written now; the promise reports them.
        self.internal_storage.flush_batch()?;
        if prep.n > promise {
            self.internal_storage.set_promise(prep.n)?;
            // Sessions are numbered per ballot; within the same ballot they keep growing, so a
            // late duplicate of an older AcceptSync is recognised and dropped.
            self.follower_state.seq = SequenceNumber::default();
        }
        self.role = Role::Follower;
        self.phase = Phase::Prepare;
        self.follower_state.pending_accepted = None;
        let log_sync = self.promise_sync(&prep)?;
        let s = &self.internal_storage;
        let promise = Promise {
            n: prep.n,
            n_accepted: s.accepted_round(),
            decided_idx: s.decided_idx(),
            accepted_idx: s.accepted_idx(),
            log_sync,
        };
        self.follower_state.cached_promise = Some(promise.clone());
        self.follower_state.sent_since_check = true;
        self.send(from, PaxosMsg::Promise(promise));
        Ok(())
    }

    /// The entries the leader lacks, if this log is more up to date than the leader's.
    fn promise_sync(&self, prep: &Prepare) -> StorageResult<Option<LogSync<T>>> {
        let s = &self.internal_storage;
        let na = s.accepted_round();
        let sync_idx = if na > prep.n_accepted {
            // Accepted in a later round: everything after the leader's decided prefix may differ.
            prep.decided_idx
        } else if na == prep.n_accepted && s.accepted_idx() > prep.accepted_idx {
            // Same round, longer log: the leader's log is a prefix of ours.
            prep.accepted_idx
        } else {
            return Ok(None);
        };
        // Indices count the StopSign's slot, which is not an entry: the entries to send end at
        // our log end, and the StopSign travels in its own field.
        s.log_sync_from(sync_idx).map(Some)
    }

    pub(super) fn handle_accept_sync(
        &mut self,
        acc: AcceptSync<T>,
        from: NodeId,
    ) -> StorageResult<()> {
        if !self.check_leader_message("an AcceptSync", acc.n, from) {
            return Ok(());
        }
        if (self.role, self.phase) != (Role::Follower, Phase::Prepare) {
            self.dropped("an AcceptSync", from, "not waiting for a sync");
            return Ok(());
        }
        if acc.seq_num.session <= self.follower_state.seq.session {
            self.dropped("an AcceptSync", from, "a duplicate of an older session");
            return Ok(());
        }
        if self.is_stale_sync_of_this_round(&acc) {
            self.dropped(
                "an AcceptSync",
                from,
                "stale: it ends before the log accepted in its round",
            );
            return Ok(());
        }
        let outcome = self
            .internal_storage
            .sync_log(acc.n, acc.decided_idx, Some(acc.log_sync))?;
        if outcome == SyncOutcome::Gap {
            log!(
                warn,
                self.pid,
                "AcceptSync from {from} leaves a gap, asking for a new Prepare"
            );
            self.phase = Phase::Recover;
            self.send(from, PaxosMsg::PrepareReq(PrepareReq { n: acc.n }));
            return Ok(());
        }
        self.phase = Phase::Accept;
        self.follower_state.seq = acc.seq_num;
        self.follower_state.cached_promise = None;
        self.send_accepted();
        self.forward_pending();
        Ok(())
    }

    /// Within one round the leader's log only grows, and its sync to a follower starts from
    /// what the follower promised to hold, so a genuine sync of the round this log was accepted
    /// in always ends at or beyond it. One that ends before it is a duplicate from earlier in the
    /// round: the session check cannot tell after a restart (sessions live in memory), and
    /// applying it would cut entries this server already acknowledged, which may be decided.
    fn is_stale_sync_of_this_round(&self, acc: &AcceptSync<T>) -> bool {
        let s = &self.internal_storage;
        let sync = &acc.log_sync;
        let sync_end = sync
            .sync_idx
            .saturating_add(sync.suffix.len())
            .saturating_add(usize::from(sync.stopsign.is_some()));
        acc.n == s.accepted_round() && sync_end < s.accepted_idx()
    }

    pub(super) fn handle_accept_decide(
        &mut self,
        acc: AcceptDecide<T>,
        from: NodeId,
    ) -> StorageResult<()> {
        if !self.accept_stream_message("an AcceptDecide", acc.n, acc.seq_num, from) {
            return Ok(());
        }
        // An empty one is the leader's resend check (it has not seen us acknowledge its whole
        // log): always answered.
        let probe = acc.entries.is_empty();
        let written = if self.internal_storage.stopsign().is_some() {
            0 // invariant of the leader: nothing follows a StopSign
        } else {
            self.internal_storage.append_entries_now(acc.entries)?
        };
        let flushed = self.learn_decided(acc.decided_idx)?;
        if written > 0 || flushed || probe {
            self.send_accepted();
        }
        Ok(())
    }

    pub(super) fn handle_decide(&mut self, dec: Decide, from: NodeId) -> StorageResult<()> {
        if !self.accept_stream_message("a Decide", dec.n, dec.seq_num, from) {
            return Ok(());
        }
        if self.learn_decided(dec.decided_idx)? {
            self.send_accepted();
        }
        Ok(())
    }

    pub(super) fn handle_accept_stopsign(
        &mut self,
        acc: AcceptStopSign,
        from: NodeId,
    ) -> StorageResult<()> {
        if !self.accept_stream_message("an AcceptStopSign", acc.n, acc.seq_num, from) {
            return Ok(());
        }
        self.internal_storage.flush_batch()?;
        self.internal_storage.set_stopsign(Some(acc.ss))?;
        self.send_accepted();
        Ok(())
    }

    /// Raises the decided index, writing the batch first if the leader decided entries that
    /// are still in it. Returns whether the batch was written.
    fn learn_decided(&mut self, decided_idx: usize) -> StorageResult<bool> {
        if decided_idx <= self.internal_storage.decided_idx() {
            return Ok(false);
        }
        let mut flushed = false;
        if decided_idx > self.internal_storage.accepted_idx()
            && self.internal_storage.batch_len() > 0
        {
            flushed = !self.internal_storage.flush_batch()?.is_empty();
        }
        self.internal_storage.set_decided_idx(decided_idx)?;
        Ok(flushed)
    }

    /// Common checks of the leader's entry stream: right ballot, Accept phase, in sequence.
    fn accept_stream_message(
        &mut self,
        what: &str,
        n: Ballot,
        seq_num: SequenceNumber,
        from: NodeId,
    ) -> bool {
        if !self.check_leader_message(what, n, from) {
            return false;
        }
        if (self.role, self.phase) != (Role::Follower, Phase::Accept) {
            self.dropped(what, from, "not in the accept phase");
            return false;
        }
        match self.check_sequence(seq_num) {
            SeqCheck::Expected => {
                self.follower_state.seq = seq_num;
                true
            }
            SeqCheck::Stale => {
                self.dropped(what, from, "a duplicate or an old message of the stream");
                false
            }
            SeqCheck::Gap => {
                self.dropped(
                    what,
                    from,
                    "messages before it are missing: resynchronising",
                );
                self.reconnected(from);
                false
            }
        }
    }

    fn check_sequence(&self, seq_num: SequenceNumber) -> SeqCheck {
        let current = self.follower_state.seq;
        if seq_num == current.next() {
            SeqCheck::Expected
        } else if seq_num <= current {
            SeqCheck::Stale
        } else {
            SeqCheck::Gap
        }
    }

    /// Whether a message of ballot `n` from `from` is from the leader this server promised.
    /// A lower ballot is told about the promise; a higher one means we missed its Prepare.
    fn check_leader_message(&mut self, what: &str, n: Ballot, from: NodeId) -> bool {
        if n.pid != from {
            self.dropped(what, from, "its ballot names another server");
            return false;
        }
        let promise = self.promise();
        if n == promise {
            return true;
        }
        self.dropped(
            what,
            from,
            "not from the ballot this server promised (answered)",
        );
        if n < promise {
            self.send(from, PaxosMsg::NotAccepted(NotAccepted { n: promise }));
        } else {
            self.observe_higher_ballot(n);
            self.send(from, PaxosMsg::PrepareReq(PrepareReq { n: promise }));
        }
        false
    }

    /// Acknowledges the accepted log, merging into an `Accepted` still waiting in `outgoing`.
    pub(super) fn send_accepted(&mut self) {
        let n = self.promise();
        let accepted_idx = self.internal_storage.accepted_idx();
        self.follower_state.sent_since_check = true;
        if let Some(pos) = self.follower_state.pending_accepted {
            if let Some(PaxosMessage {
                msg: PaxosMsg::Accepted(acc),
                ..
            }) = self.outgoing.get_mut(pos)
            {
                if acc.n == n {
                    acc.accepted_idx = accepted_idx;
                    return;
                }
            }
        }
        self.follower_state.pending_accepted = Some(self.outgoing.len());
        self.send(n.pid, PaxosMsg::Accepted(Accepted { n, accepted_idx }));
    }

    /// Resend check in the Accept phase: while something this server accepted is not known to
    /// be decided, it repeats its acknowledgement every period (unless it sent one in this
    /// period). The leader counts it if it was lost, and answers with its decided index if it
    /// was not, so neither a lost `Accepted` nor a lost `Decide` can stall an entry or a
    /// StopSign. Once everything accepted is decided, it stays quiet.
    pub(super) fn resend_accepted(&mut self) {
        let recent = std::mem::take(&mut self.follower_state.sent_since_check);
        let s = &self.internal_storage;
        if !recent && s.accepted_idx() > s.decided_idx() {
            self.send_accepted();
            self.follower_state.sent_since_check = false;
        }
    }

    /// Resend check in the Prepare phase: the promise again, unless it was sent in this period.
    pub(super) fn resend_promise(&mut self) {
        if std::mem::take(&mut self.follower_state.sent_since_check) {
            return;
        }
        match self.follower_state.cached_promise.clone() {
            Some(promise) => self.send(promise.n.pid, PaxosMsg::Promise(promise)),
            None => self.phase = Phase::Recover,
        }
    }
}
