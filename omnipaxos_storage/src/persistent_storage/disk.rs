//! What sled 0.34 leaves to its user, done here: making a flushed write survive a power cut, and
//! letting go of the store's file lock before `drop` returns.
//!
//! sled's `flush` ends with `sync_file_range`, which neither flushes the device's volatile write
//! cache nor the metadata (file size) that the data needs, and it writes values too large for its
//! log (above a quarter of a segment) to files under `blobs/` without syncing them at all.
//! [`DiskSync::sync`] adds the missing `fdatasync` of the database file, syncs every blob file
//! written since the last sync, and the directory that names them.
//!
//! sled holds an exclusive `flock` on its `db` file, and closes the file only when the last of its
//! background tasks lets go of the database, which can be after `Db::drop` returned. A store
//! reopened at once in the same process would then find the lock taken. [`LockRelease`] waits, at
//! drop, until the lock can be taken again.

use fs2::FileExt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file sled keeps its log and pages in, and locks.
fn db_file_path(dir: &Path) -> PathBuf {
    dir.join("db")
}

fn blobs_dir(dir: &Path) -> PathBuf {
    dir.join("blobs")
}

/// Whether another live instance (in this process or another one) holds the store at `dir`.
/// `Ok(false)` if no store exists there yet.
pub(super) fn is_locked(dir: &Path) -> io::Result<bool> {
    let file = match File::open(db_file_path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_exclusive() {
        Ok(()) => {
            FileExt::unlock(&file)?;
            Ok(false)
        }
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => Ok(true),
        Err(e) => Err(e),
    }
}

/// Makes what sled flushed durable against power loss: one `fdatasync` of the database file per
/// call, plus the blob files written since the previous call.
pub(super) struct DiskSync {
    dir: PathBuf,
    db_file: File,
    /// Blob files are named by the log sequence number that wrote them; all up to this one are
    /// synced.
    blobs_synced_up_to: Option<u64>,
}

impl DiskSync {
    /// Opens the database file sled created in `dir` and syncs the directories once, so that
    /// sled's own files are named durably.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let db_file = OpenOptions::new().write(true).open(db_file_path(dir))?;
        let mut this = Self {
            dir: dir.to_path_buf(),
            db_file,
            blobs_synced_up_to: None,
        };
        this.sync_blobs()?;
        sync_dir(dir)?;
        Ok(this)
    }

    /// Called after sled's `flush`: its writes are now in the page cache, this puts them on the
    /// device.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.db_file.sync_data()?;
        self.sync_blobs()?;
        Ok(())
    }

    fn sync_blobs(&mut self) -> io::Result<()> {
        let dir = blobs_dir(&self.dir);
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = self.blobs_synced_up_to;
        for item in listing {
            let item = item?;
            let Some(lsn) = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if self.blobs_synced_up_to.is_some_and(|done| lsn <= done) {
                continue;
            }
            match File::open(item.path()) {
                Ok(blob) => blob.sync_all()?,
                // sled collected it since the listing: nothing left to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            newest = newest.max(Some(lsn));
        }
        if newest != self.blobs_synced_up_to {
            sync_dir(&dir)?;
            self.blobs_synced_up_to = newest;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Dropped after sled's `Db` (it is declared after it): returns once sled's file lock is free,
/// so the store can be opened again at once. Gives up after [`LockRelease::PATIENCE`] (the lock
/// may have been taken by another process meanwhile).
pub(super) struct LockRelease {
    db_file: PathBuf,
}

impl LockRelease {
    /// sled's background tasks finish within microseconds of the last flush; this only bounds
    /// the wait if the lock passed to someone else.
    const PATIENCE: Duration = Duration::from_secs(10);

    pub(super) fn new(dir: &Path) -> Self {
        Self {
            db_file: db_file_path(dir),
        }
    }
}

impl Drop for LockRelease {
    fn drop(&mut self) {
        let Ok(file) = File::open(&self.db_file) else {
            return; // a temporary store that sled removed, or nothing to wait for
        };
        let deadline = Instant::now() + Self::PATIENCE;
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => {
                    let _ = FileExt::unlock(&file);
                    return;
                }
                Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
                    if Instant::now() >= deadline {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => return,
            }
        }
    }
}
