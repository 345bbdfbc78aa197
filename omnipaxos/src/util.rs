//! Small public types shared by the log, the messages and the storage: the entries returned by
//! reads, the log-synchronisation payload and sequence numbers (and, re-exported at their
//! published paths, the identifiers and `FlexibleQuorum`).

use crate::storage::{Entry, SnapshotType, StopSign};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

pub use crate::ids::{ConfigurationId, NodeId, TrimmedIndex};
pub use crate::quorum::FlexibleQuorum;

/// Kept for source compatibility with 0.2.x, which panicked with this text on a failed read.
/// This implementation never panics on storage errors; see [`crate::OmniPaxos::get_storage_error`].
pub const READ_ERROR_MSG: &str = "storage error while trying to read";
/// Kept for source compatibility with 0.2.x, which panicked with this text on a failed write.
/// This implementation never panics on storage errors; see [`crate::OmniPaxos::get_storage_error`].
pub const WRITE_ERROR_MSG: &str = "storage error while trying to write";

/// One slot of the replicated log as returned by the read methods of [`crate::OmniPaxos`].
#[derive(Debug, Clone)]
pub enum LogEntry<T: Entry> {
    /// An entry that is decided: it will never change.
    Decided(T),
    /// An entry accepted here but not (yet) known to be decided; it may still be replaced.
    Undecided(T),
    /// The slot was trimmed away; the value is the length of the trimmed prefix.
    Trimmed(TrimmedIndex),
    /// The slot is covered by a snapshot of the compacted prefix.
    Snapshotted(SnapshottedEntry<T>),
    /// The log was sealed by a reconfiguration; the flag says whether the StopSign is decided.
    StopSign(StopSign, bool),
}

impl<T> PartialEq for LogEntry<T>
where
    T: Entry + PartialEq,
    T::Snapshot: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Decided(a), Self::Decided(b)) | (Self::Undecided(a), Self::Undecided(b)) => {
                a == b
            }
            (Self::Trimmed(a), Self::Trimmed(b)) => a == b,
            (Self::Snapshotted(a), Self::Snapshotted(b)) => a == b,
            (Self::StopSign(a, x), Self::StopSign(b, y)) => a == b && x == y,
            _ => false,
        }
    }
}

/// The snapshot covering a compacted prefix, as returned by reads.
#[derive(Debug, Clone)]
pub struct SnapshottedEntry<T: Entry> {
    /// Length of the compacted prefix the snapshot covers.
    pub trimmed_idx: TrimmedIndex,
    /// The snapshot of entries `[0, trimmed_idx)`.
    pub snapshot: T::Snapshot,
    _p: PhantomData<T>,
}

impl<T: Entry> SnapshottedEntry<T> {
    /// The snapshot `snapshot` of the prefix `[0, trimmed_idx)`.
    pub fn with(trimmed_idx: TrimmedIndex, snapshot: T::Snapshot) -> Self {
        Self {
            trimmed_idx,
            snapshot,
            _p: PhantomData,
        }
    }
}

impl<T: Entry> PartialEq for SnapshottedEntry<T>
where
    T::Snapshot: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.trimmed_idx == other.trimmed_idx && self.snapshot == other.snapshot
    }
}

/// What a server sends to bring another server's log in line with its own.
///
/// Apply `suffix` at `sync_idx`, dropping whatever the receiver holds from `sync_idx` on. If a
/// snapshot is present it covers `[0, sync_idx)`. `stopsign` is authoritative: `None` clears a
/// StopSign the receiver may hold.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct LogSync<T: Entry> {
    /// Snapshot of the prefix `[0, sync_idx)`, when the receiver is too far behind for entries.
    pub decided_snapshot: Option<SnapshotType<T>>,
    /// Entries to place at `sync_idx`, `sync_idx + 1`, ...
    pub suffix: Vec<T>,
    /// Absolute log index where `suffix` starts.
    pub sync_idx: usize,
    /// The sender's StopSign, if its log is sealed.
    pub stopsign: Option<StopSign>,
}

/// Orders the messages of one leader to one follower, so that loss and reordering are noticed.
///
/// A leader starts a new `session` each time it synchronises a follower, and counts the messages
/// of that session with `counter`. Compared lexicographically (session first).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct SequenceNumber {
    /// Incremented every time the leader (re)synchronises the follower.
    pub session: u64,
    /// Incremented for every message within a session.
    pub counter: u64,
}

impl SequenceNumber {
    pub(crate) fn next(self) -> Self {
        Self {
            session: self.session,
            counter: self.counter.saturating_add(1),
        }
    }

    pub(crate) fn new_session(self) -> Self {
        Self {
            session: self.session.saturating_add(1),
            counter: 1,
        }
    }
}
