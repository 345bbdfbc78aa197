//! The core's view of the user's [`Storage`]: a cache of every protocol variable (so the hot path
//! never reads storage), the batch of entries not yet written, and the composite writes of the
//! protocol. Every write goes to storage first and updates the cache only if it succeeded; an
//! error comes back as a [`StorageError`] and the caller stops the instance.

use crate::ballot::Ballot;
use crate::errors::StorageError;
use crate::storage::{Entry, Snapshot, SnapshotType, StopSign, Storage, StorageOp};
use crate::util::LogSync;
use std::marker::PhantomData;

pub(crate) type StorageResult<X> = Result<X, StorageError>;

pub(crate) struct InternalStorage<T: Entry, B: Storage<T>> {
    storage: B,
    promise: Ballot,
    accepted_round: Ballot,
    decided_idx: usize,
    /// Absolute index after the last written entry (the StopSign slot excluded).
    log_end: usize,
    compacted_idx: usize,
    stopsign: Option<StopSign>,
    /// Complete batches accepted in memory, written by the next `write_pending` (group commit:
    /// everything appended in one burst of input reaches storage as one write). Visible to reads
    /// and the public accepted index, never counted in a quorum before it is written.
    unwritten: Vec<T>,
    /// How many of the first `unwritten` entries a leader already sent to its followers
    /// (`OmniPaxos::take_outgoing_messages_pipelined`).
    unwritten_sent: usize,
    /// A partial batch (fewer than `batch_size` entries); invisible until it is complete or
    /// flushed.
    batch: Vec<T>,
    batch_size: usize,
    /// Successful write calls into storage: each is one flush for a durable store.
    writes: u64,
    _entry: PhantomData<T>,
}

/// How a log synchronisation went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SyncOutcome {
    Applied,
    /// The sync does not fit this log: it starts beyond its end (without a snapshot) or would
    /// cut decided entries. Nothing was written.
    Gap,
}

impl<T: Entry, B: Storage<T>> InternalStorage<T, B> {
    /// Loads the cached state from `storage`. Returns the storage's promise as found (`None` on a
    /// fresh store), which tells the caller whether this is a recovery.
    pub(crate) fn load(storage: B, batch_size: usize) -> StorageResult<(Self, Option<Ballot>)> {
        let read = |op| move |e| StorageError::new(op, e);
        let found_promise = storage.get_promise().map_err(read("get_promise"))?;
        let accepted_round = storage
            .get_accepted_round()
            .map_err(read("get_accepted_round"))?
            .unwrap_or_default();
        let decided_idx = storage.get_decided_idx().map_err(read("get_decided_idx"))?;
        let compacted_idx = storage
            .get_compacted_idx()
            .map_err(read("get_compacted_idx"))?;
        let log_len = storage.get_log_len().map_err(read("get_log_len"))?;
        let stopsign = storage.get_stopsign().map_err(read("get_stopsign"))?;
        let this = Self {
            storage,
            promise: found_promise.unwrap_or_default(),
            accepted_round,
            decided_idx,
            log_end: compacted_idx + log_len,
            compacted_idx,
            stopsign,
            unwritten: Vec::new(),
            unwritten_sent: 0,
            batch: Vec::new(),
            batch_size,
            writes: 0,
            _entry: PhantomData,
        };
        Ok((this, found_promise))
    }

    pub(crate) fn promise(&self) -> Ballot {
        self.promise
    }

    pub(crate) fn accepted_round(&self) -> Ballot {
        self.accepted_round
    }

    pub(crate) fn decided_idx(&self) -> usize {
        self.decided_idx
    }

    pub(crate) fn compacted_idx(&self) -> usize {
        self.compacted_idx
    }

    /// End of the written entries, without the StopSign slot.
    pub(crate) fn log_end(&self) -> usize {
        self.log_end
    }

    /// Length of the written accepted log: written entries plus the StopSign slot. This is what
    /// the protocol reports and counts.
    pub(crate) fn accepted_idx(&self) -> usize {
        self.log_end + usize::from(self.stopsign.is_some())
    }

