//! Identifiers: the leaf of the crate, used by every other module.

/// Identifies a server. Must be non-zero: `0` means "no server".
pub type NodeId = u64;
/// Identifies a cluster configuration; grows with every reconfiguration.
pub type ConfigurationId = u32;
/// Length of the compacted (trimmed or snapshotted) prefix of the log.
pub type TrimmedIndex = usize;
