//! A store shared between a server and its owner: `Arc<Mutex<S>>` is a [`Storage`] whenever `S`
//! is. The owner keeps a clone, so the store outlives the instance (a simulated crash, a thread
//! that died) and can be inspected (`lock()`) while the instance runs.

use crate::ballot::Ballot;
use crate::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use std::sync::{Arc, Mutex, MutexGuard};

fn locked<S>(store: &Mutex<S>) -> MutexGuard<'_, S> {
    // A poisoned lock only means another holder panicked; every write is all or nothing, so
    // the store itself is consistent.
    store.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Entry, S: Storage<T>> Storage<T> for Arc<Mutex<S>> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        locked(self).write_atomically(ops)
    }
    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        locked(self).append_entry(entry)
    }
    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        locked(self).append_entries(entries)
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        locked(self).append_on_prefix(from_idx, entries)
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        locked(self).set_promise(n_prom)
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        locked(self).set_decided_idx(ld)
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        locked(self).get_decided_idx()
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        locked(self).set_accepted_round(na)
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        locked(self).get_accepted_round()
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        locked(self).get_entries(from, to)
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        locked(self).get_log_len()
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        locked(self).get_suffix(from)
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        locked(self).get_promise()
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        locked(self).set_stopsign(s)
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        locked(self).get_stopsign()
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        locked(self).trim(idx)
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        locked(self).set_compacted_idx(idx)
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        locked(self).get_compacted_idx()
    }
    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        locked(self).set_snapshot(snapshot)
    }
    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        locked(self).get_snapshot()
    }
}