    /// The accepted log as users see it: also the complete batches waiting for the next write.
    pub(crate) fn visible_accepted_idx(&self) -> usize {
        self.accepted_idx() + self.unwritten.len()
    }

    /// The complete batches waiting for the next write, starting at `log_end`.
    pub(crate) fn unwritten(&self) -> &[T] {
        &self.unwritten
    }

    pub(crate) fn stopsign(&self) -> Option<&StopSign> {
        self.stopsign.as_ref()
    }

    pub(crate) fn stopsign_is_decided(&self) -> bool {
        self.stopsign.is_some() && self.decided_idx == self.accepted_idx()
    }

    pub(crate) fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// How many write calls storage has taken since this instance was built.
    pub(crate) fn write_count(&self) -> u64 {
        self.writes
    }

    pub(crate) fn set_promise(&mut self, promise: Ballot) -> StorageResult<()> {
        self.storage
            .set_promise(promise)
            .map_err(|e| StorageError::new("set_promise", e))?;
        self.writes += 1;
        self.promise = promise;
        Ok(())
    }

    /// Raises the decided index to `idx` (capped at the accepted log); never lowers it.
    pub(crate) fn set_decided_idx(&mut self, idx: usize) -> StorageResult<()> {
        let idx = idx.min(self.accepted_idx());
        if idx <= self.decided_idx {
            return Ok(());
        }
        self.storage
            .set_decided_idx(idx)
            .map_err(|e| StorageError::new("set_decided_idx", e))?;
        self.writes += 1;
        self.decided_idx = idx;
        Ok(())
    }

    pub(crate) fn set_stopsign(&mut self, ss: Option<StopSign>) -> StorageResult<()> {
        self.storage
            .set_stopsign(ss.clone())
            .map_err(|e| StorageError::new("set_stopsign", e))?;
        self.writes += 1;
        self.stopsign = ss;
        Ok(())
    }

    /// Adds `entry` to the batch; a complete batch joins the entries waiting for the next write.
    pub(crate) fn append_entry(&mut self, entry: T) {
        self.batch.push(entry);
        self.seal_full_batch();
    }

    /// Adds `entries` to the batch; a complete batch joins the entries waiting for the next write.
    pub(crate) fn append_entries(&mut self, entries: Vec<T>) {
        if self.batch.is_empty() {
            self.batch = entries;
        } else {
            self.batch.extend(entries);
        }
        self.seal_full_batch();
    }

    fn seal_full_batch(&mut self) {
        if self.batch.len() >= self.batch_size {
            if self.unwritten.is_empty() {
                std::mem::swap(&mut self.unwritten, &mut self.batch);
            } else {
                self.unwritten.append(&mut self.batch);
            }
        }
    }

    /// The unwritten entries not sent yet, now counted as sent.
    pub(crate) fn take_unsent(&mut self) -> Vec<T> {
        let fresh = self.unwritten[self.unwritten_sent..].to_vec();
        self.unwritten_sent = self.unwritten.len();
        fresh
    }

    /// How many of the entries the next `write_pending` writes were sent already.
    pub(crate) fn unwritten_sent(&self) -> usize {
        self.unwritten_sent
    }

    /// Writes the complete batches waiting since the last write, in one storage call, and
    /// returns them (empty if there were none).
    pub(crate) fn write_pending(&mut self) -> StorageResult<Vec<T>> {
        if self.unwritten.is_empty() {
            return Ok(Vec::new());
        }
        let entries = std::mem::take(&mut self.unwritten);
        let written = self.write_entries(entries).map_err(|(err, entries)| {
            self.unwritten = entries; // nothing was written: keep them as they were
            err
        })?;
        self.unwritten_sent = 0;
        Ok(written)
    }

    /// Writes everything accepted in memory, the partial batch included, and returns it.
    pub(crate) fn flush_batch(&mut self) -> StorageResult<Vec<T>> {
        let batch = std::mem::take(&mut self.batch);
        self.unwritten.extend(batch);
        self.write_pending()
    }

