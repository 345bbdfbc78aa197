//! Where a node keeps its keys: a sled database of its own (`<data_dir>/state`), outside the
//! replicated log, written key by key as decided writes are applied.
//!
//! Writes are not synced one by one: the log holds every decided write durably, so after a
//! crash a node replays the log from its last **checkpoint**. A checkpoint flushes the keys and
//! then records the position they hold and the sessions at that position ([`Recovery`]); only
//! then is the log compacted up to it. The keys may also hold some writes after the
//! checkpoint (sled wrote them before the crash); replaying those again gives the same values,
//! since every key ends with the last write to it in log order, and the sessions (exactly those
//! of the checkpoint) make the same choices about retried copies as the first time.

use crate::machine::{KeyValues, Sessions};
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::path::Path;

/// Where the keys are: the configuration and the number of its log's entries applied. Ordered
/// as the history is: every entry of a configuration comes before the next configuration's.
pub type Position = (u32, usize);

/// Bytes of sled's cache for the keys. Reads of keys not in it go to the disk (the page cache
/// of the OS); the node's memory stays about this much above its baseline however large the
/// state grows.
pub const CACHE_BYTES: u64 = 32 << 20;

const KEYS_TREE: &str = "keys";
const META_TREE: &str = "meta";
const RECOVERY_KEY: &str = "recovery";

/// What a node finds in its state store when it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recovery {
    /// The keys hold every write up to `position` (and maybe some later ones); `sessions` are
    /// those at `position`. The log is replayed from `position` on.
    Checkpoint {
        position: Position,
        sessions: Sessions,
    },
    /// A state transfer was under way; it resumes where it stopped.
    Transfer(TransferProgress),
}

/// How far a state transfer got (see [`crate::transfer`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferProgress {
    /// The position the state must be at least at (the end of the compacted prefix that made
    /// the transfer necessary).
    pub needed: Position,
    /// Where the copy started on the donor, and the donor's sessions there (from the first
    /// chunk). The log is replayed from here once the copy is complete.
    pub start: Option<(Position, Sessions)>,
    /// The last key copied; the next chunk starts after it.
    pub cursor: Option<String>,
}

/// A node's keys and its recovery record. Cheap to clone (sled's handles are shared).
#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    keys: sled::Tree,
    meta: sled::Tree,
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("state store: {what}: {e}")
}

impl StateStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            // Flushed at checkpoints only: the log makes every write durable already.
            .flush_every_ms(None)
            .open()
            .map_err(|e| failed(&format!("cannot open {}", dir.display()), e))?;
        let keys = db.open_tree(KEYS_TREE).map_err(|e| failed("open", e))?;
        let meta = db.open_tree(META_TREE).map_err(|e| failed("open", e))?;
        Ok(Self { db, keys, meta })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<String>, String> {
        match self.keys.get(key).map_err(|e| failed("read", e))? {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|e| failed("a value is not UTF-8", e)),
            None => Ok(None),
        }
    }

    /// Number of keys (reads them all: for start-up, not for every request).
    pub fn count_keys(&self) -> usize {
        self.keys.len()
    }

    /// The keys after `after` (all keys if `None`), in order.
    pub fn keys_after(
        &self,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, String), String>> {
        let from = match after {
            Some(key) => Bound::Excluded(key.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        self.keys
            .range::<Vec<u8>, _>((from, Bound::Unbounded))
            .map(|item| {
                let (k, v) = item.map_err(|e| failed("read", e))?;
                let text = |b: sled::IVec| {
                    String::from_utf8(b.to_vec()).map_err(|e| failed("not UTF-8", e))
                };
                Ok((text(k)?, text(v)?))
            })
    }

    /// Removes every key (before a state transfer starts from nothing).
    pub fn clear(&self) -> Result<(), String> {
        self.keys.clear().map_err(|e| failed("clear", e))
    }

    /// The recovery record, if one was written.
    pub fn recovery(&self) -> Result<Option<Recovery>, String> {
        match self.meta.get(RECOVERY_KEY).map_err(|e| failed("read", e))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| failed("the recovery record is unreadable", e)),
            None => Ok(None),
        }
    }

    /// Makes every key written so far durable, then records `recovery` durably. Blocks on the
    /// disk: call it off the async tasks.
    pub fn record(&self, recovery: &Recovery) -> Result<(), String> {
        self.flush()?;
        let bytes = serde_json::to_vec(recovery).map_err(|e| failed("encode", e))?;
        self.meta
            .insert(RECOVERY_KEY, bytes)
            .map_err(|e| failed("write", e))?;
        self.flush()
    }

    fn flush(&self) -> Result<(), String> {
        self.db.flush().map(|_| ()).map_err(|e| failed("flush", e))
    }
}

impl KeyValues for StateStore {
    fn put(&mut self, key: String, value: String) -> Result<bool, String> {
        let old = self
            .keys
            .insert(key.as_bytes(), value.as_bytes())
            .map_err(|e| failed("write", e))?;
        Ok(old.is_none())
    }

    fn delete(&mut self, key: &str) -> Result<bool, String> {
        let old = self.keys.remove(key).map_err(|e| failed("write", e))?;
        Ok(old.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_the_recovery_record_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = Recovery::Checkpoint {
            position: (1, 42),
            sessions: Sessions::default(),
        };
        {
            let mut store = StateStore::open(dir.path()).unwrap();
            assert_eq!(store.recovery().unwrap(), None);
            assert!(store.put("b".into(), "2".into()).unwrap(), "a new key");
            assert!(store.put("a".into(), "1".into()).unwrap());
            assert!(!store.put("a".into(), "one".into()).unwrap(), "overwritten");
            assert!(store.put("c".into(), "3".into()).unwrap());
            assert!(store.delete("c").unwrap());
            assert!(!store.delete("c").unwrap(), "already gone");
            store.record(&record).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().unwrap(), Some(record));
        assert_eq!(store.get("a").unwrap().as_deref(), Some("one"));
        assert_eq!(store.count_keys(), 2);
        let after_a: Vec<_> = store.keys_after(Some("a")).map(Result::unwrap).collect();
        assert_eq!(after_a, vec![("b".to_string(), "2".to_string())]);
        store.clear().unwrap();
        assert_eq!(store.count_keys(), 0);
    }
}
