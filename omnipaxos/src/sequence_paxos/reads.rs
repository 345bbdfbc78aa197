//! Reads of the log: entries become `Decided`/`Undecided`, the compacted prefix one `Trimmed`
//! or `Snapshotted` entry, and the sealed end a `StopSign`. Unwritten batch entries are not
//! visible. A storage error reads as `None`.

use super::SequencePaxos;
use crate::logging::log;
use crate::storage::internal_storage::StorageResult;
use crate::storage::{Entry, Snapshot, Storage};
use crate::util::{LogEntry, SnapshottedEntry};
use std::ops::{Bound, RangeBounds};

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    pub(crate) fn read_entries<R: RangeBounds<usize>>(&self, range: R) -> Option<Vec<LogEntry<T>>> {
        let accepted_idx = self.internal_storage.visible_accepted_idx();
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1)?,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => accepted_idx,
        };
        if to == 0 || to > accepted_idx || from >= to {
            return None;
        }
        match self.read_range(from, to) {
            Ok(entries) => Some(entries),
            Err(err) => {
                log!(error, self.pid, "read of [{from}, {to}) failed: {err}");
                None
            }
        }
    }

    fn read_range(&self, from: usize, to: usize) -> StorageResult<Vec<LogEntry<T>>> {
        let s = &self.internal_storage;
        let compacted = s.compacted_idx();
        if to <= compacted {
            return Ok(vec![self.compacted_entry()?]);
        }
        let mut out = Vec::with_capacity(to - from);
        let mut start = from;
        if start < compacted {
            out.push(self.compacted_entry()?);
            start = compacted;
        }
        let entries_end = to.min(s.log_end());
        if start < entries_end {
            let decided = s.decided_idx();
            let entries = s.get_entries(start, entries_end)?;
            out.extend(entries.into_iter().zip(start..).map(|(e, idx)| {
                if idx < decided {
                    LogEntry::Decided(e)
                } else {
                    LogEntry::Undecided(e)
                }
            }));
        }
        let unwritten_end = s.log_end() + s.unwritten().len();
        let tail_start = start.max(s.log_end());
        if tail_start < to.min(unwritten_end) {
            let tail =
                &s.unwritten()[tail_start - s.log_end()..to.min(unwritten_end) - s.log_end()];
            out.extend(tail.iter().cloned().map(LogEntry::Undecided));
        }
        if let Some(ss) = s.stopsign() {
            if to > s.log_end() {
                out.push(LogEntry::StopSign(ss.clone(), s.stopsign_is_decided()));
            }
        }
        Ok(out)
    }

    fn compacted_entry(&self) -> StorageResult<LogEntry<T>> {
        let compacted = self.internal_storage.compacted_idx();
        if T::Snapshot::use_snapshots() {
            if let Some(snapshot) = self.internal_storage.get_snapshot()? {
                return Ok(LogEntry::Snapshotted(SnapshottedEntry::with(
                    compacted, snapshot,
                )));
            }
        }
        Ok(LogEntry::Trimmed(compacted))
    }
}
