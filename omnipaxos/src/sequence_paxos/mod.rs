//! Sequence Paxos, the replication half of OmniPaxos.
//!
//! One server is leader (role [`Role::Leader`]), the others follow. A new leader runs the
//! Prepare phase: it collects promises from a read quorum, adopts the most up-to-date log among
//! them and synchronises every follower with an `AcceptSync` from the longest prefix the two
//! logs provably share. In the Accept phase it streams entries in `AcceptDecide` messages and
//! decides an index once a write quorum has accepted it. Followers check the ballot and the
//! sequence number of every leader message; a gap makes them ask for a fresh sync.
//!
//! Inputs: `handle` (messages), `propose`/`reconfigure`, `handle_leader` (from BLE),
//! `resend_messages` and `flush_batch_timeout` (from `tick`). Outputs: messages in `outgoing`,
//! state in [`InternalStorage`]. Every method that writes returns a [`StorageError`] on failure;
//! the caller then stops the instance.
//!
//! Roles live in `leader.rs` and `follower.rs`, compaction in `compaction.rs`, reads in
//! `reads.rs`.

mod compaction;
mod follower;
mod forwarding;
mod leader;
mod lease;
mod read_index;
mod reads;

use crate::ballot::Ballot;
use crate::config::ClusterConfig;
use crate::errors::propose::ProposeErr;
use crate::ids::{ConfigurationId, NodeId};
use crate::logging::log;
use crate::messages::sequence_paxos::{PaxosMessage, PaxosMsg, PrepareReq};
use crate::quorum::Quorum;
use crate::storage::internal_storage::{InternalStorage, StorageResult};
use crate::storage::{Entry, StopSign, Storage};
use follower::FollowerState;
use leader::LeaderState;
pub use lease::ReadLease;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Follower,
    Leader,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Leader: collecting promises. Follower: promised, waiting for the leader's sync.
    Prepare,
    /// Replicating entries.
    Accept,
    /// Lost track of the leader's log (restart, gap, reconnect): asking for a fresh Prepare.
    Recover,
    /// Fresh start: no leader known yet.
    None,
}

