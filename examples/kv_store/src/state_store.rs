//! Where a node keeps its keys: a store of its own (`<data_dir>/state`), outside the replicated
//! log, written key by key as decided writes are applied.
//!
//! **Layout.** Records are appended to segment files of about [`SEGMENT_BYTES`]; an index in
//! memory maps every key to its newest record. A put appends the key and value, a delete a
//! tombstone. Reads go to the file at the indexed place. At start the segments are read in
//! order to rebuild the index (a torn record at a segment's end, from a crash, ends it).
//!
//! **Space.** An overwritten or deleted record is garbage in its segment. At every checkpoint
//! the segments with the most garbage are rewritten (their live records copied to the end)
//! and deleted, until the closed segments hold at most [`SPACE_FACTOR`] times their live bytes:
//! the disk holds the data once plus a bounded margin however long writes go on, and nothing
//! is rewritten that did not change.
//!
//! **Durability.** Writes are not synced one by one: the log holds every decided write durably,
//! so after a crash a node replays the log from its last **checkpoint**. A checkpoint syncs
//! the segments, then records the position the keys hold and the sessions at that position
//! ([`Recovery`]); only then is the log compacted up to it. The keys may also hold writes after
//! the checkpoint (written before the crash); replaying those again gives the same values, as
//! every key ends with the last write to it in log order, and the sessions (exactly those of
//! the checkpoint) make the same choices about retried copies as the first time. A segment
//! emptied by a rewrite is deleted only after the copies were synced.

use crate::machine::{KeyValues, Sessions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where the keys are: the configuration and the number of its log's entries applied. Ordered
/// as the history is: every entry of a configuration comes before the next configuration's.
pub type Position = (u32, usize);

/// Size at which a segment is closed and a new one started.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// Closed segments are rewritten until they hold at most this many times their live bytes.
pub const SPACE_FACTOR: f64 = 1.2;

const RECOVERY_FILE: &str = "recovery.json";
/// Record header: checksum, key length, value length (`TOMBSTONE` for a delete).
const HEADER: usize = 12;
const TOMBSTONE: u32 = u32::MAX;

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

/// Where a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    segment: u64,
    offset: u64,
    /// The whole record's length.
    len: u32,
}

struct Segment {
    file: Arc<File>,
    len: u64,
    /// Bytes of records still needed (newest puts, and tombstones that hide older puts).
    live: u64,
}

struct Inner {
    dir: PathBuf,
    /// Every key's newest put.
    index: BTreeMap<String, Loc>,
    /// Newest tombstone of deleted keys whose older puts may still be in a segment.
    tombstones: HashMap<String, Loc>,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Segments written since the last sync.
    unsynced: BTreeSet<u64>,
}

/// A node's keys and its recovery record. Cheap to clone (the clones share the store).
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Mutex<Inner>>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("state store: {what}: {e}")
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("segment-{id:016}.data"))
}

/// A record's bytes.
fn encode(key: &str, value: Option<&str>) -> Vec<u8> {
    let value = value.map(str::as_bytes);
    let value_len = value.map_or(TOMBSTONE, |v| v.len() as u32);
    let mut record = Vec::with_capacity(HEADER + key.len() + value.map_or(0, <[u8]>::len));
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&(key.len() as u32).to_le_bytes());
    record.extend_from_slice(&value_len.to_le_bytes());
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(value.unwrap_or_default());
    let crc = crc32fast::hash(&record[4..]);
    record[..4].copy_from_slice(&crc.to_le_bytes());
    record
}

/// One record read back: its key, its value (`None`: a tombstone) and its length.
type Decoded = (String, Option<String>, usize);

/// The record at the start of `bytes`; `None` if it is incomplete or damaged.
fn decode(bytes: &[u8]) -> Option<Decoded> {
    let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let (crc, key_len, value_len) = (word(0)?, word(4)? as usize, word(8)?);
    let body_len = key_len
        + if value_len == TOMBSTONE {
            0
        } else {
            value_len as usize
        };
    let body = bytes.get(HEADER..HEADER + body_len)?;
    if crc32fast::hash(&bytes[4..HEADER + body_len]) != crc {
        return None;
    }
    let key = String::from_utf8(body[..key_len].to_vec()).ok()?;
    let value = match value_len {
        TOMBSTONE => None,
        _ => Some(String::from_utf8(body[key_len..].to_vec()).ok()?),
    };
    Some((key, value, HEADER + body_len))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    retrying_transient(|| File::open(dir))
        .and_then(|d| d.sync_all())
        .map_err(|e| failed("sync the directory", e))
}