    /// Writes `entries` at once, after anything still in the batch. Followers use this: the
    /// leader already batched the entries into one message, batching again only adds latency.
    pub(crate) fn append_entries_now(&mut self, mut entries: Vec<T>) -> StorageResult<usize> {
        if !self.batch.is_empty() || !self.unwritten.is_empty() {
            let mut all = std::mem::take(&mut self.unwritten);
            all.append(&mut self.batch);
            all.append(&mut entries);
            entries = all;
        }
        let count = entries.len();
        if count == 0 {
            return Ok(0);
        }
        // The follower does not need the entries back: hand the vector itself to storage.
        self.storage
            .append_entries(entries)
            .map_err(|e| StorageError::new("append_entries", e))?;
        self.writes += 1;
        self.log_end += count;
        Ok(count)
    }

    /// Removes everything accepted in memory but not written, and returns what of it was never
    /// sent (a deposed leader hands that back to its pending proposals). Entries already sent
    /// may be in a follower's log, so proposing them again could decide them twice: they are
    /// dropped, their fate is the old ballot's.
    pub(crate) fn take_batch(&mut self) -> Vec<T> {
        let mut entries = std::mem::take(&mut self.unwritten);
        entries.drain(..self.unwritten_sent.min(entries.len()));
        self.unwritten_sent = 0;
        entries.append(&mut self.batch);
        entries
    }

    /// Writes `entries` at the end of the log; on error hands them back unwritten.
    fn write_entries(&mut self, entries: Vec<T>) -> Result<Vec<T>, (StorageError, Vec<T>)> {
        let result = if entries.len() == 1 {
            self.storage.append_entry(entries[0].clone())
        } else {
            self.storage.append_entries(entries.clone())
        };
        match result {
            Ok(()) => {
                self.writes += 1;
                self.log_end += entries.len();
                Ok(entries)
            }
            Err(e) => Err((StorageError::new("append_entries", e), entries)),
        }
    }

    /// Makes the log equal to a leader's: accepted round, optional sync payload and decided
    /// index in one atomic write. The decided index never goes down.
    pub(crate) fn sync_log(
        &mut self,
        accepted_round: Ballot,
        decided_idx: usize,
        sync: Option<LogSync<T>>,
    ) -> StorageResult<SyncOutcome> {
        let mut ops = vec![StorageOp::SetAcceptedRound(accepted_round)];
        let mut new_log_end = self.log_end;
        let mut new_compacted = self.compacted_idx;
        let mut new_stopsign = self.stopsign.clone();
        if let Some(sync) = sync {
            let mut snapshot_applied = false;
            let LogSync {
                decided_snapshot,
                mut suffix,
                mut sync_idx,
                stopsign,
            } = sync;
            if let Some(snapshot) = decided_snapshot {
                if sync_idx > self.compacted_idx && T::Snapshot::use_snapshots() {
                    let complete = match snapshot {
                        SnapshotType::Complete(s) => s,
                        SnapshotType::Delta(delta) => self.merge_delta(delta)?,
                    };
                    ops.push(StorageOp::Trim(sync_idx));
                    ops.push(StorageOp::SetCompactedIdx(sync_idx));
                    ops.push(StorageOp::SetSnapshot(Some(complete)));
                    new_compacted = sync_idx;
                    snapshot_applied = true;
                }
            }
            if !snapshot_applied && sync_idx > self.log_end {
                return Ok(SyncOutcome::Gap);
            }
            if sync_idx < new_compacted {
                // The compacted prefix is decided and equal everywhere: skip what it covers.
                let skip = (new_compacted - sync_idx).min(suffix.len());
                suffix.drain(..skip);
                sync_idx = new_compacted;
            }
            new_log_end = match sync_idx.checked_add(suffix.len()) {
                Some(end) => end,
                None => return Ok(SyncOutcome::Gap), // indices from a malformed message
            };
            ops.push(StorageOp::AppendOnPrefix(sync_idx, suffix));
            ops.push(StorageOp::SetStopsign(stopsign.clone()));
            new_stopsign = stopsign;
        }
        let new_accepted_idx = new_log_end + usize::from(new_stopsign.is_some());
        if new_accepted_idx < self.decided_idx {
            // Decided entries are final: no correct leader asks to cut them. Refuse the sync
            // (the caller asks for a fresh one) instead of losing them.
            return Ok(SyncOutcome::Gap);
        }
        let new_decided = self.decided_idx.max(decided_idx).min(new_accepted_idx);
        ops.push(StorageOp::SetDecidedIndex(new_decided));
        self.storage
            .write_atomically(ops)
            .map_err(|e| StorageError::new("write_atomically(sync_log)", e))?;
        self.writes += 1;
        self.accepted_round = accepted_round;
        self.log_end = new_log_end;
        self.compacted_idx = new_compacted;
        self.stopsign = new_stopsign;
        self.decided_idx = new_decided;
        Ok(SyncOutcome::Applied)
    }