pub(crate) struct SequencePaxos<T: Entry, B: Storage<T>> {
    pub(crate) internal_storage: InternalStorage<T, B>,
    pid: NodeId,
    /// The configuration this instance serves; a reconfiguration must name a greater one.
    config_id: ConfigurationId,
    peers: Vec<NodeId>,
    /// Whether compaction requests from the leader are carried out here
    /// ([`OmniPaxos::set_remote_compaction`](crate::OmniPaxos::set_remote_compaction)).
    remote_compaction: bool,
    quorum: Quorum,
    role: Role,
    phase: Phase,
    outgoing: Vec<PaxosMessage<T>>,
    /// Entries proposed here while no leader could take them; kept until one can.
    pending_proposals: Vec<T>,
    /// A reconfiguration proposed here while no leader could take it.
    pending_stopsign: Option<StopSign>,
    forward_state: forwarding::ForwardState,
    reads: read_index::ReadIndexState,
    lease: lease::LeaseState,
    leader_state: LeaderState<T>,
    follower_state: FollowerState<T>,
}

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    pub(crate) fn new(
        internal_storage: InternalStorage<T, B>,
        pid: NodeId,
        config_id: ConfigurationId,
        nodes: &[NodeId],
        quorum: Quorum,
        buffer_size: usize,
        read_timeout_ticks: u64,
    ) -> Self {
        let peers: Vec<NodeId> = nodes.iter().copied().filter(|p| *p != pid).collect();
        // Numbers this instance gives its forwards and reads start from a random base drawn
        // from the standard library's per-process hash keys, so a restarted server never reuses
        // a number of an earlier life, whose late duplicates may still be in flight.
        let incarnation = RandomState::new().hash_one(pid);
        Self {
            internal_storage,
            pid,
            config_id,
            remote_compaction: true,
            leader_state: LeaderState::new(peers.len()),
            follower_state: FollowerState::default(),
            peers,
            quorum,
            role: Role::Follower,
            phase: Phase::None,
            outgoing: Vec::with_capacity(buffer_size.min(1024)),
            pending_proposals: Vec::new(),
            pending_stopsign: None,
            forward_state: forwarding::ForwardState::new(incarnation),
            reads: read_index::ReadIndexState::new(read_timeout_ticks, incarnation),
            lease: lease::LeaseState::default(),
        }
    }

    /// Start-up after a crash: ask every peer for a fresh Prepare.
    pub(crate) fn start_recovery(&mut self) {
        self.phase = Phase::Recover;
        self.send_prepare_req_to_all();
    }

    /// Moves the reads that may be served into `out`.
    pub(crate) fn take_read_states(&mut self, out: &mut Vec<crate::read_state::ReadState>) {
        self.reads.take_done(out);
    }

    /// Moves the reads that failed into `out`.
    pub(crate) fn take_read_failures(&mut self, out: &mut Vec<crate::read_state::ReadFailure>) {
        self.reads.take_failed(out);
    }

    pub(crate) fn set_remote_compaction(&mut self, allowed: bool) {
        self.remote_compaction = allowed;
    }

    pub(crate) fn remote_compaction(&self) -> bool {
        self.remote_compaction
    }

    pub(crate) fn pid(&self) -> NodeId {
        self.pid
    }

    pub(crate) fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    pub(crate) fn promise(&self) -> Ballot {
        self.internal_storage.promise()
    }

    pub(crate) fn is_accepting_leader(&self) -> bool {
        self.role == Role::Leader && self.phase == Phase::Accept
    }

    pub(crate) fn role_and_phase(&self) -> (Role, Phase) {
        (self.role, self.phase)
    }

    /// Moves all pending messages into `buffer` and closes the merge window of the pending
    /// `AcceptDecide`/`Accepted`/`ProposalForward` messages.
    pub(crate) fn take_outgoing_into<M>(
        &mut self,
        buffer: &mut Vec<M>,
        wrap: fn(PaxosMessage<T>) -> M,
    ) {
        buffer.extend(self.outgoing.drain(..).map(wrap));
        self.leader_state.close_merge_window();
        self.follower_state.pending_accepted = None;
        self.forward_state.close_merge_window();
    }

    /// Every input a handler drops goes through here: logged once, at debug level (feature
    /// `logging`), with the reason.
    fn dropped(&self, what: &str, from: NodeId, why: &str) {
        log!(debug, self.pid, "dropped {what} from {from}: {why}");
    }

    fn send(&mut self, to: NodeId, msg: PaxosMsg<T>) {
        self.outgoing.push(PaxosMessage {
            from: self.pid,
            to,
            msg,
        });
    }

    /// Dispatches one message. Messages for another server or from outside the configuration
    /// are dropped; each handler drops what does not fit its state.
    pub(crate) fn handle(&mut self, m: PaxosMessage<T>) -> StorageResult<()> {
        if m.to != self.pid || !self.peers.contains(&m.from) {
            self.dropped(
                "a message",
                m.from,
                "not for this server, or from outside the configuration",
            );
            return Ok(());
        }
        let from = m.from;
        match m.msg {
            PaxosMsg::PrepareReq(req) => self.handle_prepare_req(req, from),
            PaxosMsg::Prepare(prep) => self.handle_prepare(prep, from)?,
            PaxosMsg::Promise(prom) => self.handle_promise(prom, from)?,
            PaxosMsg::AcceptSync(sync) => self.handle_accept_sync(sync, from)?,
            PaxosMsg::AcceptDecide(acc) => self.handle_accept_decide(acc, from)?,
            PaxosMsg::Accepted(acc) => self.handle_accepted(acc, from)?,
            PaxosMsg::NotAccepted(not) => self.handle_not_accepted(not.n, from),
            PaxosMsg::Decide(dec) => self.handle_decide(dec, from)?,
            PaxosMsg::ProposalForward(entries) => self.handle_forwarded_proposals(entries)?,
            PaxosMsg::ForwardedEntries(fwd) => self.handle_forwarded_entries(fwd, from)?,
            PaxosMsg::Compaction(c) => self.handle_compaction(c, from)?,
            PaxosMsg::AcceptStopSign(acc) => self.handle_accept_stopsign(acc, from)?,
            PaxosMsg::ForwardStopSign(ss) => self.handle_forwarded_stopsign(ss, from)?,
            PaxosMsg::ReadIndexReq(req) => self.handle_read_index_req(req, from),
            PaxosMsg::ReadIndexResp(resp) => self.handle_read_index_resp(resp, from),
            PaxosMsg::ReadConfirm(req) => self.handle_read_confirm(req, from),
            PaxosMsg::ReadConfirmed(conf) => self.handle_read_confirmed(conf, from),
        }
        Ok(())
    }

    /// Ballot Leader Election elected `leader`.
    pub(crate) fn handle_leader(&mut self, leader: Ballot) -> StorageResult<()> {
        if leader.pid == self.pid {
            // With leases, not while this server holds another leader's ballot: the election
            // asks again every round (`OmniPaxos::tick`).
            if leader > self.promise() && !self.lease_blocks(leader) {
                self.become_leader(leader)?;
            }
        } else if self.phase == Phase::Recover && leader.pid != 0 {
            self.send(
                leader.pid,
                PaxosMsg::PrepareReq(PrepareReq { n: self.promise() }),
            );
        }
        Ok(())
    }

    /// The transport reconnected to `pid`: messages may have been lost, so resynchronise.
    pub(crate) fn reconnected(&mut self, pid: NodeId) {
        if pid == self.pid || !self.peers.contains(&pid) {
            return;
        }
        if self.role == Role::Follower && pid == self.promise().pid {
            self.phase = Phase::Recover;
        }
        self.send(pid, PaxosMsg::PrepareReq(PrepareReq { n: self.promise() }));
    }

    fn send_prepare_req_to_all(&mut self) {
        let n = self.promise();
        self.send_to_all_peers(PaxosMsg::PrepareReq(PrepareReq { n }));
    }

    /// The one broadcast: `msg` to every peer of the configuration.
    fn send_to_all_peers(&mut self, msg: PaxosMsg<T>) {
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            self.send(peer, msg.clone());
        }
    }

    /// A server has promised a ballot above ours: if we lead, step down and resynchronise.
    fn observe_higher_ballot(&mut self, n: Ballot) {
        if n <= self.promise() {
            return;
        }
        if self.role == Role::Leader {
            log!(info, self.pid, "stepping down: a peer promised {n}");
            self.step_down();
        }
        self.phase = Phase::Recover;
    }

    /// Leaves the leader role. The part of the unwritten batch that was never sent to anyone
    /// goes back to the pending proposals and reaches the next leader instead of being
    /// overwritten.
    fn step_down(&mut self) {
        self.reads.leadership_lost();
        self.lease_lost();
        self.role = Role::Follower;
        self.leader_state.reset(self.peers.len());
        let batch = self.internal_storage.take_batch();
        self.pending_proposals.splice(0..0, batch);
    }

    /// Resend timer: repairs what lost messages may have left undone.
    pub(crate) fn resend_messages(&mut self) -> StorageResult<()> {
        match (self.role, self.phase) {
            (Role::Leader, _) => self.resend_as_leader(),
            (Role::Follower, Phase::Prepare) => self.resend_promise(),
            (Role::Follower, Phase::Recover) => self.send_prepare_req_to_all(),
            (Role::Follower, Phase::Accept) => self.resend_accepted(),
            (Role::Follower, Phase::None) => {}
        }
        Ok(())
    }

    /// Group commit: writes the complete batches appended since the last call in one storage
    /// write, then replicates them. Called before messages leave (`take_outgoing_messages`) and
    /// on every tick, so no message ever depends on an unwritten entry.
    pub(crate) fn write_pending(&mut self) -> StorageResult<()> {
        if !self.is_accepting_leader() {
            return Ok(());
        }
        // Reads asked in this burst of input share one confirmation round, which starts here;
        // entries written in the same burst carry it (their acknowledgements confirm it).
        let log_end_before = self.internal_storage.accepted_idx();
        let sent = self.internal_storage.unwritten_sent();
        let mut written = self.internal_storage.write_pending()?;
        let writes_out = !written.is_empty();
        if writes_out {
            // Entries replicated before the write (`replicate_unwritten`) are not sent again.
            written.drain(..sent.min(written.len()));
            if !written.is_empty() {
                self.send_accept_decide(written);
            }
            self.try_decide()?;
        }
        self.start_read_round(log_end_before, writes_out);
        Ok(())
    }

    /// Sends the followers the entries that wait for the next write, before it: they then write
    /// them while this leader does. Whether this leader counts itself for them still waits for
    /// its own write. Returns whether anything was sent.
    pub(crate) fn replicate_unwritten(&mut self) -> bool {
        if !self.is_accepting_leader() {
            return false;
        }
        let fresh = self.internal_storage.take_unsent();
        if fresh.is_empty() {
            return false;
        }
        self.send_accept_decide(fresh);
        true
    }

    /// Flush timer: write and replicate a partial batch.
    pub(crate) fn flush_batch_timeout(&mut self) -> StorageResult<()> {
        if self.phase != Phase::Accept {
            return Ok(());
        }
        let written = self.internal_storage.flush_batch()?;
        if written.is_empty() {
            return Ok(());
        }
        match self.role {
            Role::Leader => {
                self.send_accept_decide(written);
                self.try_decide()
            }
            Role::Follower => {
                self.send_accepted();
                Ok(())
            }
        }
    }

    /// Proposes one entry: appended if leading, forwarded to the leader if following one,
    /// kept pending otherwise.
    pub(crate) fn append(&mut self, entry: T) -> Result<(), ProposeErr<T>> {
        if self.internal_storage.stopsign().is_some() {
            return Err(ProposeErr::PendingReconfigEntry(entry));
        }
        self.propose_entry(entry);
        Ok(())
    }

    /// Proposes a StopSign for `new_configuration`.
    pub(crate) fn reconfigure(
        &mut self,
        new_configuration: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), ProposeErr<T>> {
        if let Err(err) = new_configuration.validate_successor_of(self.config_id) {
            return Err(ProposeErr::ConfigError(err, new_configuration, metadata));
        }
        if self.internal_storage.stopsign().is_some() || self.pending_stopsign.is_some() {
            return Err(ProposeErr::PendingReconfigConfig(
                new_configuration,
                metadata,
            ));
        }
        self.propose_stopsign(StopSign::with(new_configuration, metadata))
            .map_err(ProposeErr::StorageFailed)
    }
}

/// The result of checking a leader message's sequence number.
#[derive(Debug, PartialEq, Eq)]
enum SeqCheck {
    /// The next message of the session: handle it.
    Expected,
    /// A duplicate or an old message: drop it.
    Stale,
    /// Messages are missing: resynchronise.
    Gap,
}
