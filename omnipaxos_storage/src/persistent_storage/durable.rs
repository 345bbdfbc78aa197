//! How a write call becomes durable: logged ahead in [`wal`](super::wal) (one write, one
//! `fdatasync`) and then applied to sled unflushed; or, without the log or for a record too
//! large for it, applied and then flushed (sled's flush and an `fdatasync`). Also the log's
//! replay when a store is opened, and checkpoints.

use super::disk::DiskSync;
use super::error::PersistentStorageError;
use super::layout::{decode_usize, encode_usize, WAL_CYCLE};
use super::wal::{Wal, WalOpenError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// The tree a change is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Tree {
    Main,
    Snapshots,
}

/// One change to sled: a key set to a value, or removed (`None`). Applying it twice is the same
/// as once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Change {
    pub(super) tree: Tree,
    pub(super) key: Vec<u8>,
    pub(super) value: Option<Vec<u8>>,
}

impl Change {
    pub(super) fn set(tree: Tree, key: &[u8], value: Vec<u8>) -> Self {
        Self {
            tree,
            key: key.to_vec(),
            value: Some(value),
        }
    }

    pub(super) fn remove(tree: Tree, key: &[u8]) -> Self {
        Self {
            tree,
            key: key.to_vec(),
            value: None,
        }
    }
}

/// How the write being made is applied, and made durable once applied.
pub(super) enum Pending {
    /// Writes are not synced: apply it atomically, nothing more.
    Nothing,
    /// It is in the log: apply it change by change (a crash in between is mended by the
    /// replay, which applies the whole record again), nothing more.
    Logged,
    /// Apply it atomically, then flush sled (and, with the log, start a new cycle: sled then
    /// holds everything).
    Flush,
}

/// The store's durability machinery: what `sync_writes` and `write_ahead_log` ask for.
pub(super) struct Durability {
    /// `Some` with `sync_writes` on: the `fdatasync` after sled's flush.
    pub(super) disk_sync: Option<DiskSync>,
    /// `Some` with `sync_writes` and `write_ahead_log` on.
    pub(super) wal: Option<Wal>,
    /// Write calls made durable (one each).
    pub(super) durable_writes: u64,
    /// Whether a write of the decided index alone waits for the device too.
    pub(super) sync_decided_idx: bool,
    pub(super) observer: Option<super::config::SyncObserver>,
}

fn encode_changes(changes: &[Change]) -> Result<Vec<u8>, PersistentStorageError> {
    bincode::serde::encode_to_vec(changes, bincode::config::standard()).map_err(|e| {
        PersistentStorageError::Encode {
            what: "a log record",
            message: e.to_string(),
        }
    })
}

fn decode_changes(bytes: &[u8]) -> Result<Vec<Change>, PersistentStorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(changes, _)| changes)
        .map_err(|e| PersistentStorageError::Decode {
            what: "a log record",
            message: e.to_string(),
        })
}

