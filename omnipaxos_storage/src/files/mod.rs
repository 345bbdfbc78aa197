//! The file handling every store of this crate shares, and the kv_store example's state store
//! too: one framing of checksummed records ([`record`]), one way to replace a small file
//! atomically and read it back checked ([`sealed`]), the identity a data directory keeps of
//! whose it is ([`identity`]), and the file system those run on ([`FileSystem`]): the
//! operating system's ([`OsFiles`]), or a simulated one that loses what was not synced at a
//! power cut ([`sim::SimFiles`]), for tests.
//!
//! **What a power cut keeps.** Data written to a file is durable once the file is synced; a
//! name created, renamed or removed in a directory is durable once the directory is synced.
//! Anything else may be lost at a cut, and a write under way may be torn (some of its
//! 512-byte sectors written, others not). Every store here is written against exactly that
//! model, and [`sim::SimFiles`] produces every outcome it allows. [`faulty::FaultyFiles`] fails
//! on purpose, for tests of what happens when the disk does.

mod corruption;
pub mod faulty;
pub mod identity;
mod os;
pub mod record;
pub mod sealed;
pub mod sim;
mod transient;

pub use corruption::{Corruption, FileError};
pub use os::OsFiles;
pub use transient::retrying_transient;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A file opened for reading and writing at given offsets.
pub trait StoredFile: Send + Sync {
    /// Writes all of `buf` at `offset` (extending the file if needed).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`; an error if the file ends before.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes what was written durable (`fdatasync`): data, and the length it needs.
    fn sync_data(&self) -> io::Result<()>;
    /// The whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
        let mut bytes = vec![0; len];
        self.read_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

/// The directories and files a store uses. Paths are the caller's; the simulated file system
/// keeps them as given.
pub trait FileSystem: Debug + Send + Sync {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing; with `create`, creates it if missing (a new name
    /// in its directory is durable only once the directory is synced).
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoredFile>>;
    /// Whether `path` names a file.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Takes the directory for this process until the returned guard is dropped; an error of
    /// kind `WouldBlock` if another holder has it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Send + Sync>>;

    /// The whole file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.open(path, false)?.read_all()
    }
}

/// The file system of the operating system, shared.
pub fn os() -> Arc<dyn FileSystem> {
    Arc::new(OsFiles)
}
