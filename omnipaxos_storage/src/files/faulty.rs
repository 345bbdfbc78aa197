//! [`FaultyFiles`]: a file system that starts failing on purpose, to test what a store and its
//! users do when the disk fails (the node stops taking part, says why, and restarts whole).

use super::{FileSystem, StoredFile};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Another file system whose writes (and syncs, and resizes) fail with `EIO` once a given
/// number of writes went through.
#[derive(Debug)]
pub struct FaultyFiles {
    inner: Arc<dyn FileSystem>,
    /// Writes left before every write fails.
    writes_left: Arc<AtomicU64>,
}

impl FaultyFiles {
    /// `inner`, failing once `writes` writes went through.
    pub fn failing_after(inner: Arc<dyn FileSystem>, writes: u64) -> Self {
        Self {
            inner,
            writes_left: Arc::new(AtomicU64::new(writes)),
        }
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

struct FaultyFile {
    inner: Arc<dyn StoredFile>,
    writes_left: Arc<AtomicU64>,
}

impl FaultyFile {
    fn check(&self) -> io::Result<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(eio());
        }
        Ok(())
    }
}

impl StoredFile for FaultyFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let _ = self
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
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
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
            writes_left: self.writes_left.clone(),
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
