//! [`PersistentStorage`]: the [`Storage`] trait on a sled database, for fail-recovery.
//!
//! A store is one directory. Every method maps a failure to an `Err` and never panics
//! ([`PersistentStorage::open`] is the one documented exception: it panics if the store cannot be
//! opened, as the published API returns `Self`; use [`PersistentStorage::try_open`] to get the
//! error instead). A batch of operations is one atomic sled write, made durable once.
//! See `docs/storage.md` for the layout and the durability promises.

mod config;
mod disk;
mod durable;
mod error;
mod layout;
mod wal;

pub use config::PersistentStorageConfig;
pub(crate) use config::SyncObserver;
pub use error::PersistentStorageError;

use disk::LockRelease;
use durable::{Change, Durability, Pending, Tree};
use layout::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;

/// A durable store for one server, in a sled database at the configured path.
///
/// Reopening the same path (after a crash, a power cut or a restart) finds everything that was
/// written before; with `sync_writes` on (the default) that includes every write that returned
/// `Ok`, except that after a power cut the decided index can be back at its last synced value
/// (see [`PersistentStorageConfig::set_sync_decided_idx`]). Dropping the store flushes it and
/// returns once the path can be opened again.
pub struct PersistentStorage<T: Entry> {
    db: sled::Db,
    /// The snapshot, in a tree of its own: sled rewrites a whole leaf on every change of any
    /// key in it, so a large snapshot next to the decided index made every write carry it.
    snapshots: sled::Tree,
    path: String,
    /// How writes become durable: the log ahead, sled's flush, or neither.
    durability: Durability,
    /// First absolute index of every log chunk, and its number of entries.
    chunks: BTreeMap<usize, usize>,
    /// First absolute index held (everything below was trimmed).
    log_start: usize,
    /// Absolute index after the last entry.
    log_end: usize,
    _entry: PhantomData<T>,
    /// Declared after `db`, so dropped after it: waits until sled released the file lock.
    _lock_release: LockRelease,
}

impl<T> PersistentStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
{
    /// Opens the store at the configured path, creating it if needed.
    ///
    /// # Panics
    /// If the store cannot be opened or is corrupt; the message names the path and the cause.
    /// Use [`PersistentStorage::try_open`] to handle that case.
    pub fn open(config: PersistentStorageConfig) -> Self {
        let path = config.get_path().clone();
        Self::try_open(config)
            .unwrap_or_else(|e| panic!("could not open the persistent storage at {path:?}: {e}"))
    }

    /// Opens the store at the configured path, creating it if needed.
    ///
    /// Returns [`PersistentStorageError::Locked`] at once if another live instance (in this
    /// process or another) holds the store.
    pub fn try_open(config: PersistentStorageConfig) -> Result<Self, PersistentStorageError> {
        let dir = Path::new(config.get_path());
        let io = |what| move |source| PersistentStorageError::Io { what, source };
        if disk::is_locked(dir).map_err(io("checking the store's lock"))? {
            return Err(PersistentStorageError::Locked(config.get_path().clone()));
        }
        // Made before the database, so that on an error below the database is dropped first
        // and this then waits for its lock (locals drop in reverse order).
        let lock_release = LockRelease::new(dir);
        let db = config.sled_config().open()?;
        let snapshots = db.open_tree(SNAPSHOT_TREE)?;
        // Replays the log of an earlier run first: everything below reads the replayed state.
        let durability = Durability::open(dir, &db, &snapshots, &config)?;
        let log_start = match db.get(LOG_START)? {
            Some(bytes) => decode_usize(&bytes, "log start")?,
            None => 0,
        };
        let mut chunks = BTreeMap::new();
        for item in db.scan_prefix([CHUNK_PREFIX]) {
            let (key, value) = item?;
            chunks.insert(chunk_first_idx(&key)?, chunk_len(&value)?);
        }
        let mut expected = None;
        for (&first, &len) in &chunks {
            if expected.is_some_and(|e| e != first) {
                return Err(PersistentStorageError::Corrupt(format!(
                    "log chunks are not contiguous at index {first}"
                )));
            }
            expected = Some(first + len);
        }
        let log_end = expected.unwrap_or(log_start).max(log_start);
        Ok(Self {
            db,
            snapshots,
            path: config.get_path().clone(),
            durability,
            chunks,
            log_start,
            log_end,
            _entry: PhantomData,
            _lock_release: lock_release,
        })
    }

    /// Creates a new store at the configured path.
    ///
    /// # Panics
    /// If something already exists at the path, or the store cannot be created.
    pub fn new(config: PersistentStorageConfig) -> Self {
        let path = config.get_path().clone();
        Self::try_new(config)
            .unwrap_or_else(|e| panic!("could not create the persistent storage at {path:?}: {e}"))
    }

