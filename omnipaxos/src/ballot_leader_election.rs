//! Ballot Leader Election (BLE), the election half of OmniPaxos.
//!
//! Every heartbeat round a server asks all peers for their ballots. At the end of the round it
//! counts the replies: with a quorum of replies (itself included) it is *quorum-connected*, and
//! only quorum-connected servers are candidates. A quorum-connected server follows the highest
//! candidate ballot it heard; if its current leader is no longer among the candidates (crashed,
//! or cut off from a quorum) it raises its own ballot above the leader's and stands the next
//! round. Servers report only their *own* ballot, so a server that is not quorum-connected can
//! never force elections on the others: this is what keeps OmniPaxos live in the quorum-loss,
//! constrained-election and chained scenarios where Raft livelocks (paper §4).
//!
//! Input: `handle` (heartbeats), `hb_timeout` (round end, driven by `tick`). Output: heartbeats
//! in `outgoing`, and the ballot of a newly elected leader returned from `hb_timeout`.

pub use crate::ballot::Ballot;

use crate::ids::{ConfigurationId, NodeId};
use crate::logging::log;
use crate::messages::ballot_leader_election::{
    BLEMessage, HeartbeatMsg, HeartbeatReply, HeartbeatRequest,
};
use crate::quorum::Quorum;

/// Round ends in a row at which a leader must be missing from the quorum-connected candidates
/// before a server stands against it. One is not enough: a leader that is alive but slow to
/// answer (a loaded machine) would be replaced, and under message loss every lost heartbeat
/// would be a leader change. Two keep a failover within three rounds.
const ROUNDS_MISSED_BEFORE_STANDING: u32 = 2;

/// Rounds a server restarted from storage follows its recovered leader without hearing it, as
/// long as a quorum-connected peer heard that leader (see `recovery_grace`).
const RECOVERY_GRACE_ROUNDS: u32 = 3;

/// The election state of one server.
pub(crate) struct BallotLeaderElection {
    pid: NodeId,
    peers: Vec<NodeId>,
    config_id: ConfigurationId,
    quorum: Quorum,
    /// This server's own ballot; raised to take over from a lost leader.
    current_ballot: Ballot,
    /// The ballot this server follows; `Ballot::default()` while undecided.
    leader: Ballot,
    /// A ballot Sequence Paxos promised above `leader`, seen at the end of the last round.
    watched_promise: Ballot,
    /// Whether this server heard from a quorum in its last round.
    quorum_connected: bool,
    /// Consecutive round ends at which the leader was not among the quorum-connected
    /// candidates (see [`ROUNDS_MISSED_BEFORE_STANDING`]).
    missed_rounds: u32,
    /// The leader was among this server's quorum-connected candidates at the end of its last
    /// round. Only then do heartbeat replies name it: a reply naming a leader *vouches* that
    /// the replier heard that leader, quorum-connected, a round ago.
    leader_seen: bool,
    /// The leader was taken from Sequence Paxos' promise (another server took over from this
    /// one, or a Prepare outran the heartbeats), not from this election's own count. Such a
    /// leader is not stood against while a peer vouches for it: the server that just lost its
    /// leadership fighting back is the one-way-cut ping-pong.
    leader_adopted: bool,
    /// Rounds a server restarted from storage keeps following its recovered leader, unheard,
    /// while a peer vouches for it: its first rounds may end before its connections are up.
    recovery_grace: u32,
    /// The leader this server stood against, while it stands.
    lost: Ballot,
    /// This server, standing, let one round pass for a higher peer that was about to stand too.
    waited_for_rival: bool,
    current_round: u32,
    /// Replies of the current round, one per peer (duplicates overwrite).
    replies: Vec<(NodeId, HeartbeatReply)>,
    /// Replies of the previous round, for `get_ui_states`.
    previous_replies: Vec<HeartbeatReply>,
    outgoing: Vec<BLEMessage>,
}

impl BallotLeaderElection {
    /// Creates the election state and starts round 1. `recovered_leader` is the promise found in
    /// storage at start-up, if it names a real ballot.
    pub(crate) fn new(
        pid: NodeId,
        nodes: &[NodeId],
        config_id: ConfigurationId,
        priority: u32,
        quorum: Quorum,
        recovered_leader: Option<Ballot>,
    ) -> Self {
        let mut ble = Self {
            pid,
            peers: nodes.iter().copied().filter(|p| *p != pid).collect(),
            config_id,
            quorum,
            current_ballot: Ballot::with(config_id, 1, priority, pid),
            leader: Ballot::default(),
            watched_promise: Ballot::default(),
            quorum_connected: false,
            missed_rounds: 0,
            leader_seen: false,
            leader_adopted: false,
            recovery_grace: 0,
            lost: Ballot::default(),
            waited_for_rival: false,
            current_round: 0,
            replies: Vec::new(),
            previous_replies: Vec::new(),
            outgoing: Vec::new(),
        };
        if let Some(promise) = recovered_leader {
            // After a restart this server must not claim a ballot it may have used before the
            // crash with a different log; it starts from 0 and follows its last promise.
            ble.current_ballot.n = 0;
            ble.leader = promise;
            ble.recovery_grace = RECOVERY_GRACE_ROUNDS;
        }
        ble.start_round();
        ble
    }

