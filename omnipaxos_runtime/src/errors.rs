//! What a request to the node can end in, other than success.
//!
//! Every variant says whether the entry can still be decided: the runtime only reports a failure
//! it is sure of, and says "may still be decided" when it cannot know.

use omnipaxos::storage::Entry;
use omnipaxos::{CompactionErr, ProposeErr};

/// Why `append_notify` did not resolve with a decided index.
#[derive(Debug, thiserror::Error)]
pub enum AppendError<T: Entry> {
    /// The core refused the entry (a sealed configuration, a failed storage): it is not in the
    /// log and will never be decided. The entry is handed back inside.
    #[error("the entry was refused: {0:?}")]
    Propose(ProposeErr<T>),
    /// Kept for source compatibility with upstream's runtime; **never returned** here. Upstream
    /// reports it when the leader changed, as if the entry were surely lost, but a new leader
    /// may have kept it. This runtime reports that case as [`InDoubt`](Self::InDoubt).
    #[error("the entry at {log_entry_idx} was superseded")]
    Superseded {
        /// The index the entry had.
        log_entry_idx: usize,
    },
    /// The outcome is not known, and the entry **may still be decided**: the leader that took it
    /// lost its ballot before the entry was decided, or crashed, restarted or lost its
    /// connection to this node before it answered. `log_entry_idx` is the index the leader gave
    /// it, when known.
    #[error("the leader went away before the entry was decided: it may still be decided")]
    InDoubt {
        /// The index the leader gave the entry, if this node learnt it.
        log_entry_idx: Option<usize>,
    },
    /// No decision within the request's deadline. The entry **may still be decided**.
    #[error("no decision within the deadline: the entry may still be decided")]
    Timeout,
    /// No leader was known, or none could be reached, before the deadline or for longer than
    /// `RuntimeConfig::leader_unreachable_timeout`. The entry was never proposed: it will
    /// never be decided.
    #[error("no reachable leader: the entry was never proposed")]
    NoLeader,
    /// The leader refused the entry for a reason that only exists there (its storage failed):
    /// it is not in the log and will never be decided.
    #[error("the leader refused the entry: {reason}")]
    Rejected {
        /// What the leader said.
        reason: String,
    },
    /// The node stopped. If the entry was already sent to a leader it **may still be
    /// decided**; otherwise it never will be.
    #[error("the node shut down")]
    Shutdown,
    /// Back-pressure: too many appends are waiting already (`RuntimeConfig::max_pending_appends`
    /// or a full command queue). The entry was never proposed; try again later.
    #[error("too many outstanding appends")]
    TooManyOutstanding,
}

/// Why a fire-and-forget `append` was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeProposeErr<T: Entry> {
    /// The core refused the entry.
    #[error("the entry was refused: {0:?}")]
    Propose(ProposeErr<T>),
    /// The node stopped.
    #[error("the node shut down")]
    Shutdown,
    /// The command queue is full (back-pressure); try again later.
    #[error("too many outstanding requests")]
    TooManyOutstanding,
}

/// Why a linearizable read did not get an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader confirmed a read index within the deadline (an election, a partition).
    #[error("no read index within the deadline")]
    Timeout,
    /// The node stopped.
    #[error("the node shut down")]
    Shutdown,
    /// Back-pressure: the command queue is full.
    #[error("too many outstanding requests")]
    TooManyOutstanding,
}

/// Why a request other than an append or read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The node stopped.
    #[error("the node shut down")]
    Shutdown,
    /// Back-pressure: the command queue is full.
    #[error("too many outstanding requests")]
    TooManyOutstanding,
    /// Too many decided-entry subscribers (`RuntimeConfig::max_decided_subscribers`).
    #[error("too many subscribers")]
    TooManySubscribers,
}

/// Why `reconfigure` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError<T: Entry> {
    /// The core refused the new configuration (invalid, or a reconfiguration is pending).
    #[error("the reconfiguration was refused: {0:?}")]
    Propose(ProposeErr<T>),
    /// The node stopped, or the queue is full.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Why `snapshot` or `trim` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The core refused (an undecided index, a failed storage, ...).
    #[error("the compaction was refused: {0}")]
    Compaction(CompactionErr),
    /// The node stopped, or the queue is full.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
