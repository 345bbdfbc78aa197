//! Proposals: appended on the leader, forwarded by a synchronised follower to its leader, and
//! kept locally while neither is possible (no leader known, or the leader is not ready), to be
//! handed over as soon as this server is synchronised or becomes leader.
//!
//! Forwards carry an identity: the ballot of the leader they are for, the sender's incarnation
//! and a counter. The incarnation is drawn at random when the instance is built (from the
//! standard library's per-process hash keys), so a server that restarts never reuses an
//! identity of an earlier life, without any storage. The leader takes a forward only for its own
//! current ballot and only once per identity; its table of identities lives as long as the ballot
//! does on that leader (a restarted leader leads with a higher ballot), so a duplicate can never
//! be appended twice, however late it arrives. A forward that reaches a server which no longer
//! leads that ballot is dropped (see `docs/lost_appends.md`).

use super::{Phase, Role, SequencePaxos};
use crate::ballot::Ballot;
use crate::ids::NodeId;
use crate::logging::log;
use crate::messages::sequence_paxos::{ForwardedEntries, PaxosMessage, PaxosMsg};
use crate::storage::internal_storage::StorageResult;
use crate::storage::{Entry, StopSign, Storage};
use crate::util::SequenceNumber;
use std::collections::BTreeMap;

pub(super) struct ForwardState {
    /// This instance's incarnation: random, so no restart of this server reuses it.
    incarnation: u64,
    /// Forwards sent by this instance.
    sent: u64,
    /// Index in `outgoing` of a not-yet-taken forward, so forwards merge into one message.
    pending: Option<usize>,
    /// The ballot `received` is about: this server's ballot as leader.
    received_in: Ballot,
    /// The highest forward counter taken from each (sender, incarnation) in `received_in`.
    received: BTreeMap<(NodeId, u64), u64>,
}

impl ForwardState {
    pub(super) fn new(incarnation: u64) -> Self {
        Self {
            incarnation,
            sent: 0,
            pending: None,
            received_in: Ballot::default(),
            received: BTreeMap::new(),
        }
    }

    pub(super) fn close_merge_window(&mut self) {
        self.pending = None;
    }

    /// The identity of the next forward.
    fn next_identity(&mut self) -> SequenceNumber {
        self.sent += 1;
        SequenceNumber {
            session: self.incarnation,
            counter: self.sent,
        }
    }

    /// Records a forward for ballot `n` from `from`; false if it was taken before.
    fn take_once(&mut self, n: Ballot, from: NodeId, id: SequenceNumber) -> bool {
        if self.received_in != n {
            self.received_in = n;
            self.received.clear();
        }
        let seen = self.received.entry((from, id.session)).or_insert(0);
        if id.counter <= *seen {
            return false;
        }
        *seen = id.counter;
        true
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
        let n = self.promise();
        let seq_num = self.forward_state.next_identity();
        let fwd = ForwardedEntries {
            n,
            seq_num,
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
        if self.role != Role::Leader || fwd.n != self.promise() {
            self.dropped("a forward", from, "this server does not lead its ballot");
            return Ok(());
        }
        if !self.forward_state.take_once(fwd.n, from, fwd.seq_num) {
            self.dropped("a forward", from, "a duplicate");
            return Ok(());
        }
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

    pub(super) fn handle_forwarded_stopsign(
        &mut self,
        ss: StopSign,
        from: NodeId,
    ) -> StorageResult<()> {
        if self.internal_storage.stopsign().is_some() || self.pending_stopsign.is_some() {
            self.dropped(
                "a forwarded StopSign",
                from,
                "a StopSign is already accepted or pending",
            );
            return Ok(());
        }
        // Checked here too: the proposer's check ran against its own view, and a forward is
        // input from the network.
        if let Err(err) = ss.next_config.validate_successor_of(self.config_id) {
            self.dropped("a forwarded StopSign", from, &err.to_string());
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
