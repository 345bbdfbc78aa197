//! The error every store gives for bytes that fail their check.

use std::path::PathBuf;

/// Stored bytes that fail their checksum (or are missing where the directory says they must
/// be) and are not the torn tail of the last write: the store refuses to open rather than
/// forget what it held.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: corrupt at byte {offset}: {reason}", path.display())]
pub struct Corruption {
    /// The file.
    pub path: PathBuf,
    /// Where in it the damage starts.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl Corruption {
    /// Damage in `path` at `offset`.
    pub fn new(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// A file that could not be read or written, or was read and is corrupt.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system's error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The bytes fail their check.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
}

impl FileError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
