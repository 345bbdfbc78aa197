//! The replicated state machine: the key-value map, and the sessions that make a retried write
//! take effect once. Every node applies the same decided log in the same order, so every node
//! makes the same choices.
//!
//! A session is one start of one node ([`RequestId::life`]). Within it, a request number is
//! applied at most once: the numbers applied are remembered until the session says (with
//! `done_below`) that every request below some number was answered or given up, after which
//! copies of those are ignored. A node's new session closes its old one: copies from a
//! previous start of a node, decided late, are ignored (their clients never got an answer).

use crate::auth::{Access, AuthState, Refused, STATE_KEY};
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
    /// Users, roles or grants changed.
    AuthChanged,
    /// Not applied: its author may not make it (where it was decided), or the change is
    /// invalid.
    Refused(Refused),
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

/// Where the state machine keeps its keys: the node's [`crate::state_store::StateStore`], or a
/// `HashMap` in tests.
pub trait KeyValues {
    /// Sets `key`; whether it is a new key.
    fn put(&mut self, key: String, value: String) -> Result<bool, String>;
    /// Removes `key`; whether it existed.
    fn delete(&mut self, key: &str) -> Result<bool, String>;
}

impl KeyValues for HashMap<String, String> {
    fn put(&mut self, key: String, value: String) -> Result<bool, String> {
        Ok(self.insert(key, value).is_none())
    }

    fn delete(&mut self, key: &str) -> Result<bool, String> {
        Ok(self.remove(key).is_some())
    }
}

/// What applying a write did to the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// How the number of keys changed: +1, 0 or -1.
    pub keys_delta: i64,
    /// Bytes of key and value written.
    pub bytes: usize,
}

/// Which writes took effect: the sessions of every node. Together with the keys, the state a
/// prefix of the log produced; small (bounded per node), so it is saved whole with every
/// checkpoint and sent whole at the start of a state transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    pub nodes: BTreeMap<u64, NodeSessions>,
    /// Sessions closed so far (orders `NodeSessions::closed`).
    pub lives_closed: u64,
}

impl Sessions {
    /// Applies one decided command to `keys` and `auth` (which `keys` keep under
    /// [`STATE_KEY`]); `Ok(None)` if it is a copy of a write already applied or given up,
    /// which changes nothing. Its author's permission is checked here, against the auth state
    /// of this point of the log, the same on every node.
    pub fn apply<K: KeyValues>(
        &mut self,
        keys: &mut K,
        auth: &mut AuthState,
        cmd: KvCommand,
    ) -> Result<Option<Applied>, String> {
        let KvCommand::Write(Write {
            id,
            done_below,
            by,
            op,
        }) = cmd;
        if !self.admit(id, done_below) {
            return Ok(None);
        }
        let refused = |r| Applied {
            outcome: Outcome::Refused(r),
            keys_delta: 0,
            bytes: 0,
        };
        let allowed = |access| by.as_ref().map_or(Ok(()), |who| auth.check(who, access));
        Ok(Some(match op {
            WriteOp::Put { key, value } => {
                if let Err(r) = allowed(Access::Write(&key)) {
                    return Ok(Some(refused(r)));
                }
                let bytes = key.len() + value.len();
                let new = keys.put(key, value)?;
                Applied {
                    outcome: Outcome::Written,
                    keys_delta: i64::from(new),
                    bytes,
                }
            }
            WriteOp::Delete { key } => {
                if let Err(r) = allowed(Access::Write(&key)) {
                    return Ok(Some(refused(r)));
                }
                let existed = keys.delete(&key)?;
                Applied {
                    outcome: Outcome::Deleted(existed),
                    keys_delta: -i64::from(existed),
                    bytes: key.len(),
                }
            }
            WriteOp::Auth(op) => {
                if let Err(r) = auth.apply(by.as_ref(), &op) {
                    return Ok(Some(refused(r)));
                }
                let saved = serde_json::to_string(&*auth).map_err(|e| e.to_string())?;
                let bytes = saved.len();
                keys.put(STATE_KEY.to_string(), saved)?;
                tracing::info!(
                    by = by.as_ref().map(|p| p.name()).unwrap_or_default(),
                    "auth change applied: {}",
                    op.describe()
                );
                Applied {
                    outcome: Outcome::AuthChanged,
                    keys_delta: 0,
                    bytes,
                }
            }
        }))
    }

    /// Whether the request takes effect now (and records that it did).
    fn admit(&mut self, id: RequestId, done_below: u64) -> bool {
        let closed_order = self.lives_closed;
        let node = self.nodes.entry(id.node).or_insert_with(|| NodeSessions {
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
            by: None,
            op: WriteOp::Put {
                key: "k".into(),
                value: value.into(),
            },
        })
    }

    /// The sessions and a map, applied together.
    #[derive(Default)]
    struct Machine {
        sessions: Sessions,
        map: HashMap<String, String>,
        auth: AuthState,
    }

    impl Machine {
        fn apply(&mut self, cmd: KvCommand) -> Option<Outcome> {
            let applied = self
                .sessions
                .apply(&mut self.map, &mut self.auth, cmd)
                .unwrap();
            applied.map(|a| a.outcome)
        }
    }

    #[test]
    fn a_retried_write_takes_effect_once() {
        let mut m = Machine::default();
        assert_eq!(m.apply(put(7, 1, 1, "a")), Some(Outcome::Written));
        assert_eq!(m.apply(put(7, 2, 1, "b")), Some(Outcome::Written));
        // The retry of request 1, decided after request 2: ignored, "b" stays.
        assert_eq!(m.apply(put(7, 1, 1, "a")), None);
        assert_eq!(m.map["k"], "b");
    }

    #[test]
    fn applying_reports_the_change_in_keys_and_bytes() {
        let mut sessions = Sessions::default();
        let mut map = HashMap::new();
        let auth = &mut AuthState::default();
        let first = sessions.apply(&mut map, auth, put(7, 1, 1, "abc")).unwrap();
        assert_eq!(first.map(|a| (a.keys_delta, a.bytes)), Some((1, 4)));
        let again = sessions.apply(&mut map, auth, put(7, 2, 1, "de")).unwrap();
        assert_eq!(again.map(|a| a.keys_delta), Some(0), "the key existed");
        let delete = KvCommand::Write(Write {
            id: RequestId {
                node: 1,
                life: 7,
                seq: 3,
            },
            done_below: 1,
            by: None,
            op: WriteOp::Delete { key: "k".into() },
        });
        let gone = sessions.apply(&mut map, auth, delete).unwrap().unwrap();
        assert_eq!(
            (gone.outcome, gone.keys_delta),
            (Outcome::Deleted(true), -1)
        );
    }

    #[test]
    fn copies_below_done_below_are_ignored_and_the_memory_is_bounded() {
        let mut m = Machine::default();
        for seq in 1..=1000 {
            assert!(m.apply(put(7, seq, seq, "v")).is_some());
        }
        assert!(
            m.sessions.nodes[&1].applied.len() <= 1,
            "only numbers not yet done are kept"
        );
        // A late copy of request 5 (given up by its node) arrives: ignored.
        assert_eq!(m.apply(put(7, 5, 5, "late")), None);
        assert_eq!(m.map["k"], "v");
    }

    #[test]
    fn a_late_copy_from_an_earlier_start_of_the_node_is_ignored() {
        let mut m = Machine::default();
        assert!(m.apply(put(7, 1, 1, "old life")).is_some());
        assert!(m.apply(put(9, 1, 1, "new life")).is_some());
        assert_eq!(m.apply(put(7, 2, 1, "late")), None);
        assert_eq!(m.map["k"], "new life");
    }
}
