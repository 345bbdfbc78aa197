//! Linearizable reads without writing the log: the read index.
//!
//! A read asked at time `t0` may be served from any state that includes every entry decided
//! before `t0`. The leader knows such an index, its own decided index, provided that (1) it has
//! decided everything its log held when it took over (so its decided index covers what earlier
//! leaders decided), and (2) it was still the leader at `t0`: a write quorum of servers that
//! still followed its ballot *after* `t0` proves that no read quorum had promised a higher ballot
//! before `t0`, so no other leader can have decided anything it does not know about.
//!
//! Reads are batched: all reads that arrive while a confirmation round is in flight share the
//! next round. A round is confirmed by `ReadConfirmed` answers, or by `Accepted` messages for
//! entries sent after the round started (a write load confirms reads with no extra message).
//! A follower forwards its reads to the leader (`ReadIndexReq`) and serves them from its own
//! state once its decided index reaches the index the leader returns.
//!
//! Every read ends either as a [`ReadState`] or as a [`ReadFailure`]: on a leader change, when
//! its deadline (a number of ticks) passes, never silently.

use super::{Phase, Role, SequencePaxos};
use crate::ballot::Ballot;
use crate::errors::ReadErr;
use crate::ids::NodeId;
use crate::messages::sequence_paxos::{
    PaxosMsg, ReadConfirm, ReadConfirmed, ReadIndexReq, ReadIndexResp,
};
use crate::read_state::{ReadFailure, ReadState};
use crate::storage::{Entry, Storage};
use std::collections::BTreeMap;

/// Where a read the leader serves came from.
#[derive(Copy, Clone, Debug)]
enum Origin {
    /// Asked on this server, with the user's number.
    Local(u64),
    /// Asked on a follower, with the follower's number.
    Follower(NodeId, u64),
}

#[derive(Copy, Clone, Debug)]
struct LeaderRead {
    origin: Origin,
    /// The tick after which the read fails.
    deadline: u64,
}

/// A confirmation round in flight.
struct Round {
    id: u64,
    /// The tick the round started at: a lease it confirms runs from here.
    started: u64,
    /// The decided index when the round started: the index its reads get.
    index: usize,
    /// An `Accepted` above this index acknowledges entries sent after the round started.
    ack_above: usize,
    /// Who confirmed, this server included.
    confirmed: Vec<NodeId>,
    /// Who confirmed with a `ReadConfirmed` (and so holds the ballot, with leases on), this
    /// server included: only these count for a lease.
    lease_confirmed: Vec<NodeId>,
    reads: Vec<LeaderRead>,
}

pub(super) struct ReadIndexState {
    /// Ticks seen, for deadlines.
    now: u64,
    /// How many ticks a read may take.
    timeout_ticks: u64,
    /// Leader: reads waiting for the next round (or for the leader to be ready).
    waiting: Vec<LeaderRead>,
    round: Option<Round>,
    rounds_started: u64,
    /// Leader: reads are served once the decided index reaches this, the length of the log the
    /// leader adopted when it took over.
    ready_from: usize,
    /// Follower: reads asked of the leader, by number: the user's number and the deadline.
    asked: BTreeMap<u64, (u64, u64)>,
    /// The ballot the asked reads were sent to.
    asked_of: Ballot,
    next_id: u64,
    done: Vec<ReadState>,
    failed: Vec<ReadFailure>,
}

