//! Where a node keeps its keys: a store of its own (`<data_dir>/state`), outside the replicated
//! log, written key by key as decided writes are applied.
//!
//! **Layout.** Records ([checksummed](omnipaxos_storage::files::record), numbered within their
//! segment) are appended to segment files of about [`SEGMENT_BYTES`]; an index in memory maps
//! every key to its newest record. A put appends the key and value, a delete a tombstone.
//! Reads go to the file at the indexed place. At start the segments are read in order to
//! rebuild the index.
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
//! emptied by a rewrite is deleted only after the copies were synced and the checkpoint that
//! no longer lists it was written.
//!
//! **Corruption.** The checkpoint file is [sealed](omnipaxos_storage::files::sealed) and lists
//! every segment with the length synced before it was written. At start, a listed segment that
//! is missing or shorter, or a damaged record within a synced length, fails the open with the
//! file and the offset: those keys are not in the log any more. Past a synced length (and in
//! segments created since), damage is a write the crash cut short, and the log replays it.

use crate::machine::{KeyValues, Sessions};
use omnipaxos_storage::files::record::{self, Record, Rules, Verdict};
use omnipaxos_storage::files::{
    retrying_transient, sealed, Corruption, FileError, FileSystem, StoredFile,
};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where the keys are: the configuration and the number of its log's entries applied. Ordered
/// as the history is: every entry of a configuration comes before the next configuration's.
pub type Position = (u32, usize);

/// Size at which a segment is closed and a new one started.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// Closed segments are rewritten until they hold at most this many times their live bytes.
pub const SPACE_FACTOR: f64 = 1.2;

/// The sealed checkpoint: the recovery record and the synced length of every segment.
const CHECKPOINT_FILE: &str = "checkpoint";
/// The sealed position the keys may have been written up to (see [`StateStore::reserve`]).
const RESERVED_FILE: &str = "reserved";
/// Written by releases before checkpoints were sealed: refused.
const OLD_RECOVERY_FILE: &str = "recovery.json";
/// A record's payload starts with the key's length and the value's (`TOMBSTONE` for a delete).
const PAYLOAD_HEADER: usize = 8;
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
    /// The furthest position the copied keys may hold writes of (the donors' positions when
    /// they read the chunks).
    #[serde(default)]
    pub until: Option<Position>,
}

/// What the checkpoint file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    recovery: Recovery,
    /// Every segment that must exist, with the length synced before the checkpoint.
    segments: BTreeMap<u64, u64>,
}

/// Where a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    segment: u64,
    offset: u64,
    /// The whole record's length.
    len: u32,
    /// [`payload_digest`] of the record's payload.
    digest: u64,
}

/// A 64-bit digest of a record's payload (its key and value): two CRC-32s with different
/// starting values. Stable across releases and machines, as the nodes compare sums of them.
fn payload_digest(payload: &[u8]) -> u64 {
    let mut low = crc32fast::Hasher::new_with_initial(0x6b76_5f31);
    low.update(payload);
    let mut high = crc32fast::Hasher::new_with_initial(0x7374_6174);
    high.update(payload);
    (u64::from(high.finalize()) << 32) | u64::from(low.finalize())
}

struct Segment {
    file: Arc<dyn StoredFile>,
    len: u64,
    /// Bytes of records still needed (newest puts, and tombstones that hide older puts).
    live: u64,
    /// The next record's number in the segment.
    next_seq: u64,
    /// How much of it is known to be on the device.
    synced_len: u64,
}

