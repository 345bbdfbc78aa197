//! What a node reports about itself: events (as they happen) and metrics (the latest picture).

use crate::wire::NodeId;
use omnipaxos::ballot_leader_election::Ballot;
use std::collections::BTreeMap;

/// Something that happened on the node (`OmniPaxosHandle::subscribe_events`). The first three
/// variants have upstream's fields exactly; the ballot, the next configuration and whether this
/// node moved to it are in [`Metrics`] and the decided log.
#[derive(Clone, Debug, PartialEq)]
pub enum OmniPaxosEvent {
    /// A leader reached the accept phase in this node's view: `accepted` tells whether this
    /// node has been synchronised by it (always true on the leader itself).
    LeaderElected {
        /// The leader.
        pid: NodeId,
        /// Whether this node follows it in the accept phase.
        accepted: bool,
    },
    /// The decided index grew (at most one event per pass of the node's loop).
    Decided {
        /// The new decided index.
        new_decided_idx: usize,
    },
    /// The configuration ended with a decided StopSign (the entry at `stop_sign_idx` of its
    /// log). A node started with `spawn_reconfigurable` then moves to the next configuration if
    /// it is one of its nodes (`Metrics::configuration_id`), and retires otherwise
    /// (`Role::Retired`).
    Reconfigured {
        /// The index of the StopSign in the ended configuration's log.
        stop_sign_idx: usize,
    },
    /// The storage failed; the instance stopped taking part (fail-stop). Restart the node
    /// from its storage. A failed write stops the instance while the node keeps answering
    /// status requests; a failed read of decided entries (a subscriber needs them and storage
    /// cannot give them back) stops the whole node, whose handles then answer `Shutdown`.
    StorageFailed {
        /// What failed.
        error: String,
    },
}

/// The role a node plays in its current ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// It leads and has reached the accept phase.
    Leader,
    /// It owns the highest ballot it knows but is still gathering promises.
    Candidate,
    /// It follows another node (or knows no leader yet).
    #[default]
    Follower,
    /// Its configuration ended and it is not part of the next one.
    Retired,
}

/// One peer as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetrics {
    /// Whether the transport has a connection to it.
    pub connected: bool,
    /// Whether it answered a heartbeat in the last election round.
    pub heartbeat: bool,
    /// Its accepted index as the leader knows it (only on the leader).
    pub accepted_idx: Option<usize>,
}

/// The node's latest picture of itself (`OmniPaxosHandle::metrics`), updated every tick and
/// whenever the leader changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// This node.
    pub pid: NodeId,
    /// The configuration it runs.
    pub configuration_id: u32,
    /// The newest leader it knows of, if any: the one it promised, or a newer one it heard of
    /// from heartbeats.
    pub leader: Option<NodeId>,
    /// Its promised ballot.
    pub ballot: Ballot,
    /// Its role.
    pub role: Role,
    /// Whether it heard from a quorum in the last election round.
    pub quorum_connected: bool,
    /// Its decided index.
    pub decided_idx: usize,
    /// Its accepted index.
    pub accepted_idx: usize,
    /// Its compacted index.
    pub compacted_idx: usize,
    /// Every peer of the configuration.
    pub peers: BTreeMap<NodeId, PeerMetrics>,
    /// Storage write calls (one flush each on a durable store) since the node started.
    pub storage_writes: u64,
    /// Entries decided since the node started.
    pub decided_entries: u64,
    /// Times the leader changed in this node's view since it started.
    pub leader_changes: u64,
    /// Appends decided here with a known index (answered `Ok`).
    pub appends_decided: u64,
    /// Appends and reads waiting for an outcome on this node.
    pub pending_requests: usize,
    /// Passes of the node's loop: each takes every ready input, then writes and sends once.
    pub passes: u64,
    /// Appends submitted on this node (through its handles).
    pub appends_submitted: u64,
    /// Messages and bytes in and out, by kind.
    pub messages: BTreeMap<&'static str, KindCounts>,
    /// Messages and bytes in and out, by peer and kind.
    pub messages_by_peer: BTreeMap<NodeId, BTreeMap<&'static str, KindCounts>>,
    /// Messages the transport dropped (full queues, broken connections).
    pub messages_dropped: u64,
    /// Frames refused by the transport (too large, undecodable, unauthenticated).
    pub frames_refused: u64,
    /// Write system calls of the transport.
    pub transport_writes: u64,
    /// The largest frame the transport wrote or read, in bytes (a message larger than
    /// `max_frame_bytes` travels in parts; 0 for a transport without frames).
    pub largest_frame_bytes: u64,
    /// Whether the storage failed.
    pub storage_failed: bool,
}

/// Messages and bytes of one kind, in and out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Messages received.
    pub msgs_in: u64,
    /// Messages sent (handed to the network).
    pub msgs_out: u64,
    /// Encoded bytes received (0 on transports that do not encode).
    pub bytes_in: u64,
    /// Encoded bytes sent (0 on transports that do not encode).
    pub bytes_out: u64,
}

impl KindCounts {
    pub(crate) fn add(&mut self, outgoing: bool, bytes: u64) {
        if outgoing {
            self.msgs_out += 1;
            self.bytes_out += bytes;
        } else {
            self.msgs_in += 1;
            self.bytes_in += bytes;
        }
    }
}