impl ReadIndexState {
    pub(super) fn new(timeout_ticks: u64, incarnation: u64) -> Self {
        Self {
            now: 0,
            timeout_ticks,
            waiting: Vec::new(),
            round: None,
            rounds_started: 0,
            ready_from: usize::MAX,
            asked: BTreeMap::new(),
            asked_of: Ballot::default(),
            next_id: incarnation,
            done: Vec::new(),
            failed: Vec::new(),
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.now
    }

    pub(super) fn take_done(&mut self, out: &mut Vec<ReadState>) {
        out.append(&mut self.done);
    }

    pub(super) fn take_failed(&mut self, out: &mut Vec<ReadFailure>) {
        out.append(&mut self.failed);
    }

    fn fail_local(&mut self, reads: impl IntoIterator<Item = LeaderRead>, reason: ReadErr) {
        for read in reads {
            if let Origin::Local(ctx) = read.origin {
                self.failed.push(ReadFailure {
                    ctx,
                    reason: reason.clone(),
                });
            }
        }
    }

    /// This server stopped leading: its reads can no longer be confirmed. (A follower's reads
    /// fail on the follower, which sees its leader change or its deadline pass.)
    pub(super) fn leadership_lost(&mut self) {
        let mut reads = std::mem::take(&mut self.waiting);
        if let Some(round) = self.round.take() {
            reads.extend(round.reads);
        }
        self.fail_local(reads, ReadErr::LeaderChanged);
        self.ready_from = usize::MAX;
    }
}

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    /// Asks for a linearizable read numbered `ctx`; its outcome comes out of `take_read_states`
    /// or `take_read_failures`.
    pub(crate) fn read_index(&mut self, ctx: u64) -> Result<(), ReadErr> {
        if self.internal_storage.stopsign().is_some() {
            return Err(ReadErr::Reconfigured);
        }
        let deadline = self.reads.now + self.reads.timeout_ticks;
        match (self.role, self.phase) {
            (Role::Leader, Phase::Accept) if self.lease_serves_now() => {
                let index = self.internal_storage.decided_idx();
                self.reads.done.push(ReadState { ctx, index });
                Ok(())
            }
            (Role::Leader, Phase::Prepare | Phase::Accept) => {
                // The round starts when messages are next taken (`write_pending`), so every read
                // asked in this burst of input shares it.
                self.reads.waiting.push(LeaderRead {
                    origin: Origin::Local(ctx),
                    deadline,
                });
                Ok(())
            }
            (Role::Follower, Phase::Accept) => {
                let Some(leader) = self.known_leader() else {
                    return Err(ReadErr::NoLeader);
                };
                let n = self.promise();
                if self.reads.asked_of != n {
                    self.fail_asked_reads(ReadErr::LeaderChanged);
                    self.reads.asked_of = n;
                }
                // Numbers start at a random base per instance: a late response to a read of an
                // earlier life of this server never matches a read of this one.
                self.reads.next_id = self.reads.next_id.wrapping_add(1);
                let id = self.reads.next_id;
                self.reads.asked.insert(id, (ctx, deadline));
                self.send(leader, PaxosMsg::ReadIndexReq(ReadIndexReq { n, id }));
                Ok(())
            }
            _ => Err(ReadErr::NoLeader),
        }
    }

    fn fail_asked_reads(&mut self, reason: ReadErr) {
        for (_, (ctx, _)) in std::mem::take(&mut self.reads.asked) {
            self.reads.failed.push(ReadFailure {
                ctx,
                reason: reason.clone(),
            });
        }
    }

    /// The leader took over with its log adopted: reads are served once all of it is decided.
    pub(super) fn reads_ready_from(&mut self, log_len: usize) {
        self.reads.ready_from = log_len;
    }

    /// Starts a confirmation round for the waiting reads, if none is in flight and the leader is
    /// ready; called when messages are taken. `ack_above` is the log end before the entries
    /// written in this burst, and `writes_out` whether there were any: their acknowledgements
    /// then confirm the round, with no message of its own.
    pub(super) fn start_read_round(&mut self, ack_above: usize, writes_out: bool) {
        let s = &self.internal_storage;
        let ready = self.is_accepting_leader() && s.decided_idx() >= self.reads.ready_from;
        if !ready || self.reads.round.is_some() || self.reads.waiting.is_empty() {
            return;
        }
        self.reads.rounds_started += 1;
        let round = Round {
            id: self.reads.rounds_started,
            started: self.reads.now,
            index: s.decided_idx(),
            ack_above,
            confirmed: vec![self.pid],
            lease_confirmed: vec![self.pid],
            reads: std::mem::take(&mut self.reads.waiting),
        };
        let id = round.id;
        self.reads.round = Some(round);
        if !self.complete_read_round_if_confirmed() && !writes_out {
            self.send_read_confirm(id, &[]);
        }
    }