    /// Creates a new store at the configured path; refuses a path that already exists.
    pub fn try_new(config: PersistentStorageConfig) -> Result<Self, PersistentStorageError> {
        if Path::new(config.get_path()).exists() {
            return Err(PersistentStorageError::AlreadyExists(
                config.get_path().clone(),
            ));
        }
        Self::try_open(config)
    }

    /// The directory of the store.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How many times the store made its writes durable since it was opened: one per write
    /// call with `sync_writes` on (so one per group-committed batch of the protocol), none with
    /// it off. With the write-ahead log each is one `fdatasync` of the log.
    pub fn flush_count(&self) -> u64 {
        self.durability.durable_writes
    }

    /// Applies `changes` as one write: logged ahead and applied change by change, or (without
    /// the log, or too large for it) applied atomically and flushed; made durable either way
    /// (the decided index alone with the next write, see `sync_decided_idx`).
    fn write_changes(&mut self, changes: Vec<Change>) -> Result<(), PersistentStorageError> {
        let wait = self.durability.sync_decided_idx || !only_decided_idx(&changes);
        let pending = self.durability.log_ahead(&self.db, &changes, wait)?;
        match pending.0 {
            Pending::Logged => durable::apply(&self.db, &self.snapshots, changes)?,
            Pending::Nothing | Pending::Flush => self.apply_atomically(changes)?,
        }
        self.durability.settle(&self.db, pending)
    }

    /// Applies `changes` as one sled batch, or one transaction over both trees when the
    /// snapshot changes.
    fn apply_atomically(&mut self, changes: Vec<Change>) -> Result<(), PersistentStorageError> {
        let mut batch = sled::Batch::default();
        let mut snapshot = None;
        for change in changes {
            match (change.tree, change.value) {
                (Tree::Main, Some(value)) => batch.insert(change.key, value),
                (Tree::Main, None) => batch.remove(change.key),
                (Tree::Snapshots, value) => snapshot = Some((change.key, value)),
            }
        }
        match snapshot {
            None => self.db.apply_batch(batch)?,
            Some((key, value)) => {
                use sled::transaction::{ConflictableTransactionError, TransactionError};
                use sled::Transactional;
                let main: &sled::Tree = &self.db;
                (main, &self.snapshots)
                    .transaction(|(main, snapshots)| {
                        main.apply_batch(&batch)?;
                        match &value {
                            Some(bytes) => snapshots.insert(key.as_slice(), bytes.as_slice())?,
                            None => snapshots.remove(key.as_slice())?,
                        };
                        Ok::<_, ConflictableTransactionError<()>>(())
                    })
                    .map_err(|e| match e {
                        TransactionError::Storage(e) => PersistentStorageError::from(e),
                        TransactionError::Abort(()) => {
                            PersistentStorageError::Corrupt("a write was aborted".into())
                        }
                    })?;
            }
        }
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>) -> StorageResult<()> {
        self.write_changes(vec![Change::set(Tree::Main, key, value)])?;
        Ok(())
    }

    fn put_optional<V: Serialize>(
        &mut self,
        key: &[u8],
        value: Option<&V>,
        what: &'static str,
    ) -> StorageResult<()> {
        match value {
            Some(v) => self.put(key, encode(v, what)?),
            None => {
                self.write_changes(vec![Change::remove(Tree::Main, key)])?;
                Ok(())
            }
        }
    }

    fn get_decoded<V: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> StorageResult<Option<V>> {
        match self.db.get(key).map_err(PersistentStorageError::from)? {
            Some(bytes) => Ok(Some(decode(&bytes, what)?)),
            None => Ok(None),
        }
    }

    fn get_usize(&self, key: &[u8], what: &'static str) -> StorageResult<usize> {
        match self.db.get(key).map_err(PersistentStorageError::from)? {
            Some(bytes) => Ok(decode_usize(&bytes, what)?),
            None => Ok(0),
        }
    }

    fn read_chunk(&self, first: usize) -> Result<Vec<T>, PersistentStorageError> {
        match self.db.get(chunk_key(first))? {
            Some(value) => decode_chunk(&value),
            None => Err(PersistentStorageError::Corrupt(format!(
                "missing log chunk at {first}"
            ))),
        }
    }

    /// Writes `txn`'s changes as one write, then adopts its log bookkeeping.
    fn commit(&mut self, txn: Txn<T>) -> StorageResult<()> {
        let Txn {
            chunks,
            log_start,
            log_end,
            changes,
            ..
        } = txn;
        self.write_changes(changes)?;
        self.chunks = chunks;
        self.log_start = log_start;
        self.log_end = log_end;
        Ok(())
    }
}