struct Inner {
    files: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// Size at which a segment is closed ([`SEGMENT_BYTES`], smaller in tests).
    segment_bytes: u64,
    /// The recovery record last written (the checkpoint is written again with it when the
    /// segments change under it).
    recorded: Option<Recovery>,
    /// Every key's newest put.
    index: BTreeMap<String, Loc>,
    /// Newest tombstone of deleted keys whose older puts may still be in a segment.
    tombstones: HashMap<String, Loc>,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Segments written since the last sync.
    unsynced: BTreeSet<u64>,
    /// The sum of the digests of every key's newest put: the same on every node whose keys
    /// are the same, whatever the order they were written in.
    digest: u64,
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

/// A record's payload.
fn payload(key: &str, value: Option<&str>) -> Vec<u8> {
    let value = value.map(str::as_bytes);
    let value_len = value.map_or(TOMBSTONE, |v| v.len() as u32);
    let mut payload = Vec::with_capacity(PAYLOAD_HEADER + key.len() + value.map_or(0, <[u8]>::len));
    payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
    payload.extend_from_slice(&value_len.to_le_bytes());
    payload.extend_from_slice(key.as_bytes());
    payload.extend_from_slice(value.unwrap_or_default());
    payload
}

/// One record's key and value (`None`: a tombstone).
type Decoded = (String, Option<String>);

/// The key and value in a record's payload; `None` if it does not hold one.
fn decode_payload(payload: &[u8]) -> Option<Decoded> {
    let word = |at: usize| {
        Some(u32::from_le_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let (key_len, value_len) = (word(0)? as usize, word(4)?);
    let body = payload.get(PAYLOAD_HEADER..)?;
    let key = String::from_utf8(body.get(..key_len)?.to_vec()).ok()?;
    let value = match value_len {
        TOMBSTONE if body.len() == key_len => None,
        len if body.len() == key_len + len as usize => {
            Some(String::from_utf8(body[key_len..].to_vec()).ok()?)
        }
        _ => return None,
    };
    Some((key, value))
}

/// The key and value of the whole record at the start of `bytes`.
fn decode(bytes: &[u8]) -> Option<Decoded> {
    decode_payload(record::parse(bytes)?.payload)
}

fn file_error(e: FileError) -> String {
    format!("state store: {e}")
}

fn sync_dir(files: &dyn FileSystem, dir: &Path) -> Result<(), String> {
    retrying_transient(|| files.sync_dir(dir)).map_err(|e| failed("sync the directory", e))
}

/// The checkpoint in `dir`, if one was written.
fn read_checkpoint(files: &dyn FileSystem, dir: &Path) -> Result<Option<Checkpoint>, String> {
    let path = dir.join(CHECKPOINT_FILE);
    let Some(bytes) = sealed::read(files, &path).map_err(file_error)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        let reason = format!("a sealed checkpoint that does not parse: {e}");
        file_error(Corruption::new(path, 0, reason).into())
    })
}

impl Inner {
    /// Reads segment `id`'s records from `bytes` into the index; `synced` bytes of it were
    /// on the device at the checkpoint. Returns where its last whole record ends.
    fn load_segment(&mut self, id: u64, bytes: &[u8], synced: u64) -> Result<u64, String> {
        let path = segment_path(&self.dir, id);
        let next = Cell::new(0u64);
        let log = record::read_log(
            bytes,
            Rules {
                belongs: |r: &Record<'_>| {
                    if r.seq != next.get() || decode_payload(r.payload).is_none() {
                        return Verdict::Corrupt(format!("record {} is not whole", r.seq));
                    }
                    next.set(r.seq + 1);
                    Verdict::Take
                },
                later: |_: &Record<'_>| false,
                unsynced_from: Some(synced),
            },
        )
        .map_err(|d| file_error(Corruption::new(&path, d.offset, d.reason).into()))?;
        for found in &log.records {
            let Some((key, value)) = decode_payload(found.payload) else {
                continue; // checked above
            };
            let loc = Loc {
                segment: id,
                offset: found.offset,
                len: (found.end() - found.offset) as u32,
                digest: payload_digest(found.payload),
            };
            let segment = self.segments.get_mut(&id).ok_or("segment vanished")?;
            segment.live += u64::from(loc.len);
            self.replay(key, value, loc);
        }
        let segment = self.segments.get_mut(&id).ok_or("segment vanished")?;
        segment.len = log.end;
        segment.next_seq = next.get();
        segment.synced_len = synced.min(log.end);
        Ok(log.end)
    }