    fn send_read_confirm(&mut self, round: u64, except: &[NodeId]) {
        let n = self.promise();
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            if !except.contains(&peer) {
                self.send(peer, PaxosMsg::ReadConfirm(ReadConfirm { n, round }));
            }
        }
    }

    /// Resend check: ask again those that have not confirmed the round in flight.
    pub(super) fn resend_read_confirm(&mut self) {
        if let Some(round) = &self.reads.round {
            let (id, confirmed) = (round.id, round.confirmed.clone());
            self.send_read_confirm(id, &confirmed);
        }
    }

    /// `from` still follows this leader's ballot, as of after the round in flight started.
    fn read_confirmed_by(&mut self, from: NodeId) {
        let Some(round) = self.reads.round.as_mut() else {
            return;
        };
        if !round.confirmed.contains(&from) {
            round.confirmed.push(from);
            self.complete_read_round_if_confirmed();
        }
    }

    /// Leader: an `Accepted` from `from` for `accepted_idx`; it confirms the round in flight if
    /// it acknowledges entries sent after the round started.
    pub(super) fn read_confirmed_by_accepted(&mut self, from: NodeId, accepted_idx: usize) {
        if self
            .reads
            .round
            .as_ref()
            .is_some_and(|r| accepted_idx > r.ack_above)
        {
            self.read_confirmed_by(from);
        }
    }

    fn complete_read_round_if_confirmed(&mut self) -> bool {
        let Some(round) = &self.reads.round else {
            return false;
        };
        if round.confirmed.len() < self.quorum.write {
            return false;
        }
        let round = self.reads.round.take().expect("checked above");
        if round.lease_confirmed.len() >= self.quorum.write {
            self.lease_confirmed(round.started);
        }
        let n = self.promise();
        for read in round.reads {
            match read.origin {
                Origin::Local(ctx) => self.reads.done.push(ReadState {
                    ctx,
                    index: round.index,
                }),
                Origin::Follower(pid, id) => self.send(
                    pid,
                    PaxosMsg::ReadIndexResp(ReadIndexResp {
                        n,
                        id,
                        index: round.index,
                    }),
                ),
            }
        }
        true
    }

    pub(super) fn handle_read_index_req(&mut self, req: ReadIndexReq, from: NodeId) {
        if self.role != Role::Leader || req.n != self.promise() {
            self.dropped(
                "a ReadIndexReq",
                from,
                "not for the ballot this server leads",
            );
            return;
        }
        if self.lease_serves_now() {
            let (n, index) = (self.promise(), self.internal_storage.decided_idx());
            let resp = ReadIndexResp {
                n,
                id: req.id,
                index,
            };
            self.send(from, PaxosMsg::ReadIndexResp(resp));
            return;
        }
        let deadline = self.reads.now + self.reads.timeout_ticks;
        self.reads.waiting.push(LeaderRead {
            origin: Origin::Follower(from, req.id),
            deadline,
        });
    }

    /// A leader with a valid lease that has decided what it adopted answers at once.
    fn lease_serves_now(&self) -> bool {
        self.lease_valid() && self.internal_storage.decided_idx() >= self.reads.ready_from
    }

    pub(super) fn handle_read_index_resp(&mut self, resp: ReadIndexResp, from: NodeId) {
        if resp.n != self.promise() || resp.n != self.reads.asked_of {
            self.dropped(
                "a ReadIndexResp",
                from,
                "not from the leader the read was sent to",
            );
            return;
        }
        match self.reads.asked.remove(&resp.id) {
            Some((ctx, _)) => self.reads.done.push(ReadState {
                ctx,
                index: resp.index,
            }),
            None => self.dropped(
                "a ReadIndexResp",
                from,
                "a duplicate, or its read timed out",
            ),
        }
    }

    pub(super) fn handle_read_confirm(&mut self, req: ReadConfirm, from: NodeId) {
        if req.n != self.promise() || req.n.pid != from {
            self.dropped(
                "a ReadConfirm",
                from,
                "not from the leader this server follows",
            );
            return;
        }
        if !self.lease_granted() {
            self.dropped(
                "a ReadConfirm",
                from,
                "another ballot waits for this server's read lease hold to end",
            );
            return;
        }
        self.send(
            from,
            PaxosMsg::ReadConfirmed(ReadConfirmed {
                n: req.n,
                round: req.round,
            }),
        );
    }

    pub(super) fn handle_read_confirmed(&mut self, conf: ReadConfirmed, from: NodeId) {
        let current = self.reads.round.as_ref().map(|r| r.id);
        if self.role != Role::Leader || conf.n != self.promise() || current != Some(conf.round) {
            self.dropped("a ReadConfirmed", from, "not for the round in flight");
            return;
        }
        if let Some(round) = self.reads.round.as_mut() {
            if !round.lease_confirmed.contains(&from) {
                round.lease_confirmed.push(from);
            }
        }
        self.read_confirmed_by(from);
    }

    /// One tick: reads past their deadline fail, and a follower's reads fail once its leader
    /// changed.
    pub(crate) fn tick_reads(&mut self) {
        self.reads.now += 1;
        let now = self.reads.now;
        let r = &self.reads;
        if r.asked.is_empty() && r.waiting.is_empty() && r.round.is_none() {
            return; // nothing pending: every tick of a server without reads stays this cheap
        }
        if !self.reads.asked.is_empty() && self.reads.asked_of != self.promise() {
            self.fail_asked_reads(ReadErr::LeaderChanged);
        }
        let expired: Vec<u64> = self
            .reads
            .asked
            .iter()
            .filter(|(_, (_, deadline))| *deadline < now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((ctx, _)) = self.reads.asked.remove(&id) {
                self.reads.failed.push(ReadFailure {
                    ctx,
                    reason: ReadErr::Timeout,
                });
            }
        }
        let (late, keep): (Vec<LeaderRead>, Vec<LeaderRead>) =
            std::mem::take(&mut self.reads.waiting)
                .into_iter()
                .partition(|r| r.deadline < now);
        self.reads.waiting = keep;
        self.reads.fail_local(late, ReadErr::Timeout);
        if let Some(round) = self.reads.round.as_mut() {
            let (late, keep): (Vec<LeaderRead>, Vec<LeaderRead>) = std::mem::take(&mut round.reads)
                .into_iter()
                .partition(|r| r.deadline < now);
            round.reads = keep;
            self.reads.fail_local(late, ReadErr::Timeout);
        }
    }
}
