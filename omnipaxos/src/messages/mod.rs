//! The messages servers exchange. The user moves them: `take_outgoing_messages` on the sender,
//! `handle_incoming` on the receiver named by [`Message::get_receiver`]. With the `serde` feature
//! every message derives `Serialize`/`Deserialize`. Each message prints as one trace line.

pub mod ballot_leader_election;
pub mod sequence_paxos;

use crate::ids::NodeId;
use crate::storage::Entry;
use ballot_leader_election::BLEMessage;
use sequence_paxos::PaxosMessage;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::fmt;

/// Any message between two servers.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum Message<T: Entry> {
    /// A message of the replication protocol.
    SequencePaxos(PaxosMessage<T>),
    /// A message of the leader election.
    BLE(BLEMessage),
}

impl<T: Entry> Message<T> {
    /// The server that sent the message.
    pub fn get_sender(&self) -> NodeId {
        match self {
            Message::SequencePaxos(m) => m.from,
            Message::BLE(m) => m.from,
        }
    }

    /// Whether every ballot the message carries could come from a correct server (no round at
    /// the top of the range, see [`Ballot::ROUND_LIMIT`](crate::ballot::Ballot::ROUND_LIMIT)).
    pub(crate) fn has_plausible_ballots(&self) -> bool {
        let ballots = match self {
            Message::SequencePaxos(m) => m.msg.ballots(),
            Message::BLE(m) => match m.msg {
                ballot_leader_election::HeartbeatMsg::Request(_) => [None, None],
                ballot_leader_election::HeartbeatMsg::Reply(r) => [Some(r.ballot), Some(r.leader)],
            },
        };
        ballots.iter().flatten().all(|b| b.is_plausible())
    }

    /// The server the message is for.
    pub fn get_receiver(&self) -> NodeId {
        match self {
            Message::SequencePaxos(m) => m.to,
            Message::BLE(m) => m.to,
        }
    }
}

impl<T: Entry> fmt::Display for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::SequencePaxos(m) => m.fmt(f),
            Message::BLE(m) => m.fmt(f),
        }
    }
}
