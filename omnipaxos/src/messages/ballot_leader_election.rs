//! Heartbeats of Ballot Leader Election. Each round a server asks every peer for its ballot, and
//! each reply carries the replier's *own* ballot and whether it is quorum-connected (never a
//! gossiped maximum, which would bring back Raft-like livelock under partial connectivity).

use crate::ballot::Ballot;
use crate::ids::NodeId;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::fmt;

/// A request for the receiver's ballot in heartbeat round `round`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct HeartbeatRequest {
    /// The requester's round; echoed in the reply.
    pub round: u32,
}

/// The answer to a [`HeartbeatRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct HeartbeatReply {
    /// The round of the request being answered.
    pub round: u32,
    /// The replier's own ballot.
    pub ballot: Ballot,
    /// The ballot the replier believes leads.
    pub leader: Ballot,
    /// Whether the replier is quorum-connected (it heard from a quorum in its last round).
    pub happy: bool,
}

/// The two kinds of heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum HeartbeatMsg {
    /// See [`HeartbeatRequest`].
    Request(HeartbeatRequest),
    /// See [`HeartbeatReply`].
    Reply(HeartbeatReply),
}

/// A heartbeat with its sender and receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct BLEMessage {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Payload.
    pub msg: HeartbeatMsg,
}

impl fmt::Display for BLEMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} ", self.from, self.to)?;
        match &self.msg {
            HeartbeatMsg::Request(r) => write!(f, "HeartbeatRequest r={}", r.round),
            HeartbeatMsg::Reply(r) => write!(
                f,
                "HeartbeatReply r={} b={} leader={} happy={}",
                r.round, r.ballot, r.leader, r.happy
            ),
        }
    }
}
