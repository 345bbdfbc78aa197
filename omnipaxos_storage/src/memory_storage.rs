//! [`MemoryStorage`]: the [`Storage`] trait on plain vectors.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};

/// Keeps the log and the protocol state in memory. `Clone` copies the whole state, which is
/// how tests simulate a restart. [`Storage::write_atomically`] is all-or-nothing.
#[derive(Clone)]
pub struct MemoryStorage<T: Entry> {
    /// Entries from absolute index `trimmed_idx` on.
    log: Vec<T>,
    n_prom: Option<Ballot>,
    acc_round: Option<Ballot>,
    ld: usize,
    /// Absolute index of `log[0]`.
    trimmed_idx: usize,
    compacted_idx: usize,
    snapshot: Option<T::Snapshot>,
    stopsign: Option<StopSign>,
}

impl<T: Entry> Default for MemoryStorage<T> {
    fn default() -> Self {
        Self {
            log: Vec::new(),
            n_prom: None,
            acc_round: None,
            ld: 0,
            trimmed_idx: 0,
            compacted_idx: 0,
            snapshot: None,
            stopsign: None,
        }
    }
}

impl<T: Entry> std::fmt::Debug for MemoryStorage<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("log_len", &self.log.len())
            .field("trimmed_idx", &self.trimmed_idx)
            .field("decided_idx", &self.ld)
            .field("promise", &self.n_prom)
            .finish()
    }
}

/// What `JournalStorage` reads to write the whole state without copying it.
#[cfg(feature = "persistent_storage")]
impl<T: Entry> MemoryStorage<T> {
    /// Absolute index of the first entry held (everything below was trimmed).
    pub(crate) fn log_start(&self) -> usize {
        self.trimmed_idx
    }

    /// The entries held, from [`MemoryStorage::log_start`] on.
    pub(crate) fn held(&self) -> &[T] {
        &self.log
    }

    pub(crate) fn snapshot_ref(&self) -> Option<&T::Snapshot> {
        self.snapshot.as_ref()
    }

    pub(crate) fn stopsign_ref(&self) -> Option<&StopSign> {
        self.stopsign.as_ref()
    }
}

impl<T: Entry> MemoryStorage<T> {
    /// Position in `log` of absolute index `idx` (clamped to the held range).
    fn physical(&self, idx: usize) -> usize {
        idx.saturating_sub(self.trimmed_idx).min(self.log.len())
    }

    fn apply(&mut self, op: StorageOp<T>) {
        match op {
            StorageOp::AppendEntry(e) => self.log.push(e),
            StorageOp::AppendEntries(mut es) => self.log.append(&mut es),
            StorageOp::AppendOnPrefix(from, mut es) => {
                // Entries below the trimmed prefix are not held: skip those the prefix covers.
                let skip = self.trimmed_idx.saturating_sub(from).min(es.len());
                let at = self.physical(from);
                self.log.truncate(at);
                self.log.extend(es.drain(skip..));
            }
            StorageOp::SetPromise(b) => self.n_prom = Some(b),
            StorageOp::SetDecidedIndex(i) => self.ld = i,
            StorageOp::SetAcceptedRound(b) => self.acc_round = Some(b),
            StorageOp::SetCompactedIdx(i) => self.compacted_idx = i,
            StorageOp::Trim(idx) => {
                if idx > self.trimmed_idx {
                    let n = self.physical(idx);
                    self.log.drain(..n);
                    self.trimmed_idx = idx;
                }
            }
            StorageOp::SetStopsign(s) => self.stopsign = s,
            StorageOp::SetSnapshot(s) => self.snapshot = s,
        }
    }
}

impl<T: Entry> Storage<T> for MemoryStorage<T> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        // No operation on vectors can fail, so applying them in order is all-or-nothing.
        for op in ops {
            self.apply(op);
        }
        Ok(())
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.log.push(entry);
        Ok(())
    }

    fn append_entries(&mut self, mut entries: Vec<T>) -> StorageResult<()> {
        self.log.append(&mut entries);
        Ok(())
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        self.apply(StorageOp::AppendOnPrefix(from_idx, entries));
        Ok(())
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.n_prom = Some(n_prom);
        Ok(())
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.ld = ld;
        Ok(())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.ld)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.acc_round = Some(na);
        Ok(())
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.acc_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        if from < self.trimmed_idx || to > self.trimmed_idx + self.log.len() || from >= to {
            return Ok(Vec::new());
        }
        Ok(self.log[from - self.trimmed_idx..to - self.trimmed_idx].to_vec())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.log.len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        if from < self.trimmed_idx {
            return Ok(Vec::new());
        }
        Ok(self.log[self.physical(from)..].to_vec())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.n_prom)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.stopsign = s;
        Ok(())
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.apply(StorageOp::Trim(idx));
        Ok(())
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.compacted_idx = idx;
        Ok(())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.compacted_idx)
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        self.snapshot = snapshot;
        Ok(())
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        Ok(self.snapshot.clone())
    }
}