impl<T: Entry> Drop for PersistentStorage<T> {
    /// Flushes what sled still buffers (with `sync_writes` off), so a clean drop loses nothing;
    /// then `db` and the lock release drop, in that order.
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}

/// A write being prepared: its changes to sled, in order, plus the log bookkeeping as it will
/// be once they are applied. Nothing touches the database until `commit`.
struct Txn<T> {
    chunks: BTreeMap<usize, usize>,
    /// Chunks written by this batch, so later operations of the same batch read them.
    written: BTreeMap<usize, Vec<T>>,
    log_start: usize,
    log_end: usize,
    /// What the write does to sled: logged ahead as it is, then applied as one batch.
    changes: Vec<Change>,
}

impl<T: Entry + Serialize + DeserializeOwned> Txn<T> {
    fn begin(store: &PersistentStorage<T>) -> Self {
        Self {
            chunks: store.chunks.clone(),
            written: BTreeMap::new(),
            log_start: store.log_start,
            log_end: store.log_end,
            changes: Vec::new(),
        }
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        self.changes.push(Change::set(Tree::Main, key, value));
    }

    fn remove(&mut self, key: &[u8]) {
        self.changes.push(Change::remove(Tree::Main, key));
    }

    fn chunk(
        &self,
        store: &PersistentStorage<T>,
        first: usize,
    ) -> Result<Vec<T>, PersistentStorageError> {
        match self.written.get(&first) {
            Some(entries) => Ok(entries.clone()),
            None => store.read_chunk(first),
        }
    }

    fn put_chunk(&mut self, first: usize, entries: Vec<T>) -> Result<(), PersistentStorageError> {
        self.insert(&chunk_key(first), encode_chunk(&entries)?);
        self.chunks.insert(first, entries.len());
        self.written.insert(first, entries);
        Ok(())
    }

    fn remove_chunk(&mut self, first: usize) {
        self.remove(&chunk_key(first));
        self.chunks.remove(&first);
        self.written.remove(&first);
    }

    fn append(&mut self, entries: Vec<T>) -> Result<(), PersistentStorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = self.log_end;
        self.log_end += entries.len();
        self.put_chunk(first, entries)
    }

    /// Drops every entry at or after `from` (rewriting at most the one chunk that straddles it).
    fn truncate(
        &mut self,
        store: &PersistentStorage<T>,
        from: usize,
    ) -> Result<(), PersistentStorageError> {
        let from = from.max(self.log_start);
        if from >= self.log_end {
            return Ok(());
        }
        let doomed: Vec<usize> = self.chunks.range(from..).map(|(first, _)| *first).collect();
        for first in doomed {
            self.remove_chunk(first);
        }
        if let Some((&first, &len)) = self.chunks.range(..from).next_back() {
            if first + len > from {
                let mut entries = self.chunk(store, first)?;
                entries.truncate(from - first);
                self.put_chunk(first, entries)?;
            }
        }
        self.log_end = from;
        Ok(())
    }

    fn append_on_prefix(
        &mut self,
        store: &PersistentStorage<T>,
        from: usize,
        mut entries: Vec<T>,
    ) -> Result<(), PersistentStorageError> {
        // Entries below the trimmed prefix are not held: skip those the prefix covers.
        let skip = self.log_start.saturating_sub(from).min(entries.len());
        entries.drain(..skip);
        self.truncate(store, from)?;
        if from > self.log_end {
            return Err(PersistentStorageError::Corrupt(format!(
                "append at {from} would leave a gap after the log end {}",
                self.log_end
            )));
        }
        self.append(entries)
    }

    /// Drops the entries below `idx`: whole chunks go, a straddling chunk stays (the log start
    /// hides its first entries).
    fn trim(&mut self, idx: usize) {
        if idx <= self.log_start {
            return;
        }
        let doomed: Vec<usize> = self
            .chunks
            .iter()
            .take_while(|(first, len)| *first + *len <= idx)
            .map(|(first, _)| *first)
            .collect();
        for first in doomed {
            self.remove_chunk(first);
        }
        self.log_start = idx;
        self.log_end = self.log_end.max(idx);
        self.insert(LOG_START, encode_usize(idx).to_vec());
    }

    fn set_snapshot<V: Serialize>(
        &mut self,
        value: Option<&V>,
    ) -> Result<(), PersistentStorageError> {
        self.changes
            .push(match value.map(|v| encode(v, "snapshot")).transpose()? {
                Some(bytes) => Change::set(Tree::Snapshots, SNAPSHOT, bytes),
                None => Change::remove(Tree::Snapshots, SNAPSHOT),
            });
        // A store written before snapshots had their own tree kept it here.
        self.remove(SNAPSHOT);
        Ok(())
    }

    fn set(&mut self, key: &[u8], value: Vec<u8>) {
        self.insert(key, value);
    }

    fn set_optional<V: Serialize>(
        &mut self,
        key: &[u8],
        value: Option<&V>,
        what: &'static str,
    ) -> Result<(), PersistentStorageError> {
        match value {
            Some(v) => self.insert(key, encode(v, what)?),
            None => self.remove(key),
        }
        Ok(())
    }
}

