//! The replicated state machine: the key-value map, and the sessions that make a retried write
//! take effect once. Every node applies the same decided log in the same order, so every node
//! makes the same choices.
//!
//! A session is one start of one node ([`RequestId::life`]). Within it, a request number is
//! applied at most once: the numbers applied are remembered until the session says (with
//! `done_below`) that every request below some number was answered or given up, after which
//! copies of those are ignored. A node's new session closes its old one: copies from a
//! previous start of a node, decided late, are ignored (their clients never got an answer).

use crate::entry::{KvCommand, RequestId, Write, WriteOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Sessions of a closed life kept per node, to recognise late copies; older ones are forgotten.
const CLOSED_LIVES_KEPT: usize = 1024;

/// What applying a write produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// Whether the key existed.
    Deleted(bool),
}

/// One node's sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSessions {
    /// The newest session's life.
    pub life: u64,
    /// Request numbers below this are done.
    pub done_below: u64,
    /// Numbers at or above `done_below` already applied.
    pub applied: BTreeSet<u64>,
    /// Lives that ended, with the log order in which they ended (oldest forgotten first).
    pub closed: BTreeMap<u64, u64>,
}

/// The map and the sessions, as applied from the decided log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMachine {
    pub map: HashMap<String, String>,
    pub sessions: BTreeMap<u64, NodeSessions>,
    /// Sessions closed so far (orders `NodeSessions::closed`).
    pub lives_closed: u64,
    /// Whether to record removed keys (in snapshots, see `removed`).
    pub track_removals: bool,
    /// In a snapshot of one configuration's log (built from an empty state): the keys it
    /// removed, so that it can be laid over the state the configuration started from.
    pub removed: BTreeSet<String>,
}

impl KvMachine {
    /// An empty state that records removed keys (for snapshots).
    pub fn tracking_removals() -> Self {
        KvMachine {
            track_removals: true,
            ..Default::default()
        }
    }

    /// Whether nothing was applied to this state.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.sessions.is_empty() && self.removed.is_empty()
    }

    /// The same state, no longer recording removed keys (a live state machine's).
    pub fn untracked(mut self) -> Self {
        self.track_removals = false;
        self.removed.clear();
        self
    }

    /// Applies one decided command; `None` if it is a copy of a write already applied or given
    /// up, which changes nothing.
    pub fn apply(&mut self, cmd: KvCommand) -> Option<Outcome> {
        let KvCommand::Write(Write { id, done_below, op }) = cmd;
        if !self.admit(id, done_below) {
            return None;
        }
        Some(match op {
            WriteOp::Put { key, value } => {
                self.removed.remove(&key);
                self.map.insert(key, value);
                Outcome::Written
            }
            WriteOp::Delete { key } => {
                let existed = self.map.remove(&key).is_some();
                if self.track_removals {
                    self.removed.insert(key);
                }
                Outcome::Deleted(existed)
            }
        })
    }

    /// This state with `later` (built from one configuration's log) laid over it: the state
    /// after both.
    pub fn then(mut self, later: KvMachine) -> KvMachine {
        for key in &later.removed {
            self.map.remove(key);
        }
        self.map.extend(later.map);
        self.sessions.extend(later.sessions);
        self.lives_closed += later.lives_closed;
        self.untracked()
    }

    /// Whether the request takes effect now (and records that it did).
    fn admit(&mut self, id: RequestId, done_below: u64) -> bool {
        let closed_order = self.lives_closed;
        let node = self
            .sessions
            .entry(id.node)
            .or_insert_with(|| NodeSessions {
                life: id.life,
                ..Default::default()
            });
        if id.life != node.life {
            if node.closed.contains_key(&id.life) {
                return false;
            }
            // A new start of this node: its previous session is over.
            node.closed.insert(node.life, closed_order);
            self.lives_closed += 1;
            if node.closed.len() > CLOSED_LIVES_KEPT {
                if let Some(oldest) = node.closed.iter().min_by_key(|(_, o)| **o).map(|(l, _)| *l) {
                    node.closed.remove(&oldest);
                }
            }
            node.life = id.life;
            node.done_below = 0;
            node.applied.clear();
        }
        if id.seq < node.done_below || !node.applied.insert(id.seq) {
            return false;
        }
        if done_below > node.done_below {
            node.done_below = done_below;
            node.applied = node.applied.split_off(&done_below);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(life: u64, seq: u64, done_below: u64, value: &str) -> KvCommand {
        KvCommand::Write(Write {
            id: RequestId { node: 1, life, seq },
            done_below,
            op: WriteOp::Put {
                key: "k".into(),
                value: value.into(),
            },
        })
    }

    #[test]
    fn a_retried_write_takes_effect_once() {
        let mut m = KvMachine::default();
        assert_eq!(m.apply(put(7, 1, 1, "a")), Some(Outcome::Written));
        assert_eq!(m.apply(put(7, 2, 1, "b")), Some(Outcome::Written));
        // The retry of request 1, decided after request 2: ignored, "b" stays.
        assert_eq!(m.apply(put(7, 1, 1, "a")), None);
        assert_eq!(m.map["k"], "b");
    }

    #[test]
    fn copies_below_done_below_are_ignored_and_the_memory_is_bounded() {
        let mut m = KvMachine::default();
        for seq in 1..=1000 {
            assert!(m.apply(put(7, seq, seq, "v")).is_some());
        }
        assert!(
            m.sessions[&1].applied.len() <= 1,
            "only numbers not yet done are kept"
        );
        // A late copy of request 5 (given up by its node) arrives: ignored.
        assert_eq!(m.apply(put(7, 5, 5, "late")), None);
        assert_eq!(m.map["k"], "v");
    }

    #[test]
    fn a_late_copy_from_an_earlier_start_of_the_node_is_ignored() {
        let mut m = KvMachine::default();
        assert!(m.apply(put(7, 1, 1, "old life")).is_some());
        assert!(m.apply(put(9, 1, 1, "new life")).is_some());
        assert_eq!(m.apply(put(7, 2, 1, "late")), None);
        assert_eq!(m.map["k"], "new life");
    }
}
