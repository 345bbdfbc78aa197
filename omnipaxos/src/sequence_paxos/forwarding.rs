//! Proposals: appended on the leader, forwarded by a synchronised follower to its leader, and
//! kept locally while neither is possible (no leader known, or the leader is not ready), to be
//! handed over as soon as this server is synchronised or becomes leader.
//!
//! Forwards carry an identity (the sender's promised ballot, its sync session and a counter) that
//! only grows, so a receiver drops a duplicated or stale forward instead of appending it twice.

use super::{Phase, Role, SequencePaxos};
use crate::ballot_leader_election::Ballot;
use crate::logging::log;
use crate::messages::sequence_paxos::{ForwardedEntries, PaxosMessage, PaxosMsg};
use crate::storage::internal_storage::StorageResult;
use crate::storage::{Entry, StopSign, Storage};
use crate::util::{NodeId, SequenceNumber};

pub(super) struct ForwardState {
    /// Identity of the last forward this server sent.
    sent: SequenceNumber,
    /// Index in `outgoing` of a not-yet-taken forward, so forwards merge into one message.
    pending: Option<usize>,
    /// The newest forward identity received from each peer (aligned with `peers`).
    received: Vec<Option<(Ballot, SequenceNumber)>>,
}

impl ForwardState {
    pub(super) fn new(num_nodes: usize) -> Self {
        Self {
            sent: SequenceNumber::default(),
            pending: None,
            received: vec![None; num_nodes.saturating_sub(1)],
        }
    }

    pub(super) fn close_merge_window(&mut self) {
        self.pending = None;
    }
}

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    /// One entry: the hot path of `append`, without a vector per entry.
    pub(super) fn propose_entry(&mut self, entry: T) {
        match (self.role, self.phase) {
            (Role::Leader, Phase::Accept) => self.internal_storage.append_entry(entry),
            (Role::Follower, Phase::Accept) if self.known_leader().is_some() => {
                self.forward_proposals(vec![entry]);
            }
            _ => self.pending_proposals.push(entry),
        }
    }

    pub(super) fn propose_entries(&mut self, mut entries: Vec<T>) -> StorageResult<()> {
        match (self.role, self.phase) {
            (Role::Leader, Phase::Accept) => {
                // Written (and replicated) by `write_pending`, together with everything else
                // appended in this burst of input.
                if entries.len() == 1 {
                    let entry = entries.pop().expect("len checked to be 1");
                    self.internal_storage.append_entry(entry);
                } else {
                    self.internal_storage.append_entries(entries);
                }
            }
            (Role::Follower, Phase::Accept) if self.known_leader().is_some() => {
                self.forward_proposals(entries);
            }
            _ => self.pending_proposals.extend(entries),
        }
        Ok(())
    }

    /// The leader this follower has promised, if it is another server.
    pub(super) fn known_leader(&self) -> Option<NodeId> {
        let pid = self.promise().pid;
        (pid != 0 && pid != self.pid).then_some(pid)
    }

    /// Sends `entries` to the leader, merged into a forward still waiting in `outgoing`.
    fn forward_proposals(&mut self, entries: Vec<T>) {
        let Some(leader) = self.known_leader() else {
            self.pending_proposals.extend(entries);
            return;
        };
        if let Some(i) = self.forward_state.pending {
            if let Some(PaxosMessage {
                to,
                msg: PaxosMsg::ForwardedEntries(fwd),
                ..
            }) = self.outgoing.get_mut(i)
            {
                if *to == leader {
                    fwd.entries.extend(entries);
                    return;
                }
            }
        }
        let session = self.follower_state.seq.session;
        let n = self.promise();
        let sent = &mut self.forward_state.sent;
        *sent = if sent.session == session {
            sent.next()
        } else {
            SequenceNumber {
                session,
                counter: 1,
            }
        };
        let fwd = ForwardedEntries {
            n,
            seq_num: *sent,
            entries,
        };
        self.forward_state.pending = Some(self.outgoing.len());
        self.send(leader, PaxosMsg::ForwardedEntries(fwd));
    }

    pub(super) fn handle_forwarded_entries(
        &mut self,
        fwd: ForwardedEntries<T>,
        from: NodeId,
    ) -> StorageResult<()> {
        let Some(i) = self.peers.iter().position(|p| *p == from) else {
            return Ok(());
        };
        let id = (fwd.n, fwd.seq_num);
        let last = &mut self.forward_state.received[i];
        if last.is_some_and(|seen| id <= seen) {
            log!(
                debug,
                self.pid,
                "dropped a duplicate or stale forward from {from}"
            );
            return Ok(());
        }
        *last = Some(id);
        self.handle_forwarded_proposals(fwd.entries)
    }

    pub(super) fn handle_forwarded_proposals(&mut self, entries: Vec<T>) -> StorageResult<()> {
        if self.internal_storage.stopsign().is_some() {
            log!(
                warn,
                self.pid,
                "dropped {} forwarded entries: log sealed by a StopSign",
                entries.len()
            );
            return Ok(());
        }
        self.propose_entries(entries)
    }

    pub(super) fn propose_stopsign(&mut self, ss: StopSign) -> StorageResult<()> {
        match (self.role, self.phase) {
            (Role::Leader, Phase::Accept) => self.accept_stopsign_as_leader(ss)?,
            (Role::Follower, Phase::Accept) if self.known_leader().is_some() => {
                let leader = self.known_leader().expect("checked in the guard");
                self.send(leader, PaxosMsg::ForwardStopSign(ss));
            }
            _ => self.pending_stopsign = Some(ss),
        }
        Ok(())
    }

    pub(super) fn handle_forwarded_stopsign(&mut self, ss: StopSign) -> StorageResult<()> {
        if self.internal_storage.stopsign().is_some() || self.pending_stopsign.is_some() {
            return Ok(());
        }
        self.propose_stopsign(ss)
    }

    /// Hands the proposals kept here to the leader this follower was just synchronised with.
    pub(super) fn forward_pending(&mut self) {
        if self.internal_storage.stopsign().is_some() {
            return;
        }
        if !self.pending_proposals.is_empty() {
            let entries = std::mem::take(&mut self.pending_proposals);
            self.forward_proposals(entries);
        }
        if let (Some(ss), Some(leader)) = (self.pending_stopsign.take(), self.known_leader()) {
            self.send(leader, PaxosMsg::ForwardStopSign(ss));
        }
    }
}
