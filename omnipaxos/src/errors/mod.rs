//! Errors returned by the public API. Input from the network never produces an error: a message
//! that does not fit is dropped. Storage failures stop the instance and surface here.

use crate::ids::NodeId;

pub(crate) mod propose;
pub use propose::ProposeErr;

/// A configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[cfg(feature = "toml_config")]
    #[error("could not read config file: {0}")]
    ReadFile(#[from] std::io::Error),
    /// The TOML file could not be parsed.
    #[cfg(feature = "toml_config")]
    #[error("could not parse config file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent; the text says which.
    #[error("Invalid config: {0}")]
    InvalidConfig(String),
    /// The storage handed to `build` could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A storage call failed. The instance has stopped taking part in the protocol (fail-stop); what
/// it had stored before the failure is intact, so it can be rebuilt from the same storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failed during {operation}: {message}")]
pub struct StorageError {
    /// What the core was doing, e.g. `append_entries`.
    pub operation: &'static str,
    /// The storage's own error text.
    pub message: String,
}

impl StorageError {
    pub(crate) fn new(
        operation: &'static str,
        err: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Self {
            operation,
            message: err.to_string(),
        }
    }
}

/// Why a `trim` or `snapshot` was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactionErr {
    /// The index is not decided yet; the value is the current decided index.
    #[error("UndecidedIndex({0})")]
    UndecidedIndex(usize),
    /// The index is already compacted; the value is the current compacted index.
    #[error("TrimmedIndex({0})")]
    TrimmedIndex(usize),
    /// Not every server has accepted up to the index; the value is the highest index that all
    /// servers have accepted, as known by the leader.
    #[error("NotAllDecided({0})")]
    NotAllDecided(usize),
    /// Only the leader may trim; the value is the pid of the leader this server follows (0 if none).
    #[error("NotCurrentLeader({0})")]
    NotCurrentLeader(NodeId),
    /// The entry type uses `NoSnapshot`, so `snapshot` is not available.
    #[error("SnapshotsDisabled: the entry type does not use snapshots")]
    SnapshotsDisabled,
    /// The instance stopped after a storage failure; see `OmniPaxos::get_storage_error`.
    #[error("StorageFailed: the instance stopped after a storage error")]
    StorageFailed,
}

/// Why a linearizable read (`OmniPaxos::read_index`) cannot be served, now or any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadErr {
    /// No leader is known here (an election is going on): try again shortly.
    #[error("no leader is known")]
    NoLeader,
    /// The leader changed, or this server stopped leading, before the read was confirmed: the
    /// read may be retried.
    #[error("the leader changed before the read was confirmed")]
    LeaderChanged,
    /// The read was not confirmed within its deadline (see `OmniPaxos::read_index`).
    #[error("the read was not confirmed in time")]
    Timeout,
    /// This configuration ended with a StopSign: read from the next one.
    #[error("the configuration is sealed by a StopSign")]
    Reconfigured,
    /// The instance stopped after a storage failure.
    #[error(transparent)]
    StorageFailed(#[from] StorageError),
}
