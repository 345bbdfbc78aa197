//! [`FaultyFiles`]: a file system that starts failing on purpose, to test what a store and its
//! users do when the disk fails (the node stops taking part, says why, and restarts whole).

use super::{FileSystem, StoredFile};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Another file system whose writes (and syncs, and resizes) fail with `EIO` once a given
/// number of writes went through, or whose next writes fail with an error that passes.
#[derive(Debug)]
pub struct FaultyFiles {
    inner: Arc<dyn FileSystem>,
    faults: Arc<Faults>,
}

#[derive(Debug)]
struct Faults {
    /// Writes left before every write fails with `EIO`.
    writes_left: AtomicU64,
    /// Writes that fail with `transient_errno` first.
    transient_left: AtomicU64,
    transient_errno: i32,
}

impl FaultyFiles {
    /// `inner`, failing for good once `writes` writes went through.
    pub fn failing_after(inner: Arc<dyn FileSystem>, writes: u64) -> Self {
        Self::with(inner, writes, 0, 0)
    }

    /// `inner`, whose next `times` writes fail with OS error `errno` (e.g. 24, `EMFILE`: no
    /// file descriptor left), and work after that.
    pub fn failing_transiently(inner: Arc<dyn FileSystem>, errno: i32, times: u64) -> Self {
        Self::with(inner, u64::MAX, times, errno)
    }

    fn with(inner: Arc<dyn FileSystem>, writes: u64, times: u64, errno: i32) -> Self {
        let faults = Faults {
            writes_left: AtomicU64::new(writes),
            transient_left: AtomicU64::new(times),
            transient_errno: errno,
        };
        Self {
            inner,
            faults: Arc::new(faults),
        }
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

struct FaultyFile {
    inner: Arc<dyn StoredFile>,
    faults: Arc<Faults>,
}

impl FaultyFile {
    fn check(&self) -> io::Result<()> {
        if self.faults.writes_left.load(Ordering::SeqCst) == 0 {
            return Err(eio());
        }
        let transient =
            self.faults
                .transient_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if transient.is_ok() {
            return Err(io::Error::from_raw_os_error(self.faults.transient_errno));
        }
        Ok(())
    }
}

impl StoredFile for FaultyFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let _ = self
            .faults
            .writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.inner.write_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.faults.writes_left.load(Ordering::SeqCst) == 0 {
            return Err(eio());
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.faults.writes_left.load(Ordering::SeqCst) == 0 {
            return Err(eio());
        }
        self.inner.sync_data()
    }
}

impl FileSystem for FaultyFiles {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoredFile>> {
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Send + Sync>> {
        self.inner.lock_dir(dir)
    }
}