/// Whether a write only moves the decided index: the one write that need not wait for the
/// device unless `sync_decided_idx` is set (see
/// [`PersistentStorageConfig::set_sync_decided_idx`]).
fn only_decided_idx(changes: &[Change]) -> bool {
    matches!(changes, [change] if change.tree == Tree::Main && change.key == DECIDED_IDX)
}

impl<T> Storage<T> for PersistentStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        let mut txn = Txn::begin(self);
        for op in ops {
            match op {
                StorageOp::AppendEntry(e) => txn.append(vec![e])?,
                StorageOp::AppendEntries(es) => txn.append(es)?,
                StorageOp::AppendOnPrefix(from, es) => txn.append_on_prefix(self, from, es)?,
                StorageOp::SetPromise(b) => txn.set(PROMISE, encode(&b, "promise")?),
                StorageOp::SetDecidedIndex(i) => txn.set(DECIDED_IDX, encode_usize(i).to_vec()),
                StorageOp::SetAcceptedRound(b) => {
                    txn.set(ACCEPTED_ROUND, encode(&b, "accepted round")?)
                }
                StorageOp::SetCompactedIdx(i) => txn.set(COMPACTED_IDX, encode_usize(i).to_vec()),
                StorageOp::Trim(idx) => txn.trim(idx),
                StorageOp::SetStopsign(ss) => {
                    txn.set_optional(STOPSIGN, ss.as_ref(), "stopsign")?
                }
                StorageOp::SetSnapshot(s) => txn.set_snapshot(s.as_ref())?,
            }
        }
        self.commit(txn)
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.append_entries(vec![entry])
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        // The hot path: one insert of one chunk, without copying the chunk index.
        if entries.is_empty() {
            return Ok(());
        }
        let first = self.log_end;
        let value = encode_chunk(&entries)?;
        self.write_changes(vec![Change::set(Tree::Main, &chunk_key(first), value)])?;
        self.chunks.insert(first, entries.len());
        self.log_end += entries.len();
        Ok(())
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        let mut txn = Txn::begin(self);
        txn.append_on_prefix(self, from_idx, entries)?;
        self.commit(txn)
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.put(PROMISE, encode(&n_prom, "promise")?)
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.put(DECIDED_IDX, encode_usize(ld).to_vec())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.get_usize(DECIDED_IDX, "decided index")
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.put(ACCEPTED_ROUND, encode(&na, "accepted round")?)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.get_decoded(ACCEPTED_ROUND, "accepted round")
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        if from >= to || from < self.log_start || to > self.log_end {
            return Ok(Vec::new());
        }
        let start = self
            .chunks
            .range(..=from)
            .next_back()
            .map(|(first, _)| *first)
            .unwrap_or(from);
        let mut out = Vec::with_capacity(to - from);
        for (&first, &len) in self.chunks.range(start..) {
            if first >= to {
                break;
            }
            let lo = from.max(first) - first;
            let hi = to.min(first + len) - first;
            out.extend(self.read_chunk(first)?.into_iter().skip(lo).take(hi - lo));
        }
        if out.len() != to - from {
            return Err(Box::new(PersistentStorageError::Corrupt(format!(
                "read [{from}, {to}) found {} entries",
                out.len()
            ))));
        }
        Ok(out)
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.log_end - self.log_start)
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        self.get_entries(from, self.log_end)
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.get_decoded(PROMISE, "promise")
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.put_optional(STOPSIGN, s.as_ref(), "stopsign")
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.get_decoded(STOPSIGN, "stopsign")
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        let mut txn = Txn::begin(self);
        txn.trim(idx);
        self.commit(txn)
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.put(COMPACTED_IDX, encode_usize(idx).to_vec())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.get_usize(COMPACTED_IDX, "compacted index")
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        let mut txn = Txn::begin(self);
        txn.set_snapshot(snapshot.as_ref())?;
        self.commit(txn)
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        match self
            .snapshots
            .get(SNAPSHOT)
            .map_err(PersistentStorageError::from)?
        {
            Some(bytes) => Ok(Some(decode(&bytes, "snapshot")?)),
            // A store written before snapshots had their own tree.
            None => self.get_decoded(SNAPSHOT, "snapshot"),
        }
    }
}
