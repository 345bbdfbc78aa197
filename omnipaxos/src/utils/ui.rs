//! A read-only picture of one server's state, for dashboards (`OmniPaxos::get_ui_states`).

use crate::ballot::Ballot;
use crate::ids::NodeId;
use crate::messages::ballot_leader_election::HeartbeatReply;

/// The state of one server as seen by itself.
pub struct OmniPaxosStates {
    /// This server's own election ballot.
    pub current_ballot: Ballot,
    /// The leader this server follows (the owner of its promised ballot), if any.
    pub current_leader: Option<NodeId>,
    /// This server's decided index.
    pub decided_idx: usize,
    /// Heartbeat replies received in the previous election round (peers only).
    pub heartbeats: Vec<HeartbeatReply>,
    /// The cluster as seen from here.
    pub cluster_state: ClusterState,
}

/// The cluster as seen by one server.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// `accepted_indexes[pid]`: the leader's view of each server's accepted index (slot 0 and
    /// pids outside the configuration stay 0). Only meaningful on the leader. Empty when the
    /// largest pid exceeds 4096, to keep the vector small.
    pub accepted_indexes: Vec<usize>,
    /// Heartbeat replies received in the previous election round (peers only).
    pub heartbeats: Vec<HeartbeatReply>,
}
