//! A durable [`StorageFactory`]: one store per configuration under a data directory
//! (`config-<id>/`; a `PersistentStorage`, or a `JournalStorage` for servers that keep their log
//! short), and the handover a joining node received in `handover.bin`, so that a node restarts
//! alone, replaying its configurations in order.

use crate::actor::StorageFactory;
use crate::wire::RuntimeEntry;
use omnipaxos::reconfiguration::Handover;
use omnipaxos_storage::files::{sealed, OsFiles};
use omnipaxos_storage::journal_storage::{JournalStorage, JournalStorageConfig};
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::path::{Path, PathBuf};

/// Opens `data_dir/config-<id>` for each configuration; keeps the handover in
/// `data_dir/handover.bin` (sealed: checksummed, written to a temporary file, synced, renamed,
/// and the directory synced).
pub struct DirectoryStorage {
    data_dir: PathBuf,
    /// `JournalStorageConfig::compact_at_bytes` of the journal stores this opens.
    journal_rewrite_bytes: Option<u64>,
    /// How long each sync of a write took, in every store this opened.
    fsync_seconds: Histogram,
    /// The file system journal stores run on (default: the operating system's).
    files: Option<std::sync::Arc<dyn omnipaxos_storage::files::FileSystem>>,
}

impl DirectoryStorage {
    /// Storage under `data_dir` (created when needed).
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Self {
            data_dir: data_dir.as_ref().to_path_buf(),
            journal_rewrite_bytes: None,
            fsync_seconds: crate::prometheus::latency_histogram(),
            files: None,
        }
    }

    /// Journal stores (`JournalStorage`) opened from now on run on `files` (e.g. a
    /// `FaultyFiles`, to test what a node does when its disk fails).
    pub fn set_file_system(
        &mut self,
        files: std::sync::Arc<dyn omnipaxos_storage::files::FileSystem>,
    ) {
        self.files = Some(files);
    }

    /// Adds `omnipaxos_storage_fsync_seconds` to `registry`: how long making one write durable
    /// took (the write-ahead log's write and `fdatasync`, or sled's flush and an `fdatasync`),
    /// in every store this opens.
    pub fn register_prometheus(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "omnipaxos_storage_fsync",
            "Making one storage write durable: the write-ahead log's write and fdatasync (or sled's flush and fdatasync)",
            Unit::Seconds,
            self.fsync_seconds.clone(),
        );
    }

    /// Journal stores (`JournalStorage`) opened from now on rewrite their journal from this
    /// many bytes on (default: `JournalStorageConfig`'s).
    pub fn set_journal_rewrite_bytes(&mut self, bytes: u64) {
        self.journal_rewrite_bytes = Some(bytes);
    }

    /// The directory of configuration `config_id`.
    pub fn config_dir(&self, config_id: u32) -> PathBuf {
        self.data_dir.join(format!("config-{config_id}"))
    }

    fn handover_path(&self) -> PathBuf {
        self.data_dir.join("handover.bin")
    }
}

impl<T: RuntimeEntry> StorageFactory<T, PersistentStorage<T>> for DirectoryStorage {
    fn open(&mut self, config_id: u32) -> Result<PersistentStorage<T>, String> {
        let dir = self.config_dir(config_id);
        let mut config = PersistentStorageConfig::with_path(dir.to_string_lossy().into_owned());
        let fsync_seconds = self.fsync_seconds.clone();
        config.set_sync_observer(move |took| crate::prometheus::observe(&fsync_seconds, took));
        PersistentStorage::try_open(config).map_err(|e| format!("{}: {e}", dir.display()))
    }

    fn save_handover(&mut self, config_id: u32, handover: &Handover<T>) -> Result<(), String> {
        self.write_handover(config_id, handover)
    }

    fn load_handover(&mut self) -> Result<Option<(u32, Handover<T>)>, String> {
        self.read_handover()
    }
}

impl<T: RuntimeEntry> StorageFactory<T, JournalStorage<T>> for DirectoryStorage {
    fn open(&mut self, config_id: u32) -> Result<JournalStorage<T>, String> {
        let dir = self.config_dir(config_id);
        let mut config = JournalStorageConfig::with_path(&dir);
        if let Some(bytes) = self.journal_rewrite_bytes {
            config.compact_at_bytes = bytes;
        }
        if let Some(files) = &self.files {
            config.set_file_system(files.clone());
        }
        let fsync_seconds = self.fsync_seconds.clone();
        config.set_sync_observer(move |took| crate::prometheus::observe(&fsync_seconds, took));
        JournalStorage::open(config).map_err(|e| format!("{}: {e}", dir.display()))
    }

    fn save_handover(&mut self, config_id: u32, handover: &Handover<T>) -> Result<(), String> {
        self.write_handover(config_id, handover)
    }

    fn load_handover(&mut self) -> Result<Option<(u32, Handover<T>)>, String> {
        self.read_handover()
    }
}

impl DirectoryStorage {
    fn write_handover<T: RuntimeEntry>(
        &mut self,
        config_id: u32,
        handover: &Handover<T>,
    ) -> Result<(), String> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| e.to_string())?;
        let bytes =
            bincode::serde::encode_to_vec((config_id, handover), bincode::config::standard())
                .map_err(|e| e.to_string())?;
        sealed::write(&OsFiles, &self.handover_path(), &bytes).map_err(|e| e.to_string())
    }

    fn read_handover<T: RuntimeEntry>(&mut self) -> Result<Option<(u32, Handover<T>)>, String> {
        let path = self.handover_path();
        let Some(bytes) = sealed::read(&OsFiles, &path).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map(|(saved, _)| Some(saved))
            .map_err(|e| {
                format!(
                    "{}: a sealed handover that does not decode: {e}",
                    path.display()
                )
            })
    }
}