/// Runs `open` again while it fails for a reason that passes (no file descriptor left, e.g.
/// while a flood of connections holds them, or an interrupted call), for about a second; any
/// other error, or one that lasts, is returned. A store must not fail for good over an error
/// that a moment later is gone.
fn retrying_transient<T>(mut open: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    const EINTR: i32 = 4;
    const EAGAIN: i32 = 11;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    let mut tries = 0;
    loop {
        match open() {
            Err(e)
                if tries < 50
                    && matches!(e.raw_os_error(), Some(EINTR | EAGAIN | ENFILE | EMFILE)) =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Inner {
    fn open_segment(&mut self, id: u64) -> Result<(), String> {
        let path = segment_path(&self.dir, id);
        let file = retrying_transient(|| {
            std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
        })
        .map_err(|e| failed(&path.display().to_string(), e))?;
        let segment = Segment {
            file: Arc::new(file),
            len: 0,
            live: 0,
        };
        self.segments.insert(id, segment);
        self.active = id;
        self.unsynced.insert(id);
        Ok(())
    }

    /// Appends `record` to the active segment (starting a new one when it is full).
    fn append(&mut self, record: &[u8]) -> Result<Loc, String> {
        let full = self
            .segments
            .get(&self.active)
            .is_none_or(|s| s.len >= SEGMENT_BYTES);
        if full {
            self.open_segment(self.active + 1)?;
        }
        let id = self.active;
        let segment = self.segments.get_mut(&id).ok_or("no active segment")?;
        (&*segment.file)
            .write_all(record)
            .map_err(|e| failed("write", e))?;
        let loc = Loc {
            segment: id,
            offset: segment.len,
            len: record.len() as u32,
        };
        segment.len += record.len() as u64;
        segment.live += record.len() as u64;
        self.unsynced.insert(id);
        Ok(loc)
    }

    /// The record at `loc` is garbage now.
    fn forget(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.segment) {
            s.live = s.live.saturating_sub(u64::from(loc.len));
        }
    }

    /// Applies one record found at `loc` while reading the segments at start.
    fn replay(&mut self, key: String, value: Option<String>, loc: Loc) {
        let replaced = match value {
            Some(_) => [self.tombstones.remove(&key), self.index.insert(key, loc)],
            None => [self.index.remove(&key), self.tombstones.insert(key, loc)],
        };
        for old in replaced.into_iter().flatten() {
            self.forget(old);
        }
    }

    /// Bytes and live bytes of the closed segments, but `emptied`.
    fn closed_bytes(&self, emptied: &[u64]) -> (u64, u64) {
        self.segments
            .iter()
            .filter(|(id, _)| **id != self.active && !emptied.contains(*id))
            .fold((0, 0), |(len, live), (_, s)| (len + s.len, live + s.live))
    }

    /// The closed segment with the least live bytes for its size, but `emptied`.
    fn victim(&self, emptied: &[u64]) -> Option<u64> {
        let ratio = |s: &Segment| s.live as f64 / s.len.max(1) as f64;
        self.segments
            .iter()
            .filter(|(id, _)| **id != self.active && !emptied.contains(*id))
            .min_by(|a, b| ratio(a.1).total_cmp(&ratio(b.1)))
            .map(|(id, _)| *id)
    }

    /// Copies segment `id`'s live records to the end; it holds nothing needed afterwards.
    fn rewrite(&mut self, id: u64) -> Result<(), String> {
        let oldest = self.segments.keys().next() == Some(&id);
        let (file, len) = match self.segments.get(&id) {
            Some(s) => (s.file.clone(), s.len),
            None => return Ok(()),
        };
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| failed("read", e))?;
        let mut offset = 0usize;
        while let Some((key, value, record_len)) = decode(&bytes[offset..]) {
            let here = Loc {
                segment: id,
                offset: offset as u64,
                len: record_len as u32,
            };
            let record = &bytes[offset..offset + record_len];
            offset += record_len;
            let newest = match value {
                Some(_) => self.index.get(&key) == Some(&here),
                None => self.tombstones.get(&key) == Some(&here),
            };
            if !newest {
                continue;
            }
            // A tombstone in the oldest segment hides nothing any more.
            if value.is_none() && oldest {
                self.tombstones.remove(&key);
                continue;
            }
            let moved = self.append(record)?;
            match value {
                Some(_) => self.index.insert(key, moved),
                None => self.tombstones.insert(key, moved),
            };
        }
        if let Some(s) = self.segments.get_mut(&id) {
            s.live = 0;
        }
        Ok(())
    }
}

impl StateStore {
    /// Opens (or creates) the store in directory `dir`, reading every segment to rebuild the
    /// index.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| failed(&dir.display().to_string(), e))?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| failed(&dir.display().to_string(), e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("segment-")?
                    .strip_suffix(".data")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            index: BTreeMap::new(),
            tombstones: HashMap::new(),
            segments: BTreeMap::new(),
            active: 0,
            unsynced: BTreeSet::new(),
        };
        for id in &ids {
            inner.open_segment(*id)?;
            let path = segment_path(dir, *id);
            let bytes = std::fs::read(&path).map_err(|e| failed("read", e))?;
            let mut offset = 0;
            while let Some((key, value, len)) = decode(&bytes[offset..]) {
                let loc = Loc {
                    segment: *id,
                    offset: offset as u64,
                    len: len as u32,
                };
                let segment = inner.segments.get_mut(id).ok_or("segment vanished")?;
                segment.live += len as u64;
                segment.len = (offset + len) as u64;
                inner.replay(key, value, loc);
                offset += len;
            }
            if offset < bytes.len() {
                // Written after the last checkpoint and cut short by a crash: the log
                // replays it.
                tracing::warn!(
                    "state store: {}: dropping {} bytes of an incomplete record",
                    path.display(),
                    bytes.len() - offset
                );
                let file = &inner.segments.get(id).ok_or("segment vanished")?.file;
                file.set_len(offset as u64)
                    .map_err(|e| failed("truncate", e))?;
            }
        }
        if ids.is_empty() {
            inner.open_segment(0)?;
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<String>, String> {
        let (file, loc) = {
            let inner = self.inner();
            match inner.index.get(key) {
                Some(loc) => match inner.segments.get(&loc.segment) {
                    Some(segment) => (segment.file.clone(), *loc),
                    None => return Err(failed("read", format!("{key:?} points to no segment"))),
                },
                None => return Ok(None),
            }
        };
        // Outside the lock: a segment deleted meanwhile stays readable through its handle.
        let mut bytes = vec![0; loc.len as usize];
        file.read_exact_at(&mut bytes, loc.offset)
            .map_err(|e| failed("read", e))?;
        match decode(&bytes) {
            Some((_, value, _)) => Ok(value),
            None => Err(failed("read", format!("a damaged record of {key:?}"))),
        }
    }

    /// Number of keys.
    pub fn count_keys(&self) -> usize {
        // Reserved keys (the auth state) start with a NUL byte, which no client key does.
        let inner = self.inner();
        inner.index.len()
            - inner
                .index
                .range("\u{0}".to_string().."\u{1}".to_string())
                .count()
    }

    /// Bytes of the segments (what the keys take on disk).
    pub fn disk_bytes(&self) -> u64 {
        self.inner().segments.values().map(|s| s.len).sum()
    }

    /// The keys after `after` (all keys if `None`) with their values, in order. Each step
    /// looks the next key up afresh, so writes go on meanwhile; a key is seen with its value
    /// at the moment it is read.
    pub fn keys_after(
        &self,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, String), String>> + '_ {
        let mut cursor = after.map(str::to_string);
        std::iter::from_fn(move || loop {
            let next = {
                let inner = self.inner();
                let from = match &cursor {
                    Some(key) => Bound::Excluded(key.clone()),
                    None => Bound::Unbounded,
                };
                let found = inner.index.range((from, Bound::Unbounded)).next();
                found.map(|(k, _)| k.clone())
            }?;
            cursor = Some(next.clone());
            match self.get(&next) {
                Ok(Some(value)) => return Some(Ok((next, value))),
                // Deleted since: on to the next key.
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        })
    }

    /// Removes every key (before a state transfer starts from nothing).
    pub fn clear(&self) -> Result<(), String> {
        let mut inner = self.inner();
        let next = inner.active + 1;
        for id in std::mem::take(&mut inner.segments).into_keys() {
            let path = segment_path(&inner.dir, id);
            std::fs::remove_file(&path).map_err(|e| failed("remove", e))?;
        }
        inner.index.clear();
        inner.tombstones.clear();
        inner.unsynced.clear();
        inner.open_segment(next)?;
        let dir = inner.dir.clone();
        drop(inner);
        sync_dir(&dir)
    }

    /// The recovery record, if one was written.
    pub fn recovery(&self) -> Result<Option<Recovery>, String> {
        let path = self.inner().dir.join(RECOVERY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| failed("the recovery record is unreadable", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read the recovery record", e)),
        }
    }

    /// Makes every key written so far durable, reclaims garbage, then records `recovery`
    /// durably. Blocks on the disk: call it off the async tasks. Writes go on meanwhile (the
    /// store is locked for one segment's rewrite at a time, never across a sync).
    pub fn record(&self, recovery: &Recovery) -> Result<(), String> {
        self.sync()?;
        let emptied = self.collect_garbage()?;
        if !emptied.is_empty() {
            // The copies are durable before the originals go.
            self.sync()?;
            let mut inner = self.inner();
            for id in emptied {
                inner.segments.remove(&id);
                let path = segment_path(&inner.dir, id);
                std::fs::remove_file(&path).map_err(|e| failed("remove", e))?;
            }
        }
        let dir = self.inner().dir.clone();
        let bytes = serde_json::to_vec(recovery).map_err(|e| failed("encode", e))?;
        let (path, tmp) = (dir.join(RECOVERY_FILE), dir.join("recovery.tmp"));
        let mut file = File::create(&tmp).map_err(|e| failed("write", e))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| failed("write the recovery record", e))?;
        sync_dir(&dir)
    }

    /// Syncs every segment written since the last sync, and the directory.
    fn sync(&self) -> Result<(), String> {
        let (files, dir) = {
            let mut inner = self.inner();
            let ids = std::mem::take(&mut inner.unsynced);
            let files: Vec<Arc<File>> = ids
                .iter()
                .filter_map(|id| inner.segments.get(id).map(|s| s.file.clone()))
                .collect();
            (files, inner.dir.clone())
        };
        for file in files {
            file.sync_data().map_err(|e| failed("sync", e))?;
        }
        sync_dir(&dir)
    }

    /// Rewrites the closed segments with the most garbage until the closed segments hold at
    /// most `SPACE_FACTOR` times their live bytes; returns the segments to delete once the
    /// copies are synced.
    fn collect_garbage(&self) -> Result<Vec<u64>, String> {
        let mut emptied = Vec::new();
        loop {
            let mut inner = self.inner();
            let (len, live) = inner.closed_bytes(&emptied);
            if len as f64 <= live as f64 * SPACE_FACTOR {
                return Ok(emptied);
            }
            let Some(victim) = inner.victim(&emptied) else {
                return Ok(emptied);
            };
            inner.rewrite(victim)?;
            emptied.push(victim);
        }
    }
}

impl StateStore {
    /// Sets every key of `entries` (a chunk of a state transfer) with one write to the file.
    pub fn put_all(&self, entries: Vec<(String, String)>) -> Result<(), String> {
        let mut records = Vec::new();
        let mut ends = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            records.extend_from_slice(&encode(key, Some(value)));
            ends.push(records.len());
        }
        let mut inner = self.inner();
        let first = inner.append(&records)?;
        // `append` counted the whole as one record: account for each key instead.
        inner.forget(first);
        let mut start = 0;
        for ((key, _), end) in entries.into_iter().zip(ends) {
            let loc = Loc {
                segment: first.segment,
                offset: first.offset + start as u64,
                len: (end - start) as u32,
            };
            start = end;
            if let Some(s) = inner.segments.get_mut(&loc.segment) {
                s.live += u64::from(loc.len);
            }
            if let Some(tombstone) = inner.tombstones.remove(&key) {
                inner.forget(tombstone);
            }
            if let Some(old) = inner.index.insert(key, loc) {
                inner.forget(old);
            }
        }
        Ok(())
    }
}

