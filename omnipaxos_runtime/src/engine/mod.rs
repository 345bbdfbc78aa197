//! The runtime's protocol above the core, without I/O: state machines that take inputs (a
//! request, a peer's message, the end of a pass, the time) and leave effects (answers, messages)
//! for the node's task to carry out. Nothing here sleeps, reads a clock or touches a channel,
//! so every rule can be tested with one state, one input and the exact effects out.

pub(crate) mod appends;
#[cfg(test)]
mod appends_tests;
pub(crate) mod clock;
pub(crate) mod ended;
pub(crate) mod reads;
#[cfg(test)]
mod reads_tests;
pub(crate) mod reconfigure;
#[cfg(test)]
mod reconfigure_tests;
pub(crate) mod subscribers;
#[cfg(test)]
mod subscribers_tests;

use crate::wire::NodeId;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, Storage};
use omnipaxos::{OmniPaxos, ProposeErr};

/// Time as the engine sees it: microseconds since the node started, given with every input.
pub(crate) type Micros = u64;

/// What the engine needs of the node around it, read at each input: the core's view of the
/// log and ballots, the links, and where the node stands in reconfiguration.
pub(crate) trait NodeView<T: Entry> {
    /// This node's pid.
    fn me(&self) -> NodeId;
    /// The configuration the node runs.
    fn config_id(&self) -> u32;
    /// The configuration's nodes.
    fn nodes(&self) -> Vec<NodeId>;
    /// The ballot the core promised.
    fn promise(&self) -> Ballot;
    /// The newest leader ballot this node knows of (see [`leader_ballot`]).
    fn leader_ballot(&self) -> Ballot;
    /// Whether this node leads in the accept phase, where an append's index is known.
    fn is_ready_leader(&self) -> bool;
    /// The end of the log: accepted entries and the batch.
    fn log_end(&self) -> usize;
    /// The decided index.
    fn decided_idx(&self) -> usize;
    /// Appends `entry` to the core (the core's own signature and error).
    #[allow(clippy::result_large_err)]
    fn append(&mut self, entry: T) -> Result<(), ProposeErr<T>>;
    /// Whether the transport reaches `pid` now.
    fn is_connected(&self, pid: NodeId) -> bool;
    /// Whether a sealed log's entries may wait for the next configuration here.
    fn follows_reconfigurations(&self) -> bool;
    /// Whether the node retired with its configuration.
    fn retired(&self) -> bool;
}

/// A node's view from its core and its links: what both drivers (the node's task and the
/// simulator) give the engine. `connected` says whether the transport reaches a peer now.
pub(crate) struct CoreView<'a, T: Entry, B: Storage<T>, C: Fn(NodeId) -> bool> {
    pub(crate) me: NodeId,
    pub(crate) op: &'a mut OmniPaxos<T, B>,
    pub(crate) connected: C,
    /// Whether a sealed log's entries wait for the next configuration.
    pub(crate) follows: bool,
    pub(crate) retired: bool,
}

impl<T: Entry, B: Storage<T>, C: Fn(NodeId) -> bool> NodeView<T> for CoreView<'_, T, B, C> {
    fn me(&self) -> NodeId {
        self.me
    }
    fn config_id(&self) -> u32 {
        self.op.get_config().cluster_config.configuration_id
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.op.get_config().cluster_config.nodes.clone()
    }
    fn promise(&self) -> Ballot {
        self.op.get_promise()
    }
    fn leader_ballot(&self) -> Ballot {
        leader_ballot(self.op)
    }
    fn is_ready_leader(&self) -> bool {
        self.op.get_current_leader() == Some((self.me, true))
    }
    fn log_end(&self) -> usize {
        self.op.get_accepted_idx() + self.op.get_batched_len()
    }
    fn decided_idx(&self) -> usize {
        self.op.get_decided_idx()
    }
    #[allow(clippy::result_large_err)]
    fn append(&mut self, entry: T) -> Result<(), ProposeErr<T>> {
        self.op.append(entry)
    }
    fn is_connected(&self, pid: NodeId) -> bool {
        (self.connected)(pid)
    }
    fn follows_reconfigurations(&self) -> bool {
        self.follows && !self.retired
    }
    fn retired(&self) -> bool {
        self.retired
    }
}

/// The newest leader ballot `op` knows of: its promise, or a newer one that leader election
/// learnt from heartbeats (whose `Prepare` has not reached this node).
pub(crate) fn leader_ballot<T: Entry, B: Storage<T>>(op: &OmniPaxos<T, B>) -> Ballot {
    let promise = op.get_promise();
    let heard = op.ble_leader();
    if heard.pid != 0 && heard > promise {
        heard
    } else {
        promise
    }
}
