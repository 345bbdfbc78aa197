//! Messages of Sequence Paxos. Field names follow the OmniPaxos paper and the published API, so
//! tests and users can build them by hand.

use crate::ballot::Ballot;
use crate::ids::NodeId;
use crate::storage::{Entry, StopSign};
use crate::util::{LogSync, SequenceNumber};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::fmt;

/// Asks the leader to send a fresh [`Prepare`]: the sender lost track of the log (restart,
/// reconnect, or a gap in sequence numbers).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct PrepareReq {
    /// The ballot the requester has promised.
    pub n: Ballot,
}

/// First phase of a new leader: asks for a promise and summarises the leader's log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Prepare {
    /// The leader's ballot.
    pub n: Ballot,
    /// The leader's decided index.
    pub decided_idx: usize,
    /// The round in which the leader last accepted entries.
    pub n_accepted: Ballot,
    /// The length of the leader's accepted log.
    pub accepted_idx: usize,
}

/// A follower's promise, with the entries the leader lacks when the follower is more up to date.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Promise<T: Entry> {
    /// The promised ballot.
    pub n: Ballot,
    /// The round in which the follower last accepted entries.
    pub n_accepted: Ballot,
    /// The follower's decided index.
    pub decided_idx: usize,
    /// The length of the follower's accepted log.
    pub accepted_idx: usize,
    /// Entries the leader lacks, if the follower's log is more up to date.
    pub log_sync: Option<LogSync<T>>,
}

/// Brings a follower's log in line with the leader's and opens a new sequence session.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct AcceptSync<T: Entry> {
    /// The leader's ballot.
    pub n: Ballot,
    /// First sequence number of the new session.
    pub seq_num: SequenceNumber,
    /// The leader's decided index.
    pub decided_idx: usize,
    /// How to make the follower's log equal to the leader's.
    pub log_sync: LogSync<T>,
}

/// New entries to append, and the leader's decided index.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct AcceptDecide<T: Entry> {
    /// The leader's ballot.
    pub n: Ballot,
    /// Position of this message in the session.
    pub seq_num: SequenceNumber,
    /// The leader's decided index.
    pub decided_idx: usize,
    /// Entries to append at the end of the follower's log.
    pub entries: Vec<T>,
}

/// A follower has accepted its log up to `accepted_idx` in round `n`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Accepted {
    /// The ballot of the leader whose entries were accepted.
    pub n: Ballot,
    /// The follower's accepted log length.
    pub accepted_idx: usize,
}

/// The leader's decided index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Decide {
    /// The leader's ballot.
    pub n: Ballot,
    /// Position of this message in the session.
    pub seq_num: SequenceNumber,
    /// The leader's decided index.
    pub decided_idx: usize,
}

/// Tells a stale leader that the sender promised a higher ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct NotAccepted {
    /// The higher ballot the sender promised.
    pub n: Ballot,
}

/// Asks followers to accept the StopSign that ends the configuration.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct AcceptStopSign {
    /// The leader's ballot.
    pub n: Ballot,
    /// Position of this message in the session.
    pub seq_num: SequenceNumber,
    /// The StopSign.
    pub ss: StopSign,
}

/// Entries appended on a follower, forwarded to its leader. Unlike `ProposalForward` they carry
/// an identity, so a duplicated message is recognised and its entries are appended only once.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ForwardedEntries<T: Entry> {
    /// The ballot the sender has promised (its leader's).
    pub n: Ballot,
    /// The forward's identity: `session` is the sender's incarnation (random, drawn when the
    /// instance was built, so a restarted sender never repeats an identity), `counter` numbers
    /// the forwards of that incarnation.
    pub seq_num: SequenceNumber,
    /// The proposed entries, in proposal order.
    pub entries: Vec<T>,
}

/// A follower asks its leader for a read index, for the read it numbered `id`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ReadIndexReq {
    /// The ballot the follower has promised (its leader's).
    pub n: Ballot,
    /// The follower's number for the read.
    pub id: u64,
}

/// The leader's answer to a [`ReadIndexReq`]: once the follower's decided index reaches `index`,
/// its state may serve the read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ReadIndexResp {
    /// The leader's ballot.
    pub n: Ballot,
    /// The follower's number for the read.
    pub id: u64,
    /// The read index.
    pub index: usize,
}

