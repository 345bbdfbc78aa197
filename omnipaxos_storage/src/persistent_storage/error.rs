//! The errors of [`super::PersistentStorage`].

/// A failure of the persistent store.
#[derive(Debug, thiserror::Error)]
pub enum PersistentStorageError {
    /// sled failed (I/O, corruption it detected).
    #[error("sled: {0}")]
    Db(#[from] sled::Error),
    /// A value could not be encoded.
    #[error("encoding {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// bincode's message.
        message: String,
    },
    /// A stored value could not be decoded.
    #[error("decoding {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// bincode's message.
        message: String,
    },
    /// The stored log is not consistent (a missing chunk, a bad chunk header).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Another live instance, in this process or another one, holds the store at this path.
    #[error("the store at {0} is in use by another instance")]
    Locked(String),
    /// A file operation of the store's own failed (the durability sync, the lock check).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The write-ahead log is damaged (not the torn tail of the last write): the store refuses
    /// to open rather than forget writes it acknowledged.
    #[error("corrupt write-ahead log: {0}")]
    CorruptLog(crate::files::Corruption),
    /// `new` was asked to create a store where one already exists.
    #[error("a store already exists at {0}")]
    AlreadyExists(String),
}