    /// This server's complete state after a delta that covers `[decided_idx, ..)`.
    fn merge_delta(&self, delta: T::Snapshot) -> StorageResult<T::Snapshot> {
        let mut base = self.complete_snapshot(self.decided_idx)?;
        base.merge(delta);
        Ok(base)
    }

    /// A snapshot of `[0, idx)`: the stored snapshot merged with the entries after it.
    pub(crate) fn complete_snapshot(&self, idx: usize) -> StorageResult<T::Snapshot> {
        let stored = self.get_snapshot()?;
        let entries = if idx > self.compacted_idx {
            self.get_entries(self.compacted_idx, idx)?
        } else {
            Vec::new()
        };
        Ok(match stored {
            Some(mut s) => {
                if !entries.is_empty() {
                    s.merge(T::Snapshot::create(&entries));
                }
                s
            }
            None => T::Snapshot::create(&entries),
        })
    }

    /// The written log from `from` on, as a [`LogSync`]. A compacted part travels as the stored
    /// snapshot (the complete state of the prefix); a trimmed prefix without a snapshot is not
    /// sent at all, as every server holds it (a trim waits until all servers accepted it), so the
    /// sync then starts at the compacted index.
    pub(crate) fn log_sync_from(&self, from: usize) -> StorageResult<LogSync<T>> {
        let mut sync_idx = from.min(self.log_end);
        let mut decided_snapshot = None;
        if sync_idx < self.compacted_idx {
            if T::Snapshot::use_snapshots() {
                decided_snapshot = self.get_snapshot()?.map(SnapshotType::Complete);
            }
            sync_idx = self.compacted_idx;
        }
        Ok(LogSync {
            decided_snapshot,
            suffix: self.get_entries(sync_idx, self.log_end)?,
            sync_idx,
            stopsign: self.stopsign.clone(),
        })
    }

    /// Compacts `[0, idx)` away, keeping a snapshot of it when `snapshot` is given. Without one
    /// (a trim), an older snapshot is dropped as well when snapshots are in use: a stored
    /// snapshot always covers the whole compacted prefix, so whoever finds one may send it as the
    /// complete state.
    pub(crate) fn compact(
        &mut self,
        idx: usize,
        snapshot: Option<T::Snapshot>,
    ) -> StorageResult<()> {
        let mut ops = vec![StorageOp::Trim(idx), StorageOp::SetCompactedIdx(idx)];
        match snapshot {
            Some(s) => ops.push(StorageOp::SetSnapshot(Some(s))),
            None if T::Snapshot::use_snapshots() => ops.push(StorageOp::SetSnapshot(None)),
            None => {}
        }
        self.storage
            .write_atomically(ops)
            .map_err(|e| StorageError::new("write_atomically(compact)", e))?;
        self.writes += 1;
        self.compacted_idx = idx;
        Ok(())
    }

    /// Entries `[from, to)` of the written log; empty unless all are held.
    pub(crate) fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.storage
            .get_entries(from, to)
            .map_err(|e| StorageError::new("get_entries", e))
    }

    pub(crate) fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        self.storage
            .get_snapshot()
            .map_err(|e| StorageError::new("get_snapshot", e))
    }
}