/// The leader asks its followers to confirm that they still follow its ballot, for the reads
/// of confirmation round `round`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ReadConfirm {
    /// The leader's ballot.
    pub n: Ballot,
    /// The confirmation round.
    pub round: u64,
}

/// A follower still follows ballot `n`: the answer to a [`ReadConfirm`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ReadConfirmed {
    /// The ballot the follower follows.
    pub n: Ballot,
    /// The confirmation round answered.
    pub round: u64,
}

/// Log compaction requests sent to peers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum Compaction {
    /// Trim the log up to this index.
    Trim(usize),
    /// Snapshot the log up to this index (the decided index if `None`).
    Snapshot(Option<usize>),
}

/// The payloads of Sequence Paxos.
#[allow(missing_docs)]
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum PaxosMsg<T: Entry> {
    PrepareReq(PrepareReq),
    Prepare(Prepare),
    Promise(Promise<T>),
    AcceptSync(AcceptSync<T>),
    AcceptDecide(AcceptDecide<T>),
    Accepted(Accepted),
    NotAccepted(NotAccepted),
    Decide(Decide),
    /// Entries appended on a non-leader, forwarded to the leader (not deduplicated; this
    /// implementation sends [`PaxosMsg::ForwardedEntries`] and accepts both).
    ProposalForward(Vec<T>),
    /// Entries appended on a follower, forwarded to the leader with an identity.
    ForwardedEntries(ForwardedEntries<T>),
    Compaction(Compaction),
    AcceptStopSign(AcceptStopSign),
    /// A reconfiguration requested on a non-leader, forwarded to the leader.
    ForwardStopSign(StopSign),
    /// A follower asks its leader for a read index (linearizable reads without the log).
    ReadIndexReq(ReadIndexReq),
    /// The leader's read index for a follower's read.
    ReadIndexResp(ReadIndexResp),
    /// The leader confirms it still leads before it answers reads.
    ReadConfirm(ReadConfirm),
    /// A follower's answer to a [`ReadConfirm`].
    ReadConfirmed(ReadConfirmed),
}

impl<T: Entry> PaxosMsg<T> {
    /// Every ballot the message carries (its own and the one it reports accepted, if any).
    pub(crate) fn ballots(&self) -> [Option<Ballot>; 2] {
        match self {
            PaxosMsg::PrepareReq(m) => [Some(m.n), None],
            PaxosMsg::Prepare(m) => [Some(m.n), Some(m.n_accepted)],
            PaxosMsg::Promise(m) => [Some(m.n), Some(m.n_accepted)],
            PaxosMsg::AcceptSync(m) => [Some(m.n), None],
            PaxosMsg::AcceptDecide(m) => [Some(m.n), None],
            PaxosMsg::Accepted(m) => [Some(m.n), None],
            PaxosMsg::NotAccepted(m) => [Some(m.n), None],
            PaxosMsg::Decide(m) => [Some(m.n), None],
            PaxosMsg::ForwardedEntries(m) => [Some(m.n), None],
            PaxosMsg::AcceptStopSign(m) => [Some(m.n), None],
            PaxosMsg::ReadIndexReq(m) => [Some(m.n), None],
            PaxosMsg::ReadIndexResp(m) => [Some(m.n), None],
            PaxosMsg::ReadConfirm(m) => [Some(m.n), None],
            PaxosMsg::ReadConfirmed(m) => [Some(m.n), None],
            PaxosMsg::ProposalForward(_)
            | PaxosMsg::Compaction(_)
            | PaxosMsg::ForwardStopSign(_) => [None, None],
        }
    }
}

/// A Sequence Paxos payload with its sender and receiver.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct PaxosMessage<T: Entry> {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Payload.
    pub msg: PaxosMsg<T>,
}