impl KeyValues for StateStore {
    fn put(&mut self, key: String, value: String) -> Result<bool, String> {
        let record = encode(&key, Some(&value));
        let mut inner = self.inner();
        let loc = inner.append(&record)?;
        // A newer put hides older ones by itself: a tombstone before it is garbage too.
        if let Some(tombstone) = inner.tombstones.remove(&key) {
            inner.forget(tombstone);
        }
        let old = inner.index.insert(key, loc);
        if let Some(old) = old {
            inner.forget(old);
        }
        Ok(old.is_none())
    }

    fn delete(&mut self, key: &str) -> Result<bool, String> {
        let mut inner = self.inner();
        let Some(old) = inner.index.remove(key) else {
            return Ok(false);
        };
        inner.forget(old);
        let loc = inner.append(&encode(key, None))?;
        if let Some(older) = inner.tombstones.insert(key.to_string(), loc) {
            inner.forget(older);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(store: &StateStore) -> BTreeMap<String, String> {
        store.keys_after(None).map(Result::unwrap).collect()
    }

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
        assert_eq!(store.get("c").unwrap(), None, "the delete survived");
        assert_eq!(store.count_keys(), 2);
        let after_a: Vec<_> = store.keys_after(Some("a")).map(Result::unwrap).collect();
        assert_eq!(after_a, vec![("b".to_string(), "2".to_string())]);
        store.clear().unwrap();
        assert_eq!(store.count_keys(), 0);
        drop(store);
        assert_eq!(StateStore::open(dir.path()).unwrap().count_keys(), 0);
    }

    #[test]
    fn rewriting_keys_again_and_again_keeps_the_disk_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        let value_bytes = 20_000;
        let keys = 600; // 12 MB: three segments
        let live = (keys * (value_bytes + 20)) as f64;
        let mut expected = BTreeMap::new();
        for round in 0..6u8 {
            for k in 0..keys {
                let key = format!("key-{k:04}");
                if k % 7 == round as usize {
                    store.delete(&key).unwrap();
                    expected.remove(&key);
                    continue;
                }
                let value = char::from(b'a' + round).to_string().repeat(value_bytes);
                store.put(key.clone(), value.clone()).unwrap();
                expected.insert(key, value);
            }
            store
                .record(&Recovery::Transfer(TransferProgress {
                    needed: (1, round as usize),
                    start: None,
                    cursor: None,
                }))
                .unwrap();
            let bound = live * SPACE_FACTOR + SEGMENT_BYTES as f64 + 64.0 * 1024.0;
            assert!(
                (store.disk_bytes() as f64) < bound,
                "round {round}: {} bytes for {live} live",
                store.disk_bytes()
            );
        }
        assert_eq!(all(&store), expected);
        drop(store);
        let reopened = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            all(&reopened),
            expected,
            "the same after rewrites and a reopen"
        );
    }

    #[test]
    fn a_record_cut_short_by_a_crash_is_dropped_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = StateStore::open(dir.path()).unwrap();
            store.put("kept".into(), "yes".into()).unwrap();
            store.put("torn".into(), "x".repeat(1000)).unwrap();
        }
        let path = segment_path(dir.path(), 0);
        let len = std::fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.get("kept").unwrap().as_deref(), Some("yes"));
        assert_eq!(store.get("torn").unwrap(), None);
        store.put("after".into(), "ok".into()).unwrap();
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.count_keys(), 2, "writes after the cut are readable");
    }

    #[test]
    fn a_deleted_key_stays_deleted_after_its_segments_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        let big = "v".repeat(1 << 20);
        store.put("gone".into(), big.clone()).unwrap();
        for k in 0..12 {
            store.put(format!("filler-{k}"), big.clone()).unwrap();
        }
        store.delete("gone").unwrap();
        for round in 0..3 {
            for k in 0..12 {
                store
                    .put(format!("filler-{k}"), format!("{round}{big}"))
                    .unwrap();
            }
            store
                .record(&Recovery::Checkpoint {
                    position: (1, round),
                    sessions: Sessions::default(),
                })
                .unwrap();
        }
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.get("gone").unwrap(), None);
        assert_eq!(store.count_keys(), 12);
    }
}
