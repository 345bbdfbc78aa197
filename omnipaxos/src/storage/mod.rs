//! What the user plugs in: the [`Entry`] type of the log, its optional [`Snapshot`], and the
//! [`Storage`] that persists the log and the protocol state.
//!
//! The core calls `Storage` synchronously. Every method returns a [`StorageResult`]; an error
//! never panics the core: the instance stops taking part (fail-stop), reports the error, and can
//! be rebuilt from the same storage once it is healthy again.

pub(crate) mod internal_storage;
mod shared;

use crate::ballot::Ballot;
use crate::config::ClusterConfig;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::fmt::{self, Debug};

/// The type of the entries of the replicated log.
///
/// Usually derived with `#[derive(Entry)]` (feature `macros`), optionally with
/// `#[snapshot(MySnapshot)]`.
#[cfg(not(feature = "serde"))]
pub trait Entry: Clone + Debug {
    /// The snapshot type used to compact the log; [`NoSnapshot`] disables snapshots.
    type Snapshot: Snapshot<Self>;
}

/// The type of the entries of the replicated log.
///
/// Usually derived with `#[derive(Entry)]` (feature `macros`), optionally with
/// `#[snapshot(MySnapshot)]`. With the `serde` feature the snapshot must be serde too, because
/// it travels in messages.
#[cfg(feature = "serde")]
pub trait Entry: Clone + Debug {
    /// The snapshot type used to compact the log; [`NoSnapshot`] disables snapshots.
    type Snapshot: Snapshot<Self> + Serialize + for<'a> Deserialize<'a>;
}

/// `u64` is a ready-made entry type (ids, counters, and the simulator's examples and tests).
impl Entry for u64 {
    type Snapshot = NoSnapshot;
}

/// A compact summary of a prefix of the log, e.g. the state of a key-value store.
pub trait Snapshot<T: Entry>: Clone + Debug {
    /// Builds a snapshot that summarises `entries`.
    fn create(entries: &[T]) -> Self;
    /// Folds `delta`, a snapshot of later entries, into `self`.
    fn merge(&mut self, delta: Self);
    /// Whether snapshots are used at all. With `false`, `create` and `merge` are never called.
    fn use_snapshots() -> bool;
}

/// A snapshot sent to a lagging server.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum SnapshotType<T: Entry> {
    /// Covers the whole prefix: replaces whatever the receiver holds.
    Complete(T::Snapshot),
    /// Covers the entries after the receiver's decided index: merged into the receiver's state.
    Delta(T::Snapshot),
}

/// The snapshot type of entries that do not use snapshots.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct NoSnapshot;

impl<T: Entry> Snapshot<T> for NoSnapshot {
    fn create(_entries: &[T]) -> Self {
        // Invariant: the core checks `use_snapshots()` before creating one; user calls of
        // `OmniPaxos::snapshot` with `NoSnapshot` are rejected before reaching here.
        panic!("NoSnapshot::create: snapshots are disabled for this entry type")
    }

    fn merge(&mut self, _delta: Self) {
        // Invariant: as for `create`, never called while `use_snapshots()` is false.
        panic!("NoSnapshot::merge: snapshots are disabled for this entry type")
    }

    fn use_snapshots() -> bool {
        false
    }
}

/// The last slot of a configuration's log: seals the log and names the next configuration.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct StopSign {
    /// The configuration that follows this one.
    pub next_config: ClusterConfig,
    /// Application data travelling with the reconfiguration.
    pub metadata: Option<Vec<u8>>,
}

impl StopSign {
    /// Creates a StopSign.
    pub fn with(next_config: ClusterConfig, metadata: Option<Vec<u8>>) -> Self {
        StopSign {
            next_config,
            metadata,
        }
    }
}

impl fmt::Display for StopSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StopSign(c{} {:?})",
            self.next_config.configuration_id, self.next_config.nodes
        )
    }
}

/// The result of a storage call. The error is `Send + Sync` so instances can move between
/// threads.
pub type StorageResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One operation of an atomic batch, see [`Storage::write_atomically`].
#[derive(Debug)]
pub enum StorageOp<T: Entry> {
    /// [`Storage::append_entry`].
    AppendEntry(T),
    /// [`Storage::append_entries`].
    AppendEntries(Vec<T>),
    /// [`Storage::append_on_prefix`].
    AppendOnPrefix(usize, Vec<T>),
    /// [`Storage::set_promise`].
    SetPromise(Ballot),
    /// [`Storage::set_decided_idx`].
    SetDecidedIndex(usize),
    /// [`Storage::set_accepted_round`].
    SetAcceptedRound(Ballot),
    /// [`Storage::set_compacted_idx`].
    SetCompactedIdx(usize),
    /// [`Storage::trim`].
    Trim(usize),
    /// [`Storage::set_stopsign`].
    SetStopsign(Option<StopSign>),
    /// [`Storage::set_snapshot`].
    SetSnapshot(Option<T::Snapshot>),
}

/// Durable state of one server: the log and the protocol variables.
///
/// Indices are absolute log positions, as if nothing had ever been compacted. A method that
/// returns `Err` must leave the store as it was before the call.
pub trait Storage<T: Entry> {
    /// Applies `ops` in order, all or nothing: on `Err` the store is as before the call.
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()>;
    /// Appends one entry at the end of the log.
    fn append_entry(&mut self, entry: T) -> StorageResult<()>;
    /// Appends entries at the end of the log.
    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()>;
    /// Drops every entry at or after `from_idx`, then appends `entries`.
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()>;
    /// Persists the promised ballot.
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()>;
    /// Persists the decided index.
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()>;
    /// The decided index; 0 on a fresh store.
    fn get_decided_idx(&self) -> StorageResult<usize>;
    /// Persists the round in which the log was last accepted.
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()>;
    /// The accepted round; `None` on a fresh store.
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>>;
    /// Entries `[from, to)`; empty unless the whole range is held.
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>>;
    /// Number of entries physically held (the compacted prefix excluded).
    fn get_log_len(&self) -> StorageResult<usize>;
    /// Entries `[from, end)`; empty if unavailable.
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>>;
    /// The promised ballot; `None` on a fresh store.
    fn get_promise(&self) -> StorageResult<Option<Ballot>>;
    /// Persists (or clears) the StopSign, which is kept outside the entry log.
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()>;
    /// The StopSign, if any.
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>>;
    /// Drops the entries with index `< idx`.
    fn trim(&mut self, idx: usize) -> StorageResult<()>;
    /// Persists the length of the compacted prefix.
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()>;
    /// The length of the compacted prefix; 0 on a fresh store.
    fn get_compacted_idx(&self) -> StorageResult<usize>;
    /// Persists (or clears) the snapshot of the compacted prefix.
    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()>;
    /// The snapshot of the compacted prefix, if any.
    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>>;
}