impl<T: Entry> fmt::Display for PaxosMessage<T> {
    /// One trace line, e.g. `1->2 AcceptDecide n=3.1 seq=1.4 dec=17 +5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} ", self.from, self.to)?;
        match &self.msg {
            PaxosMsg::PrepareReq(m) => write!(f, "PrepareReq n={}", m.n),
            PaxosMsg::Prepare(m) => write!(
                f,
                "Prepare n={} dec={} na={} acc={}",
                m.n, m.decided_idx, m.n_accepted, m.accepted_idx
            ),
            PaxosMsg::Promise(m) => {
                write!(
                    f,
                    "Promise n={} na={} dec={} acc={}",
                    m.n, m.n_accepted, m.decided_idx, m.accepted_idx
                )?;
                if let Some(sync) = &m.log_sync {
                    write_sync(f, sync)?;
                }
                Ok(())
            }
            PaxosMsg::AcceptSync(m) => {
                write!(
                    f,
                    "AcceptSync n={} seq={} dec={}",
                    m.n,
                    fmt_seq(m.seq_num),
                    m.decided_idx
                )?;
                write_sync(f, &m.log_sync)
            }
            PaxosMsg::AcceptDecide(m) => write!(
                f,
                "AcceptDecide n={} seq={} dec={} +{}",
                m.n,
                fmt_seq(m.seq_num),
                m.decided_idx,
                m.entries.len()
            ),
            PaxosMsg::Accepted(m) => write!(f, "Accepted n={} acc={}", m.n, m.accepted_idx),
            PaxosMsg::NotAccepted(m) => write!(f, "NotAccepted n={}", m.n),
            PaxosMsg::Decide(m) => write!(
                f,
                "Decide n={} seq={} dec={}",
                m.n,
                fmt_seq(m.seq_num),
                m.decided_idx
            ),
            PaxosMsg::ProposalForward(entries) => write!(f, "ProposalForward +{}", entries.len()),
            PaxosMsg::ForwardedEntries(m) => write!(
                f,
                "ForwardedEntries n={} #{} +{}",
                m.n,
                m.seq_num.counter,
                m.entries.len()
            ),
            PaxosMsg::Compaction(Compaction::Trim(idx)) => write!(f, "Compaction Trim({idx})"),
            PaxosMsg::Compaction(Compaction::Snapshot(idx)) => {
                write!(f, "Compaction Snapshot({idx:?})")
            }
            PaxosMsg::AcceptStopSign(m) => write!(
                f,
                "AcceptStopSign n={} seq={} {}",
                m.n,
                fmt_seq(m.seq_num),
                m.ss
            ),
            PaxosMsg::ForwardStopSign(ss) => write!(f, "ForwardStopSign {ss}"),
            PaxosMsg::ReadIndexReq(m) => write!(f, "ReadIndexReq n={} id={}", m.n, m.id),
            PaxosMsg::ReadIndexResp(m) => {
                write!(f, "ReadIndexResp n={} id={} index={}", m.n, m.id, m.index)
            }
            PaxosMsg::ReadConfirm(m) => write!(f, "ReadConfirm n={} round={}", m.n, m.round),
            PaxosMsg::ReadConfirmed(m) => {
                write!(f, "ReadConfirmed n={} round={}", m.n, m.round)
            }
        }
    }
}

fn fmt_seq(seq: SequenceNumber) -> String {
    format!("{}.{}", seq.session, seq.counter)
}

fn write_sync<T: Entry>(f: &mut fmt::Formatter<'_>, sync: &LogSync<T>) -> fmt::Result {
    write!(f, " sync@{} +{}", sync.sync_idx, sync.suffix.len())?;
    if sync.decided_snapshot.is_some() {
        write!(f, " snapshot")?;
    }
    if let Some(ss) = &sync.stopsign {
        write!(f, " {ss}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_prints_as_one_trace_line() {
        let msg: PaxosMessage<u64> = PaxosMessage {
            from: 1,
            to: 2,
            msg: PaxosMsg::AcceptDecide(AcceptDecide {
                n: Ballot::with(1, 3, 0, 1),
                seq_num: SequenceNumber {
                    session: 1,
                    counter: 4,
                },
                decided_idx: 17,
                entries: vec![1, 2, 3, 4, 5],
            }),
        };
        assert_eq!(msg.to_string(), "1->2 AcceptDecide n=3.1 seq=1.4 dec=17 +5");
        let prep: PaxosMessage<u64> = PaxosMessage {
            from: 3,
            to: 1,
            msg: PaxosMsg::Prepare(Prepare {
                n: Ballot::with(1, 2, 5, 3),
                decided_idx: 4,
                n_accepted: Ballot::with(1, 1, 0, 2),
                accepted_idx: 6,
            }),
        };
        assert_eq!(prep.to_string(), "3->1 Prepare n=2.3/5 dec=4 na=1.2 acc=6");
    }
}
