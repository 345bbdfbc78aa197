//! When a node checkpoints its state and compacts its log.
//!
//! The state lives outside the log ([`crate::state_store`]), and the log's snapshot is a marker,
//! so a checkpoint costs what changed since the last one: sled's flush of the keys written since
//! (on the blocking pool, never on the node's thread), one small record, and the core's
//! compaction of the log up to the checkpoint (on the node's thread: it reads the entries since
//! the last compaction to make the marker and removes them). Checkpoints are therefore frequent
//! and small, by entries or by bytes, whichever comes first: the node's thread never holds a
//! long compaction, the log stays short (a restart replays little, a catch-up sends little),
//! and the disk holds the keys once plus a bounded log.

/// Entries applied after which a checkpoint is due.
pub const CHECKPOINT_ENTRIES: usize = 10_000;
/// Bytes of keys and values written after which a checkpoint is due.
pub const CHECKPOINT_BYTES: usize = 2 << 20;
/// The log's journal (`JournalStorage`) is rewritten from this size on (or twice the log's):
/// the log holds about a checkpoint's worth of entries, so the journal stays a few of those.
pub const JOURNAL_REWRITE_BYTES: u64 = 8 << 20;

/// What was applied since the last checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointPolicy {
    entries: usize,
    bytes: usize,
}

impl CheckpointPolicy {
    /// An entry that wrote `bytes` was applied.
    pub fn applied(&mut self, bytes: usize) {
        self.entries += 1;
        self.bytes += bytes;
    }

    /// Whether a checkpoint is due.
    pub fn due(&self) -> bool {
        self.entries >= CHECKPOINT_ENTRIES || self.bytes >= CHECKPOINT_BYTES
    }

    /// A checkpoint was started: count from nothing again.
    pub fn started(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_after_enough_entries_or_enough_bytes() {
        let mut p = CheckpointPolicy::default();
        for _ in 1..CHECKPOINT_ENTRIES {
            p.applied(10);
        }
        assert!(!p.due());
        p.applied(10);
        assert!(p.due(), "by entries");
        p.started();
        assert!(!p.due());
        p.applied(CHECKPOINT_BYTES - 1);
        assert!(!p.due());
        p.applied(1);
        assert!(p.due(), "by bytes");
    }
}