    /// Replaces the checkpoint file (sealed, synced, renamed, directory synced).
    fn write_checkpoint(
        &mut self,
        recovery: &Recovery,
        segments: BTreeMap<u64, u64>,
    ) -> Result<(), String> {
        let checkpoint = Checkpoint {
            recovery: recovery.clone(),
            segments,
        };
        let bytes = serde_json::to_vec(&checkpoint).map_err(|e| failed("encode", e))?;
        let path = self.dir.join(CHECKPOINT_FILE);
        sealed::write(&*self.files, &path, &bytes).map_err(file_error)?;
        self.recorded = Some(checkpoint.recovery);
        Ok(())
    }

    fn open_segment(&mut self, id: u64) -> Result<(), String> {
        let path = segment_path(&self.dir, id);
        let file = retrying_transient(|| self.files.open(&path, true))
            .map_err(|e| failed(&path.display().to_string(), e))?;
        let segment = Segment {
            file,
            len: 0,
            live: 0,
            next_seq: 0,
            synced_len: 0,
        };
        self.segments.insert(id, segment);
        self.active = id;
        self.unsynced.insert(id);
        Ok(())
    }

    /// Appends records holding `payloads` to the active segment (starting a new one when it
    /// is full) with one write, and returns where each is.
    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<Loc>, String> {
        let full = self
            .segments
            .get(&self.active)
            .is_none_or(|s| s.len >= self.segment_bytes);
        if full {
            self.open_segment(self.active + 1)?;
        }
        let id = self.active;
        let segment = self.segments.get_mut(&id).ok_or("no active segment")?;
        let mut bytes = Vec::new();
        let mut locs = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            let record = record::encode(segment.next_seq + i as u64, 0, payload);
            locs.push(Loc {
                segment: id,
                offset: segment.len + bytes.len() as u64,
                len: record.len() as u32,
                digest: payload_digest(payload),
            });
            bytes.extend_from_slice(&record);
        }
        let at = segment.len;
        retrying_transient(|| segment.file.write_at(&bytes, at)).map_err(|e| failed("write", e))?;
        segment.next_seq += payloads.len() as u64;
        segment.len += bytes.len() as u64;
        segment.live += bytes.len() as u64;
        self.unsynced.insert(id);
        Ok(locs)
    }

    /// Appends one record holding `payload`.
    fn append_one(&mut self, payload: Vec<u8>) -> Result<Loc, String> {
        let locs = self.append(&[payload])?;
        locs.first()
            .copied()
            .ok_or_else(|| "nothing appended".to_string())
    }

    /// The record at `loc` is garbage now.
    fn forget(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.segment) {
            s.live = s.live.saturating_sub(u64::from(loc.len));
        }
    }

    /// Makes the put at `loc` `key`'s newest record; returns whether the key is new.
    fn set(&mut self, key: String, loc: Loc) -> bool {
        // A newer put hides older ones by itself: a tombstone before it is garbage too.
        if let Some(tombstone) = self.tombstones.remove(&key) {
            self.forget(tombstone);
        }
        self.digest = self.digest.wrapping_add(loc.digest);
        let Some(old) = self.index.insert(key, loc) else {
            return true;
        };
        self.forget(old);
        self.digest = self.digest.wrapping_sub(old.digest);
        false
    }

    /// Removes `key`'s put (if any) and records the tombstone at `loc`.
    fn unset(&mut self, key: &str, tombstone: Loc) {
        if let Some(old) = self.index.remove(key) {
            self.forget(old);
            self.digest = self.digest.wrapping_sub(old.digest);
        }
        if let Some(older) = self.tombstones.insert(key.to_string(), tombstone) {
            self.forget(older);
        }
    }

    /// Applies one record found at `loc` while reading the segments at start.
    fn replay(&mut self, key: String, value: Option<String>, loc: Loc) {
        match value {
            Some(_) => {
                self.set(key, loc);
            }
            None => self.unset(&key, loc),
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
        file.read_at(&mut bytes, 0).map_err(|e| failed("read", e))?;
        let mut offset = 0usize;
        while let Some(found) = record::parse(&bytes[offset..]) {
            let record_len = (found.end() - found.offset) as usize;
            let here = Loc {
                segment: id,
                offset: offset as u64,
                len: record_len as u32,
                digest: payload_digest(found.payload),
            };
            offset += record_len;
            let Some((key, value)) = decode_payload(found.payload) else {
                return Err(failed(
                    "rewrite",
                    format!("a damaged record in segment {id}"),
                ));
            };
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
            let moved = self.append_one(found.payload.to_vec())?;
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
    /// index; fails, naming the file and the offset, if a synced byte is damaged or a segment
    /// the checkpoint lists is missing.
    pub fn open(dir: &Path) -> Result<Self, String> {
        Self::open_on(omnipaxos_storage::files::os(), dir)
    }

    /// [`StateStore::open`] on `files` (a simulated file system in power-cut tests).
    pub fn open_on(files: Arc<dyn FileSystem>, dir: &Path) -> Result<Self, String> {
        Self::open_with_segments(files, dir, SEGMENT_BYTES)
    }

    /// [`StateStore::open_on`] with segments closed at `segment_bytes`.
    fn open_with_segments(
        files: Arc<dyn FileSystem>,
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<Self, String> {
        files
            .create_dir_all(dir)
            .map_err(|e| failed(&dir.display().to_string(), e))?;
        if files.exists(&dir.join(OLD_RECOVERY_FILE)).unwrap_or(false) {
            return Err(failed(
                &dir.display().to_string(),
                "written by an older release (recovery.json): this release cannot read it",
            ));
        }
        let checkpoint = read_checkpoint(&*files, dir)?;
        let listed = checkpoint
            .as_ref()
            .map(|c| c.segments.clone())
            .unwrap_or_default();
        let names = files
            .list_dir(dir)
            .map_err(|e| failed(&dir.display().to_string(), e))?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|name| {
                name.strip_prefix("segment-")?
                    .strip_suffix(".data")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        if let Some(missing) = listed.keys().find(|id| !ids.contains(id)) {
            let path = segment_path(dir, *missing);
            let reason = "a segment the checkpoint lists is missing";
            return Err(file_error(Corruption::new(path, 0, reason).into()));
        }
        let newest_listed = listed.keys().next_back().copied();
        let mut inner = Inner {
            files: files.clone(),
            dir: dir.to_path_buf(),
            segment_bytes,
            recorded: checkpoint.map(|c| c.recovery),
            index: BTreeMap::new(),
            tombstones: HashMap::new(),
            segments: BTreeMap::new(),
            active: 0,
            unsynced: BTreeSet::new(),
            digest: 0,
        };
        for id in &ids {
            let path = segment_path(dir, *id);
            let synced = listed.get(id).copied();
            if synced.is_none() && newest_listed.is_some_and(|newest| *id < newest) {
                // Emptied by a rewrite before the checkpoint that no longer lists it.
                files.remove_file(&path).map_err(|e| failed("remove", e))?;
                continue;
            }
            inner.open_segment(*id)?;
            let bytes = files.read(&path).map_err(|e| failed("read", e))?;
            let synced = synced.unwrap_or(0);
            if (bytes.len() as u64) < synced {
                let reason = format!("{} bytes, {synced} of them synced before", bytes.len());
                return Err(file_error(
                    Corruption::new(&path, bytes.len() as u64, reason).into(),
                ));
            }
            let end = inner.load_segment(*id, &bytes, synced)?;
            if end < bytes.len() as u64 {
                // Written after the last checkpoint and cut short by a crash: the log
                // replays it.
                tracing::warn!(
                    "state store: {}: dropping {} bytes of a write cut short",
                    path.display(),
                    bytes.len() as u64 - end
                );
                let file = &inner.segments.get(id).ok_or("segment vanished")?.file;
                file.set_len(end).map_err(|e| failed("truncate", e))?;
            }
        }
        if inner.segments.is_empty() {
            let next = ids.last().map_or(0, |id| id + 1);
            inner.open_segment(next)?;
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
        file.read_at(&mut bytes, loc.offset)
            .map_err(|e| failed("read", e))?;
        match decode(&bytes) {
            Some((_, value)) => Ok(value),
            None => Err(failed("read", format!("a damaged record of {key:?}"))),
        }
    }

    /// A digest of every key and value (the sum of each one's, so the order they were written
    /// in does not matter): nodes with the same keys have the same digest.
    pub fn digest(&self) -> u64 {
        self.inner().digest
    }

    /// Records durably that the keys may be written up to `position` from now on: after a
    /// crash, [`StateStore::reserved`] is then an upper bound of every position applied before.
    /// Blocks on the disk.
    pub fn reserve(&self, position: Position) -> Result<(), String> {
        let (files, dir) = {
            let inner = self.inner();
            (inner.files.clone(), inner.dir.clone())
        };
        let bytes = serde_json::to_vec(&position).map_err(|e| failed("encode", e))?;
        sealed::write(&*files, &dir.join(RESERVED_FILE), &bytes).map_err(file_error)
    }

    /// The last position [`StateStore::reserve`] recorded.
    pub fn reserved(&self) -> Result<Option<Position>, String> {
        let (files, dir) = {
            let inner = self.inner();
            (inner.files.clone(), inner.dir.clone())
        };
        let path = dir.join(RESERVED_FILE);
        let Some(bytes) = sealed::read(&*files, &path).map_err(file_error)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            file_error(Corruption::new(path, 0, format!("does not parse: {e}")).into())
        })
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

    /// Removes every key (before a state transfer starts from nothing). The checkpoint is
    /// written again first, listing no segment, so that a crash part-way leaves nothing it
    /// would miss.
    pub fn clear(&self) -> Result<(), String> {
        let mut inner = self.inner();
        if let Some(recovery) = inner.recorded.clone() {
            inner.write_checkpoint(&recovery, BTreeMap::new())?;
        }
        let next = inner.active + 1;
        for id in std::mem::take(&mut inner.segments).into_keys() {
            let path = segment_path(&inner.dir, id);
            inner
                .files
                .remove_file(&path)
                .map_err(|e| failed("remove", e))?;
        }
        inner.index.clear();
        inner.tombstones.clear();
        inner.unsynced.clear();
        inner.digest = 0;
        inner.open_segment(next)?;
        let (files, dir) = (inner.files.clone(), inner.dir.clone());
        drop(inner);
        sync_dir(&*files, &dir)
    }

    /// The recovery record, if one was written.
    pub fn recovery(&self) -> Result<Option<Recovery>, String> {
        Ok(self.inner().recorded.clone())
    }

    /// Makes every key written so far durable, reclaims garbage, then records `recovery`
    /// durably (with the synced length of every segment). Blocks on the disk: call it off the
    /// async tasks. Writes go on meanwhile (the store is locked for one segment's rewrite at a
    /// time, never across a sync).
    pub fn record(&self, recovery: &Recovery) -> Result<(), String> {
        self.sync()?;
        let emptied = self.collect_garbage()?;
        if !emptied.is_empty() {
            // The copies are durable before the checkpoint stops listing the originals.
            self.sync()?;
        }
        let mut inner = self.inner();
        let segments = inner
            .segments
            .iter()
            // A segment never synced may not even have a durable name: it is not listed (its
            // records are after the checkpoint, and the log replays them).
            .filter(|(id, s)| !emptied.contains(id) && s.synced_len > 0)
            .map(|(id, s)| (*id, s.synced_len))
            .collect();
        inner.write_checkpoint(recovery, segments)?;
        for id in emptied {
            inner.segments.remove(&id);
            let path = segment_path(&inner.dir, id);
            inner
                .files
                .remove_file(&path)
                .map_err(|e| failed("remove", e))?;
        }
        Ok(())
    }

    /// Syncs every segment written since the last sync, and the directory; each segment's
    /// length before its sync is then known to be on the device.
    fn sync(&self) -> Result<(), String> {
        let (files, dir, segments) = {
            let mut inner = self.inner();
            let ids = std::mem::take(&mut inner.unsynced);
            let segments: Vec<(u64, Arc<dyn StoredFile>, u64)> = ids
                .iter()
                .filter_map(|id| inner.segments.get(id).map(|s| (*id, s.file.clone(), s.len)))
                .collect();
            (inner.files.clone(), inner.dir.clone(), segments)
        };
        for (_, file, _) in &segments {
            file.sync_data().map_err(|e| failed("sync", e))?;
        }
        sync_dir(&*files, &dir)?;
        let mut inner = self.inner();
        for (id, _, len) in segments {
            if let Some(segment) = inner.segments.get_mut(&id) {
                segment.synced_len = segment.synced_len.max(len);
            }
        }
        Ok(())
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
        let payloads: Vec<Vec<u8>> = entries
            .iter()
            .map(|(key, value)| payload(key, Some(value)))
            .collect();
        let mut inner = self.inner();
        let locs = inner.append(&payloads)?;
        for ((key, _), loc) in entries.into_iter().zip(locs) {
            inner.set(key, loc);
        }
        Ok(())
    }
}

impl KeyValues for StateStore {
    fn put(&mut self, key: String, value: String) -> Result<bool, String> {
        let record = payload(&key, Some(&value));
        let mut inner = self.inner();
        let loc = inner.append_one(record)?;
        Ok(inner.set(key, loc))
    }

    fn delete(&mut self, key: &str) -> Result<bool, String> {
        let mut inner = self.inner();
        if !inner.index.contains_key(key) {
            return Ok(false);
        }
        let tombstone = inner.append_one(payload(key, None))?;
        inner.unset(key, tombstone);
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
                    until: None,
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
        std::fs::File::options()
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

    fn checkpoint(store: &StateStore, n: usize) {
        store
            .record(&Recovery::Checkpoint {
                position: (1, n),
                sessions: Sessions::default(),
            })
            .unwrap();
    }

    fn flip(path: &Path, at: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at as usize] ^= 0x10;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_damaged_byte_before_the_checkpoint_is_refused_after_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let synced_len = {
            let mut store = StateStore::open(dir.path()).unwrap();
            for k in 0..20 {
                store.put(format!("k{k}"), "v".repeat(100)).unwrap();
            }
            checkpoint(&store, 20);
            store.put("after".into(), "the checkpoint".into()).unwrap();
            let synced = store.inner().segments[&0].synced_len;
            synced
        };
        let segment = segment_path(dir.path(), 0);
        // After the synced length: a write the log replays; dropped with what follows.
        flip(&segment, synced_len + 30);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.count_keys(), 20);
        assert_eq!(store.get("after").unwrap(), None);
        drop(store);
        // Before it: those keys are not in the log any more.
        for at in [0, 30, synced_len / 2, synced_len - 1] {
            let copy = tempfile::tempdir().unwrap();
            for name in ["segment-0000000000000000.data", CHECKPOINT_FILE] {
                std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
            }
            flip(&segment_path(copy.path(), 0), at);
            let err = StateStore::open(copy.path()).err().expect("refused");
            assert!(err.contains("corrupt at byte"), "byte {at}: {err}");
        }
    }

    #[test]
    fn a_missing_segment_or_a_damaged_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = StateStore::open(dir.path()).unwrap();
            store.put("a".into(), "1".into()).unwrap();
            checkpoint(&store, 1);
        }
        let checkpoint_path = dir.path().join(CHECKPOINT_FILE);
        let good = std::fs::read(&checkpoint_path).unwrap();
        flip(&checkpoint_path, good.len() as u64 - 3);
        let err = StateStore::open(dir.path()).err().expect("refused");
        assert!(err.contains("corrupt"), "{err}");
        std::fs::write(&checkpoint_path, &good).unwrap();
        std::fs::remove_file(segment_path(dir.path(), 0)).unwrap();
        let err = StateStore::open(dir.path()).err().expect("refused");
        assert!(err.contains("lists is missing"), "{err}");
    }

    /// Power cuts, simulated: keys written, checkpoints taken (with segment rewrites: small
    /// segments), the machine dies at a seeded point and the power cut drops or tears what
    /// was not synced. The store must open, and its keys, with the writes after its recovery
    /// point replayed (as a node replays its log), must be exactly the keys written.
    /// `POWER_CUTS=N` runs N seeds (default 1,000).
    #[test]
    fn every_checkpointed_key_survives_power_cuts_at_random_points() {
        use omnipaxos_storage::files::sim::SimFiles;
        let seeds: u64 = std::env::var("POWER_CUTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let dir = Path::new("/node/state");
        for seed in 0..seeds {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut below = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut files = SimFiles::new();
            // Every write in order: (key, value or delete).
            let mut writes: Vec<(String, Option<String>)> = Vec::new();
            let open = |files: &SimFiles| {
                StateStore::open_with_segments(Arc::new(files.clone()), dir, 2048)
                    .unwrap_or_else(|e| panic!("seed {seed}: refused after a power cut: {e}"))
            };
            for _life in 0..2 {
                let mut store = open(&files);
                files.die_after(1 + below(300));
                loop {
                    let result = match below(10) {
                        0 => {
                            let position = (1, writes.len());
                            let sessions = Sessions::default();
                            store.record(&Recovery::Checkpoint { position, sessions })
                        }
                        1 => {
                            let key = format!("k{}", below(30));
                            writes.push((key.clone(), None));
                            store.delete(&key).map(|_| ())
                        }
                        _ => {
                            let key = format!("k{}", below(30));
                            let value =
                                format!("{}-{}", writes.len(), "v".repeat(below(300) as usize));
                            writes.push((key.clone(), Some(value.clone())));
                            store.put(key, value).map(|_| ())
                        }
                    };
                    if result.is_err() {
                        break;
                    }
                }
                drop(store);
                let files_after = files.power_cut(seed);
                let mut store = open(&files_after);
                let from = match store.recovery().unwrap() {
                    Some(Recovery::Checkpoint { position, .. }) => position.1,
                    _ => 0,
                };
                for (key, value) in &writes[from..] {
                    match value {
                        Some(v) => store.put(key.clone(), v.clone()).map(|_| ()),
                        None => store.delete(key).map(|_| ()),
                    }
                    .unwrap();
                }
                let mut expected = BTreeMap::new();
                for (key, value) in &writes {
                    match value {
                        Some(v) => expected.insert(key.clone(), v.clone()),
                        None => expected.remove(key),
                    };
                }
                assert_eq!(all(&store), expected, "seed {seed}");
                drop(store);
                // The next life starts from what is there now, checkpointed.
                writes = expected.into_iter().map(|(k, v)| (k, Some(v))).collect();
                files_after.die_after(u64::MAX);
                let store = open(&files_after);
                store
                    .record(&Recovery::Checkpoint {
                        position: (1, writes.len()),
                        sessions: Sessions::default(),
                    })
                    .unwrap();
                drop(store);
                files = files_after;
            }
        }
    }

    #[test]
    fn the_digest_depends_on_the_keys_and_values_only() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = StateStore::open(one.path()).unwrap();
        let b = StateStore::open(two.path()).unwrap();
        assert_eq!(a.digest(), 0);
        a.put("x".into(), "1".into()).unwrap();
        a.put("gone".into(), "soon".into()).unwrap();
        a.put("y".into(), "old".into()).unwrap();
        a.delete("gone").unwrap();
        a.put("y".into(), "2".into()).unwrap();
        b.put_all(vec![("y".into(), "2".into()), ("x".into(), "1".into())])
            .unwrap();
        assert_eq!(a.digest(), b.digest(), "same keys, other order and path");
        checkpoint(&a, 5);
        let reopened = a.digest();
        drop(a);
        let mut a = StateStore::open(one.path()).unwrap();
        assert_eq!(a.digest(), reopened, "rebuilt at open");
        a.put("y".into(), "3".into()).unwrap();
        assert_ne!(a.digest(), b.digest(), "one value differs");
        b.clear().unwrap();
        assert_eq!(b.digest(), 0);
    }
}
