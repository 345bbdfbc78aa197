//! The replicated state machine: the log's entries (`KvCommand`), the snapshot that compacts
//! them (`KVSnapshot`), and the map they build (`KvState`).

use omnipaxos::macros::Entry;
use omnipaxos::storage::Snapshot;
use omnipaxos::util::LogEntry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Identifies a client request across the cluster: the pid of the node that took it and a
/// number of that node, counted from a random start in each life of the node so that numbers are
/// unique across restarts. Lets the node that took it find out when it is applied.
pub type RequestId = (u64, u64);

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Entry, Serialize, Deserialize)]
#[snapshot(KVSnapshot)]
pub enum KvCommand {
    /// Set `key` to `value`.
    Put {
        id: RequestId,
        key: String,
        value: String,
    },
    /// Remove `key`.
    Delete { id: RequestId, key: String },
    /// A read marker, as earlier versions appended for a linearizable read (reads now use the
    /// core's read index and write nothing); still applied if found in an old log.
    Read { id: RequestId, key: String },
}

impl KvCommand {
    pub fn id(&self) -> RequestId {
        match self {
            KvCommand::Put { id, .. }
            | KvCommand::Delete { id, .. }
            | KvCommand::Read { id, .. } => *id,
        }
    }
}

/// The map after a prefix of the log; `None` marks a deleted key so that merging a later
/// snapshot removes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KVSnapshot {
    pub map: HashMap<String, Option<String>>,
}

impl Snapshot<KvCommand> for KVSnapshot {
    fn create(entries: &[KvCommand]) -> Self {
        let mut snapshot = KVSnapshot::default();
        for e in entries {
            match e {
                KvCommand::Put { key, value, .. } => {
                    snapshot.map.insert(key.clone(), Some(value.clone()));
                }
                KvCommand::Delete { key, .. } => {
                    snapshot.map.insert(key.clone(), None);
                }
                KvCommand::Read { .. } => {}
            }
        }
        snapshot
    }

    fn merge(&mut self, delta: Self) {
        self.map.extend(delta.map);
    }

    fn use_snapshots() -> bool {
        true
    }
}

/// What applying a request's entry produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Written,
    /// Whether the key existed.
    Deleted(bool),
    /// The value at the read's position in the log.
    Read(Option<String>),
}

/// The key-value map applied from the decided log.
#[derive(Debug, Default)]
pub struct KvState {
    pub map: HashMap<String, String>,
    /// The log index up to which entries are applied.
    pub applied_idx: usize,
}

impl KvState {
    /// Applies decided log entries starting at `applied_idx`; returns each request's outcome.
    pub fn apply(&mut self, entries: Vec<LogEntry<KvCommand>>) -> Vec<(RequestId, Outcome)> {
        let mut applied = Vec::new();
        for entry in entries {
            match entry {
                LogEntry::Decided(cmd) => {
                    let id = cmd.id();
                    let outcome = match cmd {
                        KvCommand::Put { key, value, .. } => {
                            self.map.insert(key, value);
                            Outcome::Written
                        }
                        KvCommand::Delete { key, .. } => {
                            Outcome::Deleted(self.map.remove(&key).is_some())
                        }
                        KvCommand::Read { key, .. } => Outcome::Read(self.map.get(&key).cloned()),
                    };
                    applied.push((id, outcome));
                    self.applied_idx += 1;
                }
                LogEntry::Snapshotted(s) => {
                    // The compacted prefix: the snapshot is the complete state up to it.
                    self.map = s
                        .snapshot
                        .map
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k, v)))
                        .collect();
                    self.applied_idx = s.trimmed_idx;
                }
                LogEntry::StopSign(..) => self.applied_idx += 1,
                LogEntry::Trimmed(idx) => self.applied_idx = idx,
                LogEntry::Undecided(_) => break,
            }
        }
        applied
    }
}