    pub(crate) fn current_ballot(&self) -> Ballot {
        self.current_ballot
    }

    pub(crate) fn leader(&self) -> Ballot {
        self.leader
    }

    pub(crate) fn previous_replies(&self) -> &[HeartbeatReply] {
        &self.previous_replies
    }

    pub(crate) fn take_outgoing(&mut self) -> std::vec::Drain<'_, BLEMessage> {
        self.outgoing.drain(..)
    }

    /// Sequence Paxos took over manually (`try_become_leader`) with `ballot`: adopt it so the
    /// heartbeats advertise it and the next round does not undo it.
    pub(crate) fn adopt_own_ballot(&mut self, ballot: Ballot) {
        self.current_ballot = ballot;
        self.follow(ballot);
    }

    /// Changes this server's priority; takes effect in the ballots of the next rounds.
    pub(crate) fn set_priority(&mut self, priority: u32) {
        self.current_ballot.priority = priority;
    }

    pub(crate) fn handle(&mut self, msg: BLEMessage) {
        if msg.to != self.pid || !self.peers.contains(&msg.from) {
            log!(
                debug,
                self.pid,
                "BLE dropped message from outside the configuration: {msg}"
            );
            return;
        }
        match msg.msg {
            HeartbeatMsg::Request(req) => {
                // Quorum-connected in the last round, or already in this one: rounds of
                // different servers are not aligned, and a server whose last round ended before
                // its connections were up would otherwise look cut off for one more round.
                let happy = self.quorum_connected || self.replies.len() + 1 >= self.quorum.read;
                let reply = HeartbeatReply {
                    round: req.round,
                    ballot: self.current_ballot,
                    leader: if self.leader_seen {
                        self.leader
                    } else {
                        Ballot::default()
                    },
                    happy,
                };
                self.outgoing.push(BLEMessage {
                    from: self.pid,
                    to: msg.from,
                    msg: HeartbeatMsg::Reply(reply),
                });
            }
            HeartbeatMsg::Reply(reply) => {
                let fits = reply.round == self.current_round
                    && reply.ballot.config_id == self.config_id
                    && reply.ballot.pid == msg.from;
                if !fits {
                    log!(
                        debug,
                        self.pid,
                        "BLE dropped a heartbeat reply from {}: late, from another configuration, or forged",
                        msg.from
                    );
                    return;
                }
                match self.replies.iter_mut().find(|(pid, _)| *pid == msg.from) {
                    Some(slot) => slot.1 = reply,
                    None => self.replies.push((msg.from, reply)),
                }
            }
        }
    }

    /// A connection to `pid` came (back) up: the request of this round may have been lost with
    /// the old one, so it is sent again; otherwise the round would end without `pid`'s reply
    /// and count it as gone (at start-up, every server's first round would).
    pub(crate) fn reconnected(&mut self, pid: NodeId) {
        if !self.peers.contains(&pid) || self.replies.iter().any(|(p, _)| *p == pid) {
            return;
        }
        let round = self.current_round;
        self.outgoing.push(BLEMessage {
            from: self.pid,
            to: pid,
            msg: HeartbeatMsg::Request(HeartbeatRequest { round }),
        });
    }

    /// Ends the current heartbeat round and starts the next. Returns a newly elected leader.
    ///
    /// `promise` is the highest ballot Sequence Paxos has promised: a takeover must exceed it or
    /// Sequence Paxos would ignore it. `leading_in_accept` says whether this server is a leader
    /// in the accept phase; such a leader needs only a write quorum to stay a candidate, because
    /// that is all it needs to make progress.
    pub(crate) fn hb_timeout(
        &mut self,
        promise: Ballot,
        leading_in_accept: bool,
    ) -> Option<Ballot> {
        let needed = if leading_in_accept {
            self.quorum.write
        } else {
            self.quorum.read
        };
        self.quorum_connected = self.replies.len() + 1 >= needed;
        if promise > self.leader && promise > self.lost {
            // Sequence Paxos promised a ballot this election never saw win (a Prepare outran
            // the heartbeats, another server took over from this one, or `try_become_leader`).
            // That ballot is who the servers follow now, so it is the leader to watch: if its
            // owner is not a connected candidate, the check below stands above it instead of
            // following a ballot that can never lead. The owner first gets one full round to
            // show up with it (this round's replies may predate the Prepare). Not the ballot
            // this server just stood against: followers promise a new leader before their own
            // round names it, so the watch usually holds the leader's ballot already, and
            // taking a dead leader back the round after standing skipped the wait for a higher
            // rival: the first survivor to stand elected itself and the next replaced it, two
            // changes for every death on real processes.
            if self.watched_promise == promise {
                self.leader = promise;
                self.leader_seen = false;
                self.leader_adopted = true;
                self.missed_rounds = 0;
            } else {
                self.watched_promise = promise;
            }
        }
        let elected = if self.quorum_connected {
            self.count_candidates(promise)
        } else {
            None
        };
        self.previous_replies = self.replies.drain(..).map(|(_, r)| r).collect();
        self.start_round();
        elected
    }

    /// The end of a round in which this server heard a quorum: follow the highest
    /// quorum-connected candidate, keep the leader, or stand against a lost one.
    fn count_candidates(&mut self, promise: Ballot) -> Option<Ballot> {
        // Before any leader exists nobody is known to be quorum-connected yet (everyone
        // computes it at the same round end), so repliers that have no leader either count as
        // candidates: all servers then pick the same top ballot instead of all standing. A pick
        // that is not really quorum-connected is not happy the next round and is replaced as
        // any lost leader is.
        let starting = self.leader == Ballot::default();
        let top = self
            .replies
            .iter()
            .filter(|(_, r)| r.happy || (starting && r.leader == Ballot::default()))
            .map(|(_, r)| r.ballot)
            .chain(std::iter::once(self.current_ballot))
            .max()
            .unwrap_or(self.current_ballot);
        if top == self.leader {
            self.missed_rounds = 0;
            self.leader_seen = true;
            self.leader_adopted = false;
            self.recovery_grace = 0;
            return None;
        }
        if top < self.leader {
            self.leader_lost(promise);
            return None;
        }
        if starting && self.lost != Ballot::default() && self.rival_about_to_stand(top) {
            return None;
        }
        self.follow(top);
        log!(info, self.pid, "BLE: new leader {top}");
        Some(top)
    }

    /// The leader is not among this round's quorum-connected candidates: stand against it,
    /// unless it may only not have been heard yet.
    fn leader_lost(&mut self, promise: Ballot) {
        self.missed_rounds = self.missed_rounds.saturating_add(1);
        if self.missed_rounds < ROUNDS_MISSED_BEFORE_STANDING {
            // One missed round is not a lost leader: its reply may be late (a busy machine,
            // connections still coming up after a restart), or it was picked at start-up
            // before its own first round ended and could not be quorum-connected yet.
            return;
        }
        self.leader_seen = false;
        let vouched = self
            .replies
            .iter()
            .any(|(_, r)| r.happy && r.leader == self.leader);
        if vouched && (self.leader_adopted || self.recovery_grace > 0) {
            // A quorum-connected peer heard this leader a round ago. A restarted server may
            // just not have had its connections up; a server that lost its leadership to this
            // ballot would only take it back and be taken back from (a one-way cut).
            self.recovery_grace = self.recovery_grace.saturating_sub(1);
            log!(
                debug,
                self.pid,
                "BLE: leader {} unheard, but a peer heard it; following it another round",
                self.leader
            );
            return;
        }
        // Stand for election with a ballot above everything seen; the next round picks the
        // highest.
        self.current_ballot.n = self.leader.n.max(promise.n).saturating_add(1);
        self.lost = self.leader;
        self.leader = Ballot::default();
        self.leader_adopted = false;
        self.recovery_grace = 0;
        self.missed_rounds = 0;
        self.waited_for_rival = false;
        log!(
            info,
            self.pid,
            "BLE: leader lost, standing with {}",
            self.current_ballot
        );
    }

    /// Whether a quorum-connected peer that had the same leader has not stood yet but would
    /// stand above `top`: after a leader dies, survivors notice it a few milliseconds apart,
    /// and electing the first to stand only to be replaced by the next is two changes for one
    /// failure. Waits one round at most.
    fn rival_about_to_stand(&mut self, top: Ballot) -> bool {
        if self.waited_for_rival {
            return false;
        }
        let n = self.current_ballot.n;
        let lost = self.lost;
        let rival = self
            .replies
            .iter()
            .filter(|(_, r)| r.happy && r.ballot.n < n)
            .filter(|(_, r)| r.leader == lost || r.leader == Ballot::default())
            .map(|(_, r)| Ballot { n, ..r.ballot })
            .max();
        if rival.is_some_and(|r| r > top) {
            self.waited_for_rival = true;
            return true;
        }
        false
    }

    /// Follows `ballot` as the leader this election chose.
    fn follow(&mut self, ballot: Ballot) {
        self.leader = ballot;
        self.leader_seen = true;
        self.leader_adopted = false;
        self.recovery_grace = 0;
        self.lost = Ballot::default();
        self.waited_for_rival = false;
        self.missed_rounds = 0;
    }

    fn start_round(&mut self) {
        self.current_round = self.current_round.wrapping_add(1);
        let round = self.current_round;
        for &peer in &self.peers {
            self.outgoing.push(BLEMessage {
                from: self.pid,
                to: peer,
                msg: HeartbeatMsg::Request(HeartbeatRequest { round }),
            });
        }
    }
}
