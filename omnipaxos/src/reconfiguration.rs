//! Handing a sealed configuration over to the servers of the next one.
//!
//! When a StopSign is decided, every server of the old configuration can produce a [`Handover`]:
//! the decided log up to the StopSign (a snapshot of the compacted prefix plus the entries after
//! it) and the next configuration. A server that joins in the new configuration receives it over
//! any channel (it is serde-serialisable with the `serde` feature), rebuilds its application
//! state from it, and builds its instance of the new configuration with
//! [`Handover::build_for_server`].

use crate::config::ClusterConfig;
use crate::storage::{Entry, Snapshot, StopSign};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Everything a server needs to start in the configuration that follows a decided StopSign.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Handover<T: Entry> {
    /// The decided StopSign: the next configuration and the reconfiguration's metadata.
    pub stopsign: StopSign,
    /// Length of the compacted prefix of the old log.
    pub compacted_idx: usize,
    /// Snapshot of the compacted prefix, if it was snapshotted (`None` if nothing was
    /// compacted, or if the prefix was trimmed without a snapshot).
    pub snapshot: Option<T::Snapshot>,
    /// The decided entries from `compacted_idx` up to the StopSign.
    pub entries: Vec<T>,
}

impl<T: Entry> Handover<T> {
    /// The configuration that follows.
    pub fn next_config(&self) -> &ClusterConfig {
        &self.stopsign.next_config
    }

    /// Number of entries of the old log, compacted prefix included (the StopSign excluded).
    pub fn log_len(&self) -> usize {
        self.compacted_idx + self.entries.len()
    }

    /// Whether the handover holds the whole old log: nothing was compacted, or the compacted
    /// prefix is covered by a snapshot. If not, the trimmed prefix must come from elsewhere.
    pub fn is_complete(&self) -> bool {
        self.compacted_idx == 0 || self.snapshot.is_some()
    }

    /// One snapshot of the whole old log (the stored snapshot merged with the entries), if the
    /// entry type uses snapshots and the handover is complete.
    pub fn complete_snapshot(&self) -> Option<T::Snapshot> {
        if !T::Snapshot::use_snapshots() || !self.is_complete() {
            return None;
        }
        let tail = (!self.entries.is_empty()).then(|| T::Snapshot::create(&self.entries));
        match (self.snapshot.clone(), tail) {
            (Some(mut s), Some(t)) => {
                s.merge(t);
                Some(s)
            }
            (Some(s), None) => Some(s),
            (None, Some(t)) => Some(t),
            (None, None) => Some(T::Snapshot::create(&[])),
        }
    }
}
