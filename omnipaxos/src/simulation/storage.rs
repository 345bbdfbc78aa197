//! [`SimStorage`]: a storage handle shared between a simulated server and the simulator, so the
//! storage outlives a crash and can be told to fail.

use crate::ballot::Ballot;
use crate::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use std::sync::{Arc, Mutex, MutexGuard};

/// Invariant: the store is only taken out of its slot inside `reopen`, under the lock.
const TAKEN: &str = "SimStorage: store taken while reopening";

/// When the storage fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultMode {
    /// Never.
    #[default]
    Healthy,
    /// Every write fails (reads still work).
    FailWrites,
    /// Writes succeed until `n` more have been made, then every write fails.
    FailWritesAfter(u64),
    /// Every read of entries (`get_entries`, `get_suffix`) fails; writes and the other reads
    /// work: a damaged sector under the log.
    FailEntryReads,
}

struct Shared<B> {
    /// Always `Some` outside `reopen` (taken only while the closure runs).
    store: Option<B>,
    mode: FaultMode,
    /// Writes since the fault mode was last set (drives `FailWritesAfter`).
    writes: u64,
    /// Successful writes since the store was created.
    total_writes: u64,
    /// One line per successful write, while recording (see `record_writes`).
    write_log: Option<Vec<String>>,
}

/// A cloneable handle to a storage `B`: clones share the same store. Writes can be made to fail
/// with [`SimStorage::set_fault`]; a failing write changes nothing.
pub struct SimStorage<B> {
    shared: Arc<Mutex<Shared<B>>>,
}

impl<B> Clone for SimStorage<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The error a [`SimStorage`] returns when it is told to fail.
#[derive(Debug, thiserror::Error)]
#[error("injected storage fault")]
pub struct InjectedFault;

impl<B> SimStorage<B> {
    /// Wraps `store`.
    pub fn new(store: B) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                store: Some(store),
                mode: FaultMode::Healthy,
                writes: 0,
                total_writes: 0,
                write_log: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        // A poisoned lock only means another thread panicked; the store itself is consistent.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets when writes fail from now on.
    pub fn set_fault(&self, mode: FaultMode) {
        let mut shared = self.lock();
        shared.mode = mode;
        shared.writes = 0;
    }

    /// How many writes (each a storage call that changes state) succeeded so far.
    pub fn write_count(&self) -> u64 {
        self.lock().total_writes
    }

    /// Starts recording every successful write as one line (`append_entries(+3)`,
    /// `atomic[SetPromise(2.1), AppendOnPrefix(0, +3)]`, ...), for tests that assert the exact
    /// storage operations an input causes.
    pub fn record_writes(&self) {
        self.lock().write_log = Some(Vec::new());
    }

    /// The writes recorded since the last call (empty if not recording).
    pub fn take_write_log(&self) -> Vec<String> {
        let mut shared = self.lock();
        match shared.write_log.as_mut() {
            Some(log) => std::mem::take(log),
            None => Vec::new(),
        }
    }

    /// Runs `f` on the store (for assertions in tests).
    pub fn with_store<R>(&self, f: impl FnOnce(&B) -> R) -> R {
        f(self.lock().store.as_ref().expect(TAKEN))
    }

    /// Replaces the store by what `reopen` makes of it: typically it drops the old store and
    /// opens the same files again, as a restarted process would. Every clone of this handle sees
    /// the new store.
    pub fn reopen(&self, reopen: impl FnOnce(B) -> B) {
        let mut shared = self.lock();
        let old = shared.store.take().expect(TAKEN);
        shared.store = Some(reopen(old));
    }

    fn recording(&self) -> bool {
        self.lock().write_log.is_some()
    }

    /// Runs the read of entries `f` unless entry reads fail.
    fn read_entries<R>(&self, f: impl FnOnce(&B) -> StorageResult<R>) -> StorageResult<R> {
        let shared = self.lock();
        if shared.mode == FaultMode::FailEntryReads {
            return Err(Box::new(InjectedFault));
        }
        f(shared.store.as_ref().expect(TAKEN))
    }

