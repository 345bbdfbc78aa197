//! [`ProposeErr`]: the one error that hands data back (the refused proposal), so it sits above
//! the configuration and storage types it carries.

use super::{ConfigError, StorageError};
use crate::config::ClusterConfig;
use crate::storage::Entry;
use std::fmt;

/// Why a proposal (`append` or `reconfigure`) was refused. The proposed value is handed back.
pub enum ProposeErr<T: Entry> {
    /// A StopSign is already accepted here: the log is sealed and takes no more entries.
    PendingReconfigEntry(T),
    /// A StopSign is already accepted or pending here: only one reconfiguration at a time.
    PendingReconfigConfig(ClusterConfig, Option<Vec<u8>>),
    /// The proposed configuration is invalid.
    ConfigError(ConfigError, ClusterConfig, Option<Vec<u8>>),
    /// The instance stopped after a storage failure; rebuild it from its storage.
    StorageFailed(StorageError),
}

impl<T: Entry> fmt::Debug for ProposeErr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PendingReconfigEntry(e) => {
                f.debug_tuple("PendingReconfigEntry").field(e).finish()
            }
            Self::PendingReconfigConfig(c, m) => f
                .debug_tuple("PendingReconfigConfig")
                .field(c)
                .field(m)
                .finish(),
            Self::ConfigError(e, c, m) => f
                .debug_tuple("ConfigError")
                .field(e)
                .field(c)
                .field(m)
                .finish(),
            Self::StorageFailed(e) => f.debug_tuple("StorageFailed").field(e).finish(),
        }
    }
}

impl<T: Entry> fmt::Display for ProposeErr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PendingReconfigEntry(_) => {
                write!(
                    f,
                    "the log is sealed by a StopSign; propose in the next configuration"
                )
            }
            Self::PendingReconfigConfig(..) => write!(f, "a reconfiguration is already pending"),
            Self::ConfigError(e, ..) => write!(f, "{e}"),
            Self::StorageFailed(e) => write!(f, "{e}"),
        }
    }
}

impl<T: Entry> std::error::Error for ProposeErr<T> {}
