//! [`PersistentStorageConfig`]: where the store lives, the sled settings, and durability.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where and how a [`super::PersistentStorage`] keeps its data.
#[derive(Clone, Debug)]
pub struct PersistentStorageConfig {
    path: String,
    sled_config: sled::Config,
    sync_writes: bool,
    write_ahead_log: bool,
    write_ahead_log_bytes: u64,
    sync_decided_idx: bool,
    sync_observer: Option<SyncObserver>,
}

/// Told how long each sync took (see [`PersistentStorageConfig::set_sync_observer`]).
#[derive(Clone)]
pub(crate) struct SyncObserver(pub(crate) Arc<dyn Fn(Duration) + Send + Sync>);

impl fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncObserver")
    }
}

impl Default for PersistentStorageConfig {
    /// The directory `omnipaxos-storage` under the working directory, default sled settings,
    /// and durable writes.
    fn default() -> Self {
        Self::with_path("omnipaxos-storage".to_string())
    }
}

impl PersistentStorageConfig {
    /// A configuration for a store at `path`, with default sled settings and durable writes.
    pub fn with_path(path: String) -> Self {
        Self {
            path,
            sled_config: sled::Config::new(),
            sync_writes: true,
            write_ahead_log: true,
            write_ahead_log_bytes: super::wal::WAL_CAPACITY,
            sync_decided_idx: false,
            sync_observer: None,
        }
    }

    /// A configuration for a store at `path` with custom sled settings (cache capacity, mode,
    /// background flush interval, ...); sled's own path setting is ignored in favour of `path`.
    pub fn with(path: String, sled_config: sled::Config) -> Self {
        Self {
            path,
            sled_config,
            sync_writes: true,
            write_ahead_log: true,
            write_ahead_log_bytes: super::wal::WAL_CAPACITY,
            sync_decided_idx: false,
            sync_observer: None,
        }
    }

    /// The directory of the store.
    pub fn get_path(&self) -> &String {
        &self.path
    }

    /// Sets the directory of the store.
    pub fn set_path(&mut self, path: String) {
        self.path = path;
    }

    /// The sled settings.
    pub fn get_database_options(&self) -> sled::Config {
        self.sled_config.clone()
    }

    /// Replaces the sled settings (their path is replaced by the store's path at open).
    pub fn set_database_options(&mut self, sled_config: sled::Config) {
        self.sled_config = sled_config;
    }

    /// Whether every write is flushed to disk before it returns (default `true`).
    pub fn get_sync_writes(&self) -> bool {
        self.sync_writes
    }

    /// With `true` (the default) a write returns only once it is on disk, so an acknowledged
    /// write survives a crash or power cut. With `false` sled flushes in the background (every
    /// 500 ms by default): a crash of the process loses nothing, a power cut may lose the last
    /// writes.
    pub fn set_sync_writes(&mut self, sync_writes: bool) {
        self.sync_writes = sync_writes;
    }

    /// Whether synced writes go through the write-ahead log (default `true`).
    pub fn get_write_ahead_log(&self) -> bool {
        self.write_ahead_log
    }

    /// With `true` (the default) and `sync_writes` on, a write is made durable by appending it
    /// to a preallocated log file and one `fdatasync` of it, then applied to sled, which writes
    /// it out in the background; a checkpoint (sled's flush and an `fdatasync`) empties the log
    /// every 16 MiB, and opening the store replays it. With `false`, every write is flushed by
    /// sled and then synced: two waits for the device instead of one. Either way an
    /// acknowledged write survives a crash or a power cut; a store opened with either setting
    /// replays a log left by the other.
    pub fn set_write_ahead_log(&mut self, write_ahead_log: bool) {
        self.write_ahead_log = write_ahead_log;
    }

    /// The write-ahead log's size in bytes (default 16 MiB): a checkpoint is taken when the next
    /// write does not fit, and a write larger than the log (a large snapshot) is flushed by sled
    /// instead. Smaller means more frequent checkpoints and a shorter replay at open.
    pub fn set_write_ahead_log_bytes(&mut self, bytes: u64) {
        self.write_ahead_log_bytes = bytes;
    }

    /// The write-ahead log's size in bytes.
    pub fn get_write_ahead_log_bytes(&self) -> u64 {
        self.write_ahead_log_bytes
    }

    /// Whether a write of the decided index alone waits for the device (default `false`).
    pub fn get_sync_decided_idx(&self) -> bool {
        self.sync_decided_idx
    }

    /// With `false` (the default), `sync_writes` and the write-ahead log on, a write that only
    /// moves the decided index is written to the log but not synced: it reaches the device with the
    /// next write that is, at most one write later, since every write is kept in order. A
    /// crash of the process loses nothing; a power cut can set the decided index back to its
    /// last synced value. That loses no decision: the entries below it were accepted durably
    /// by a quorum before they were decided, and the server learns the index again from the
    /// leader (a leader, from the quorum it prepares). Every other write (entries, promise,
    /// accepted round, trim, snapshot, stopsign) waits. This takes one wait for the device off
    /// the leader's path from a quorum's acceptance to the answer.
    ///
    /// With `true`, that write waits like every other: the decided index never goes back,
    /// even after a power cut.
    pub fn set_sync_decided_idx(&mut self, sync_decided_idx: bool) {
        self.sync_decided_idx = sync_decided_idx;
    }

    /// Calls `observer` after every durable write (with `sync_writes` on) with how long making
    /// it durable took: the write-ahead log's write and `fdatasync` (with a checkpoint when one
    /// was due), or without the log sled's flush and an `fdatasync`. For latency metrics (the
    /// runtime's `DirectoryStorage` feeds a histogram).
    pub fn set_sync_observer(&mut self, observer: impl Fn(Duration) + Send + Sync + 'static) {
        self.sync_observer = Some(SyncObserver(Arc::new(observer)));
    }

    pub(super) fn sync_observer(&self) -> Option<SyncObserver> {
        self.sync_observer.clone()
    }

    /// A fresh sled configuration with the store's path and the user's settings. (sled's own
    /// `path` setter panics on a shared configuration, and clones share it, so the settings are
    /// copied onto a new one instead.)
    pub(super) fn sled_config(&self) -> sled::Config {
        let user = &self.sled_config;
        sled::Config::new()
            .path(&self.path)
            .cache_capacity(user.cache_capacity)
            .mode(user.mode)
            .use_compression(user.use_compression)
            .compression_factor(user.compression_factor)
            .temporary(user.temporary)
            .create_new(user.create_new)
            .flush_every_ms(user.flush_every_ms)
    }
}
