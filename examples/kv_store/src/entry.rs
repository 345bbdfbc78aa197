//! The log's entries (`KvCommand`) and the snapshot that compacts them (`KVSnapshot`).
//!
//! Every write carries the id of the request that made it. A node retries a write whose outcome
//! it does not know (a leader change, a crash of the leader) with the same id, so the same write
//! can be decided more than once; the state machine ([`crate::machine`]) applies it once.

use crate::machine::KvMachine;
use omnipaxos::macros::Entry;
use omnipaxos::storage::Snapshot;
use serde::{Deserialize, Serialize};

/// Identifies a write across the cluster and across retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// The pid of the node that took the request.
    pub node: u64,
    /// Random per start of that node: its session.
    pub life: u64,
    /// Counts the session's requests from 1.
    pub seq: u64,
}

/// A write: the request it came from and what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub id: RequestId,
    /// Every request of the session numbered below this had its answer (or was given up) when
    /// this copy was proposed, so copies of them decided later are ignored.
    pub done_below: u64,
    pub op: WriteOp,
}

/// What a write changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put { key: String, value: String },
    /// Remove `key`.
    Delete { key: String },
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Entry, Serialize, Deserialize)]
#[snapshot(KVSnapshot)]
pub enum KvCommand {
    /// A client's write.
    Write(Write),
}

/// The state after a prefix of the log. Whether an entry takes effect depends on what came
/// before it (a retried write is applied once), so a snapshot made from entries alone keeps
/// them in `pending`, and `merge` applies them in order on top of the older state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KVSnapshot {
    /// The state the snapshot starts from.
    pub state: KvMachine,
    /// Entries to apply on top of `state`, in log order.
    pub pending: Vec<KvCommand>,
}

impl KVSnapshot {
    /// The complete state this snapshot stands for.
    pub fn into_state(self) -> KvMachine {
        let mut state = self.state;
        for cmd in self.pending {
            state.apply(cmd);
        }
        state
    }
}

impl Snapshot<KvCommand> for KVSnapshot {
    fn create(entries: &[KvCommand]) -> Self {
        KVSnapshot {
            state: KvMachine::tracking_removals(),
            pending: entries.to_vec(),
        }
    }

    fn merge(&mut self, delta: Self) {
        let mut state = std::mem::take(self).into_state();
        if !delta.state.is_empty() {
            // A delta that carries a state is a complete snapshot: it replaces ours.
            state = delta.state;
        }
        for cmd in delta.pending {
            state.apply(cmd);
        }
        self.state = state;
    }

    fn use_snapshots() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::KvMachine;

    fn write(seq: u64, op: WriteOp) -> KvCommand {
        KvCommand::Write(Write {
            id: RequestId {
                node: 1,
                life: 9,
                seq,
            },
            done_below: 1,
            op,
        })
    }

    fn put(seq: u64, key: &str, value: &str) -> KvCommand {
        write(
            seq,
            WriteOp::Put {
                key: key.into(),
                value: value.into(),
            },
        )
    }

    #[test]
    fn a_snapshot_merged_from_deltas_is_the_state_of_the_whole_log() {
        let log = vec![
            put(1, "a", "1"),
            put(2, "b", "2"),
            write(3, WriteOp::Delete { key: "a".into() }),
            // A retried copy of request 2, decided after the boundary below: ignored.
            put(2, "b", "2"),
            put(4, "b", "4"),
            put(2, "b", "2"),
        ];
        let mut whole = KvMachine::default();
        for cmd in log.clone() {
            whole.apply(cmd);
        }
        let mut snapshot = KVSnapshot::create(&log[..3]);
        snapshot.merge(KVSnapshot::create(&log[3..]));
        let merged = snapshot.into_state();
        assert_eq!(merged.map, whole.map);
        assert_eq!(merged.map.get("b").map(String::as_str), Some("4"));
        assert_eq!(merged.sessions, whole.sessions);
    }

    #[test]
    fn a_later_configurations_snapshot_lays_over_the_state_it_started_from() {
        let mut start = KvMachine::default();
        start.apply(put(1, "a", "1"));
        start.apply(put(2, "b", "2"));
        // The next configuration's log removes a key the start state has, and sets another.
        let next = [
            write(3, WriteOp::Delete { key: "a".into() }),
            put(4, "c", "3"),
        ];
        let later = KVSnapshot::create(&next).into_state();
        let state = start.then(later);
        assert_eq!(state.map.get("a"), None);
        assert_eq!(state.map.get("b").map(String::as_str), Some("2"));
        assert_eq!(state.map.get("c").map(String::as_str), Some("3"));
    }
}
