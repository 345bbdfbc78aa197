//! Log compaction: `trim` drops a decided prefix that every server has accepted (its state is
//! gone: reads say `Trimmed`); `snapshot` replaces a decided prefix by a snapshot of it. Both are
//! atomic storage writes.

use super::{Role, SequencePaxos};
use crate::errors::CompactionErr;
use crate::ids::NodeId;
use crate::logging::log;
use crate::messages::sequence_paxos::{Compaction, PaxosMsg};
use crate::storage::internal_storage::StorageResult;
use crate::storage::{Entry, Snapshot, Storage};

/// A compaction either ran, was refused, or hit a storage failure (which stops the instance).
pub(crate) type CompactionResult = StorageResult<Result<(), CompactionErr>>;

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    /// Leader only: trims the log up to `trim_index` (default: as far as every server has
    /// accepted) here and on every peer.
    pub(crate) fn trim(&mut self, trim_index: Option<usize>) -> CompactionResult {
        if self.role != Role::Leader {
            return Ok(Err(CompactionErr::NotCurrentLeader(self.promise().pid)));
        }
        let everyone_accepted = self
            .known_accepted_indexes()
            .into_iter()
            .map(|(_, idx)| idx.unwrap_or(0))
            .min()
            .unwrap_or(0);
        let idx = trim_index.unwrap_or(everyone_accepted);
        if idx > everyone_accepted {
            return Ok(Err(CompactionErr::NotAllDecided(everyone_accepted)));
        }
        if let Err(refused) = self.trim_locally(idx)? {
            return Ok(Err(refused));
        }
        self.send_to_all_peers(PaxosMsg::Compaction(Compaction::Trim(idx)));
        Ok(Ok(()))
    }

    /// Drops `[0, idx)` without keeping its state: reads below `idx` become `Trimmed(idx)`, with
    /// or without snapshots (the published behaviour). A stored snapshot no longer describes the
    /// compacted prefix after that, so it goes too.
    fn trim_locally(&mut self, idx: usize) -> CompactionResult {
        let idx = match self.compactable(idx)? {
            Ok(Some(idx)) => idx,
            Ok(None) => return Ok(Ok(())),
            Err(refused) => return Ok(Err(refused)),
        };
        self.internal_storage.compact(idx, None)?;
        log!(info, self.pid, "trimmed the log up to {idx}");
        Ok(Ok(()))
    }

    /// Compacts the decided prefix up to `compact_idx` (default: the decided index) into a
    /// snapshot; unless `local_only`, asks every peer to do the same.
    pub(crate) fn snapshot(
        &mut self,
        compact_idx: Option<usize>,
        local_only: bool,
    ) -> CompactionResult {
        if !T::Snapshot::use_snapshots() {
            return Ok(Err(CompactionErr::SnapshotsDisabled));
        }
        if let Err(refused) = self.snapshot_locally(compact_idx)? {
            return Ok(Err(refused));
        }
        if !local_only {
            self.send_to_all_peers(PaxosMsg::Compaction(Compaction::Snapshot(compact_idx)));
        }
        Ok(Ok(()))
    }

    fn snapshot_locally(&mut self, compact_idx: Option<usize>) -> CompactionResult {
        let idx = compact_idx.unwrap_or(self.internal_storage.decided_idx());
        let idx = match self.compactable(idx)? {
            Ok(Some(idx)) => idx,
            Ok(None) => return Ok(Ok(())),
            Err(refused) => return Ok(Err(refused)),
        };
        let snapshot = self.internal_storage.complete_snapshot(idx)?;
        self.internal_storage.compact(idx, Some(snapshot))?;
        log!(info, self.pid, "snapshotted the log up to {idx}");
        Ok(Ok(()))
    }

    /// Checks `idx` against the decided index and clamps it to the entry log (the StopSign slot
    /// cannot be compacted). `Ok(None)` means there is nothing new to compact.
    fn compactable(&self, idx: usize) -> StorageResult<Result<Option<usize>, CompactionErr>> {
        let s = &self.internal_storage;
        if idx > s.decided_idx() {
            return Ok(Err(CompactionErr::UndecidedIndex(s.decided_idx())));
        }
        let idx = idx.min(s.log_end());
        Ok(Ok((idx > s.compacted_idx()).then_some(idx)))
    }

    /// A peer asked for compaction. Requests are taken only from the leader this server
    /// follows (a trim is safe only when every server has accepted the prefix, which only the
    /// leader knows; and no other member may make this server forget a prefix), and only while
    /// the application allows remote compaction. Refusals are ignored, as the leader's indices
    /// may be ahead of ours.
    pub(super) fn handle_compaction(&mut self, c: Compaction, from: NodeId) -> StorageResult<()> {
        if from != self.promise().pid {
            self.dropped(
                "a compaction request",
                from,
                "not from the leader followed here",
            );
            return Ok(());
        }
        if !self.remote_compaction {
            self.dropped(
                "a compaction request",
                from,
                "remote compaction is turned off here",
            );
            return Ok(());
        }
        let outcome = match c {
            Compaction::Trim(idx) => self.trim_locally(idx)?,
            Compaction::Snapshot(idx) if T::Snapshot::use_snapshots() => {
                self.snapshot_locally(idx)?
            }
            Compaction::Snapshot(_) => Ok(()),
        };
        if let Err(refused) = outcome {
            log!(
                debug,
                self.pid,
                "ignored compaction request from {from}: {refused}"
            );
        }
        Ok(())
    }
}