    /// Runs the write `f` unless a fault is due; `line` describes it for the write log.
    fn write<R>(
        &mut self,
        line: Option<String>,
        f: impl FnOnce(&mut B) -> StorageResult<R>,
    ) -> StorageResult<R> {
        let mut shared = self.lock();
        let fail = match shared.mode {
            FaultMode::Healthy | FaultMode::FailEntryReads => false,
            FaultMode::FailWrites => true,
            FaultMode::FailWritesAfter(n) => shared.writes >= n,
        };
        if fail {
            return Err(Box::new(InjectedFault));
        }
        shared.writes += 1;
        let result = f(shared.store.as_mut().expect(TAKEN));
        if result.is_ok() {
            shared.total_writes += 1;
            if let (Some(log), Some(line)) = (shared.write_log.as_mut(), line) {
                log.push(line);
            }
        }
        result
    }
}

impl<T: Entry, B: Storage<T>> Storage<T> for SimStorage<B> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        let line = self.recording().then(|| describe_batch(&ops));
        self.write(line, |s| s.write_atomically(ops))
    }
    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        let line = self.recording().then(|| "append_entry".into());
        self.write(line, |s| s.append_entry(entry))
    }
    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        let line = self
            .recording()
            .then(|| format!("append_entries(+{})", entries.len()));
        self.write(line, |s| s.append_entries(entries))
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        let line = self
            .recording()
            .then(|| format!("append_on_prefix({from_idx}, +{})", entries.len()));
        self.write(line, |s| s.append_on_prefix(from_idx, entries))
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        let line = self.recording().then(|| format!("set_promise({n_prom})"));
        self.write(line, |s| s.set_promise(n_prom))
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        let line = self.recording().then(|| format!("set_decided_idx({ld})"));
        self.write(line, |s| s.set_decided_idx(ld))
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.lock().store.as_ref().expect(TAKEN).get_decided_idx()
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        let line = self
            .recording()
            .then(|| format!("set_accepted_round({na})"));
        self.write(line, |s| s.set_accepted_round(na))
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.lock()
            .store
            .as_ref()
            .expect(TAKEN)
            .get_accepted_round()
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        self.read_entries(|s| s.get_entries(from, to))
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        self.lock().store.as_ref().expect(TAKEN).get_log_len()
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        self.read_entries(|s| s.get_suffix(from))
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.lock().store.as_ref().expect(TAKEN).get_promise()
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        let line = self.recording().then(|| {
            format!(
                "set_stopsign({})",
                if s.is_some() { "Some" } else { "None" }
            )
        });
        self.write(line, |st| st.set_stopsign(s))
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.lock().store.as_ref().expect(TAKEN).get_stopsign()
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        let line = self.recording().then(|| format!("trim({idx})"));
        self.write(line, |s| s.trim(idx))
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        let line = self
            .recording()
            .then(|| format!("set_compacted_idx({idx})"));
        self.write(line, |s| s.set_compacted_idx(idx))
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.lock().store.as_ref().expect(TAKEN).get_compacted_idx()
    }
    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        let line = self.recording().then(|| {
            format!(
                "set_snapshot({})",
                if snapshot.is_some() { "Some" } else { "None" }
            )
        });
        self.write(line, |s| s.set_snapshot(snapshot))
    }
    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        self.lock().store.as_ref().expect(TAKEN).get_snapshot()
    }
}

/// One line for a `write_atomically` batch: entries as counts, ballots and indices in full.
fn describe_batch<T: Entry>(ops: &[StorageOp<T>]) -> String {
    let ops: Vec<String> = ops
        .iter()
        .map(|op| match op {
            StorageOp::AppendEntry(_) => "AppendEntry".to_string(),
            StorageOp::AppendEntries(es) => format!("AppendEntries(+{})", es.len()),
            StorageOp::AppendOnPrefix(from, es) => format!("AppendOnPrefix({from}, +{})", es.len()),
            StorageOp::SetPromise(b) => format!("SetPromise({b})"),
            StorageOp::SetDecidedIndex(i) => format!("SetDecidedIndex({i})"),
            StorageOp::SetAcceptedRound(b) => format!("SetAcceptedRound({b})"),
            StorageOp::SetCompactedIdx(i) => format!("SetCompactedIdx({i})"),
            StorageOp::Trim(i) => format!("Trim({i})"),
            StorageOp::SetStopsign(ss) => format!(
                "SetStopsign({})",
                if ss.is_some() { "Some" } else { "None" }
            ),
            StorageOp::SetSnapshot(s) => {
                format!("SetSnapshot({})", if s.is_some() { "Some" } else { "None" })
            }
        })
        .collect();
    format!("atomic[{}]", ops.join(", "))
}