/// Applies `changes` to sled, in order, not atomically: for changes in the log, whose replay
/// applies them all again if a crash interrupts this. (A sled batch or transaction costs two
/// extra writes of sled's buffers, in the background but on the same device.)
pub(super) fn apply(
    db: &sled::Db,
    snapshots: &sled::Tree,
    changes: Vec<Change>,
) -> sled::Result<()> {
    for change in changes {
        let tree: &sled::Tree = match change.tree {
            Tree::Main => db,
            Tree::Snapshots => snapshots,
        };
        match change.value {
            Some(value) => tree.insert(change.key, value)?,
            None => tree.remove(change.key)?,
        };
    }
    Ok(())
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> PersistentStorageError {
    move |source| PersistentStorageError::Io { what, source }
}

impl Durability {
    /// Opens what `sync_writes` and `write_ahead_log` ask for in `dir` and replays the log of
    /// an earlier run into sled, before the store reads anything.
    pub(super) fn open(
        dir: &Path,
        db: &sled::Db,
        snapshots: &sled::Tree,
        config: &super::config::PersistentStorageConfig,
    ) -> Result<Self, PersistentStorageError> {
        let sync_writes = config.get_sync_writes();
        let write_ahead_log = config.get_write_ahead_log();
        let observer = config.sync_observer();
        let mut disk_sync = match sync_writes {
            true => Some(DiskSync::open(dir).map_err(io("opening the store for syncs"))?),
            false => None,
        };
        let want_log = sync_writes && write_ahead_log;
        if db.get(WAL_CYCLE)?.is_some() && !Wal::path(dir).exists() {
            // The log held writes sled may not have: without it they would be forgotten.
            let reason = "missing, where the store's state says a write-ahead log was in use";
            let corruption = crate::files::Corruption::new(Wal::path(dir), 0, reason);
            return Err(PersistentStorageError::CorruptLog(corruption));
        }
        let mut wal = None;
        if want_log || Wal::path(dir).exists() {
            let (log, records) =
                Wal::open(dir, config.get_write_ahead_log_bytes()).map_err(|e| match e {
                    WalOpenError::Io(e) => io("opening the log")(e),
                    WalOpenError::Corrupt(c) => PersistentStorageError::CorruptLog(c),
                })?;
            // Cycles below the one sled names were all in sled's durable state already.
            let floor = match db.get(WAL_CYCLE)? {
                Some(bytes) => decode_usize(&bytes, "log cycle")? as u64,
                None => 0,
            };
            let replay = log.cycle() >= floor && !records.is_empty();
            if replay {
                for record in records {
                    apply(db, snapshots, decode_changes(&record)?)?;
                }
            }
            let next = floor.max(log.cycle()) + 1;
            if want_log || replay {
                // Everything replayed becomes part of sled's durable state; the log starts over.
                db.insert(WAL_CYCLE, &encode_usize(next as usize))?;
                db.flush()?;
                match &mut disk_sync {
                    Some(sync) => sync.sync(),
                    None => DiskSync::open(dir).and_then(|mut sync| sync.sync()),
                }
                .map_err(io("fdatasync after replaying the log"))?;
            }
            if want_log {
                let mut log = log;
                log.start_cycle(next)
                    .map_err(io("starting the log's cycle"))?;
                wal = Some(log);
            }
        }
        Ok(Self {
            disk_sync,
            wal,
            durable_writes: 0,
            sync_decided_idx: config.get_sync_decided_idx(),
            observer,
        })
    }

    /// Before a write's `changes` are applied to sled: logs them (one write, one
    /// `fdatasync`), unless writes are not synced or the record is too large for the log;
    /// returns what is left to do once they are applied ([`Durability::settle`]).
    ///
    /// A write that need not `wait` is logged but not synced: it reaches the device with the
    /// next write that waits, as records are only added at the log's end (and a checkpoint
    /// flushes sled, which holds every logged write). Without the log every write waits: an
    /// unflushed sled write would not survive a crash of the process.
    pub(super) fn log_ahead(
        &mut self,
        db: &sled::Db,
        changes: &[Change],
        wait: bool,
    ) -> Result<(Pending, Option<Instant>), PersistentStorageError> {
        if self.disk_sync.is_none() {
            return Ok((Pending::Nothing, None));
        }
        let start = Instant::now();
        let Some(wal) = &self.wal else {
            return Ok((Pending::Flush, Some(start)));
        };
        let record = encode_changes(changes)?;
        if !wal.can_ever_fit(record.len()) {
            return Ok((Pending::Flush, Some(start)));
        }
        if !wal.fits(record.len()) {
            self.checkpoint(db)?;
        }
        if let Some(wal) = &mut self.wal {
            wal.append(&record, wait).map_err(io("writing the log"))?;
        }
        if wait {
            self.durable_writes += 1;
            self.observe(start);
        }
        Ok((Pending::Logged, None))
    }

    /// After the write was applied to sled: finishes what [`Durability::log_ahead`] left.
    pub(super) fn settle(
        &mut self,
        db: &sled::Db,
        pending: (Pending, Option<Instant>),
    ) -> Result<(), PersistentStorageError> {
        let (Pending::Flush, start) = pending else {
            return Ok(());
        };
        self.checkpoint(db)?;
        self.durable_writes += 1;
        if let Some(start) = start {
            self.observe(start);
        }
        Ok(())
    }

    /// Makes everything applied to sled durable (sled's flush, then `fdatasync`); with the
    /// log, the log then starts a new cycle.
    pub(super) fn checkpoint(&mut self, db: &sled::Db) -> Result<(), PersistentStorageError> {
        let Some(disk_sync) = &mut self.disk_sync else {
            return Ok(());
        };
        let next = self.wal.as_ref().map(|wal| wal.cycle() + 1);
        if let Some(next) = next {
            db.insert(WAL_CYCLE, &encode_usize(next as usize))?;
        }
        db.flush()?;
        disk_sync.sync().map_err(io("fdatasync after a write"))?;
        if let (Some(wal), Some(next)) = (&mut self.wal, next) {
            wal.start_cycle(next)
                .map_err(io("starting the log's cycle"))?;
        }
        Ok(())
    }

    fn observe(&self, start: Instant) {
        if let Some(observer) = &self.observer {
            (observer.0)(start.elapsed());
        }
    }
}
