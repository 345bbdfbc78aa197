//! [`JournalStorage`]: the log in memory, made durable by a journal of its writes on disk.
//!
//! Meant for servers that keep their log short (compacted often, with the application's state
//! kept elsewhere, as in `docs/large_state.md`): everything the store holds is in memory, and
//! its disk use is bounded by what it holds, however many writes went through it.
//!
//! Every write call is appended to the journal file as one record (CRC-checked) and synced
//! with one `fdatasync` before it returns, except a write of the decided index alone, which the
//! next write's sync carries (as [`crate::persistent_storage`] does by default; a crash of the
//! process loses nothing, a power cut can set the decided index back to an earlier synced
//! value, never below the compacted index, and it is learned again from the leader). When the
//! journal has grown to twice what the store holds (and at least
//! [`JournalStorageConfig::compact_at_bytes`]), it is replaced: the whole state is written as
//! one record into a new file, synced, and renamed over the old one.
//!
//! **Opening** reads the journal back. Records are [checksummed](crate::files::record) and
//! numbered; a damaged record is dropped as the torn tail of a write cut short only when it
//! can be one (it is the last, and it looks torn or was never waited for); anything else, and
//! a journal that is missing or empty in a directory that was created with one, makes `open`
//! fail with [`JournalStorageError::Corrupt`], naming the file and the offset: an acceptor
//! that forgot what it promised or accepted would break agreement, so the store refuses
//! rather than forgets (`docs/storage.md` says how to replace such a server).
//!
//! A directory is used by one process at a time (a lock file is held while the store is open).
//! The store runs on the operating system's files or on a simulated file system
//! ([`JournalStorageConfig::set_file_system`], for power-cut tests).

use crate::files::record::{self, Record, Rules, Verdict, WAITED};
use crate::files::{sealed, Corruption, FileError, FileSystem, StoredFile};
use crate::memory_storage::MemoryStorage;
use crate::persistent_storage::SyncObserver;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOURNAL: &str = "journal";
const REWRITTEN: &str = "journal.new";
/// A sealed file written once the journal exists: from then on, the journal must.
const CREATED: &str = "journal.format";
/// The payload of every journal's first record (number 0): what the rest is.
const FORMAT: &[u8] = b"omnipaxos_storage journal, format 1";
/// The journal's file grows by this much at a time (zeros that records are written into), so
/// its length is always a multiple of it: a crash never changes that, a file cut short does.
/// Writing into allocated space also spares most syncs a change of the file's size.
pub const ALLOCATION_STEP: u64 = 64 << 10;

/// Where a [`JournalStorage`] lives and when its journal is rewritten.
#[derive(Clone, Debug)]
pub struct JournalStorageConfig {
    /// The store's directory (created if missing).
    pub path: PathBuf,
    /// The journal is rewritten once it is this long and twice the state it holds.
    pub compact_at_bytes: u64,
    /// Sync a write of the decided index alone as well (default `false`: the next write's
    /// sync carries it).
    pub sync_decided_idx: bool,
    sync_observer: Option<SyncObserver>,
    files: Arc<dyn FileSystem>,
}

impl JournalStorageConfig {
    /// A store in directory `path`, rewritten from 16 MiB of journal on.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            compact_at_bytes: 16 << 20,
            sync_decided_idx: false,
            sync_observer: None,
            files: crate::files::os(),
        }
    }

    /// Runs the store on `files` instead of the operating system's file system (a
    /// [`crate::files::sim::SimFiles`] in power-cut tests).
    pub fn set_file_system(&mut self, files: Arc<dyn FileSystem>) {
        self.files = files;
    }

    /// Calls `observer` with how long each write's sync took (for latency metrics).
    pub fn set_sync_observer(&mut self, observer: impl Fn(Duration) + Send + Sync + 'static) {
        self.sync_observer = Some(SyncObserver(std::sync::Arc::new(observer)));
    }
}

/// Why a journal store failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalStorageError {
    /// Reading or writing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("journal record: {0}")]
    Codec(String),
    /// Another process holds the store's directory.
    #[error("{0}: in use by another process")]
    Locked(PathBuf),
    /// An earlier write failed half-way; the store refuses writes until it is reopened.
    #[error("an earlier write failed; reopen the store")]
    Failed,
    /// The journal is damaged, or missing where the directory says it must be: the store
    /// refuses to open rather than forget what it held.
    #[error("journal storage: {0}")]
    Corrupt(#[from] Corruption),
}

impl From<FileError> for JournalStorageError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Corrupt(c) => Self::Corrupt(c),
            FileError::Io { path, source } => Self::Io { path, source },
        }
    }
}

/// [`crate::files::retrying_transient`] for a write of a record.
fn retry_write(
    path: &Path,
    mut write: impl FnMut() -> Result<u64, JournalStorageError>,
) -> Result<u64, JournalStorageError> {
    let mut codec = None;
    let written = crate::files::retrying_transient(|| match write() {
        Ok(len) => Ok(len),
        Err(JournalStorageError::Io { source, .. }) => Err(source),
        Err(other) => {
            codec = Some(other);
            Err(std::io::Error::other("not an I/O error"))
        }
    });
    match (written, codec) {
        (_, Some(e)) => Err(e),
        (Ok(len), None) => Ok(len),
        (Err(source), None) => Err(io(path)(source)),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalStorageError + '_ {
    move |source| JournalStorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One write, as the journal records it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "T: Serialize + DeserializeOwned, T::Snapshot: Serialize + DeserializeOwned")]
enum Op<T: Entry> {
    AppendEntries(Vec<T>),
    AppendOnPrefix(usize, Vec<T>),
    SetPromise(Ballot),
    SetDecidedIndex(usize),
    SetAcceptedRound(Ballot),
    SetCompactedIdx(usize),
    Trim(usize),
    SetStopsign(Option<StopSign>),
    SetSnapshot(Option<T::Snapshot>),
}

/// [`Op`] borrowing what it holds, to write the whole state without copying it. The variants
/// are [`Op`]'s, in the same order, so that the journal reads them back as `Op`s.
#[derive(Serialize)]
#[serde(bound = "T: Serialize, T::Snapshot: Serialize")]
enum OpRef<'a, T: Entry> {
    AppendEntries(&'a [T]),
    #[allow(dead_code)]
    AppendOnPrefix(usize, &'a [T]),
    SetPromise(Ballot),
    SetDecidedIndex(usize),
    SetAcceptedRound(Ballot),
    SetCompactedIdx(usize),
    Trim(usize),
    SetStopsign(Option<&'a StopSign>),
    SetSnapshot(Option<&'a T::Snapshot>),
}

impl<T: Entry> From<StorageOp<T>> for Op<T> {
    fn from(op: StorageOp<T>) -> Self {
        match op {
            StorageOp::AppendEntry(e) => Op::AppendEntries(vec![e]),
            StorageOp::AppendEntries(es) => Op::AppendEntries(es),
            StorageOp::AppendOnPrefix(from, es) => Op::AppendOnPrefix(from, es),
            StorageOp::SetPromise(b) => Op::SetPromise(b),
            StorageOp::SetDecidedIndex(i) => Op::SetDecidedIndex(i),
            StorageOp::SetAcceptedRound(b) => Op::SetAcceptedRound(b),
            StorageOp::SetCompactedIdx(i) => Op::SetCompactedIdx(i),
            StorageOp::Trim(i) => Op::Trim(i),
            StorageOp::SetStopsign(s) => Op::SetStopsign(s),
            StorageOp::SetSnapshot(s) => Op::SetSnapshot(s),
        }
    }
}

impl<T: Entry> From<Op<T>> for StorageOp<T> {
    fn from(op: Op<T>) -> Self {
        match op {
            Op::AppendEntries(es) => StorageOp::AppendEntries(es),
            Op::AppendOnPrefix(from, es) => StorageOp::AppendOnPrefix(from, es),
            Op::SetPromise(b) => StorageOp::SetPromise(b),
            Op::SetDecidedIndex(i) => StorageOp::SetDecidedIndex(i),
            Op::SetAcceptedRound(b) => StorageOp::SetAcceptedRound(b),
            Op::SetCompactedIdx(i) => StorageOp::SetCompactedIdx(i),
            Op::Trim(i) => StorageOp::Trim(i),
            Op::SetStopsign(s) => StorageOp::SetStopsign(s),
            Op::SetSnapshot(s) => StorageOp::SetSnapshot(s),
        }
    }
}

/// Writes record number `seq` holding `value` at `offset` of `file` (payload first, straight
/// from the encoder, then the header that makes it valid) and returns its length. Nothing is
/// copied into a buffer of the record's size, so a large write costs no memory of its size.
fn write_record<V: Serialize + ?Sized>(
    file: &dyn StoredFile,
    at: (u64, u64),
    flags: u32,
    value: &V,
    path: &Path,
    limit: u64,
) -> Result<u64, JournalStorageError> {
    let (offset, seq) = at;
    let mut out = Checksummed {
        inner: std::io::BufWriter::with_capacity(
            256 << 10,
            At {
                file,
                offset: offset + record::HEADER as u64,
                limit,
            },
        ),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let encoded =
        bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard());
    encoded.map_err(|e| match e {
        bincode::error::EncodeError::Io { inner, .. } => io(path)(inner),
        other => JournalStorageError::Codec(other.to_string()),
    })?;
    out.inner.flush().map_err(io(path))?;
    let len = u32::try_from(out.len)
        .map_err(|_| JournalStorageError::Codec("a record above 4 GiB".into()))?;
    let header = record::header_for(seq, flags, len, out.crc.clone().finalize());
    file.write_at(&header, offset).map_err(io(path))?;
    Ok(record::HEADER as u64 + u64::from(len))
}

/// The error of a record that does not fit in the journal's allocated space.
#[derive(Debug, thiserror::Error)]
#[error("a record past the journal's allocated space")]
struct PastAllocation;

fn is_past_allocation(e: &JournalStorageError) -> bool {
    matches!(e, JournalStorageError::Io { source, .. }
        if source.get_ref().is_some_and(|inner| inner.is::<PastAllocation>()))
}

/// Bytes of `value` encoded.
fn encoded_len<V: Serialize + ?Sized>(value: &V) -> Result<u64, JournalStorageError> {
    let mut counted = Checksummed {
        inner: std::io::sink(),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    bincode::serde::encode_into_std_write(value, &mut counted, bincode::config::standard())
        .map_err(|e| JournalStorageError::Codec(e.to_string()))?;
    Ok(counted.len as u64)
}

/// `len` rounded up to a whole number of allocation steps, with one step to spare.
fn allocation_for(len: u64) -> u64 {
    (len / ALLOCATION_STEP + 2) * ALLOCATION_STEP
}

/// Writes at a position of a file, moving on as it goes, never past `limit`.
struct At<'a> {
    file: &'a dyn StoredFile,
    offset: u64,
    limit: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.offset + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(PastAllocation));
        }
        self.file.write_at(buf, self.offset)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The journal's writes, read back from its bytes, and where its last whole record ends
/// (`torn`: a torn record follows, to be cut off).
struct ReadBack<T: Entry> {
    writes: Vec<Vec<Op<T>>>,
    end: u64,
    torn: bool,
}

/// Reads the journal at `path` (see the module's documentation).
fn read_journal<T>(bytes: &[u8], path: &Path) -> Result<ReadBack<T>, Corruption>
where
    T: Entry + Serialize + DeserializeOwned,
{
    let next = Cell::new(0u64);
    let log = record::read_log(
        bytes,
        Rules {
            belongs: |r: &Record<'_>| {
                if r.seq != next.get() {
                    let reason = format!("record {} where record {} belongs", r.seq, next.get());
                    return Verdict::Corrupt(reason);
                }
                next.set(r.seq + 1);
                Verdict::Take
            },
            later: |r: &Record<'_>| r.seq > next.get(),
            unsynced_from: None,
        },
    )
    .map_err(|damage| Corruption::new(path, damage.offset, damage.reason))?;
    let mut records = log.records.iter();
    match records.next() {
        Some(first) if first.payload == FORMAT => {}
        Some(first) => {
            return Err(Corruption::new(
                path,
                first.offset,
                "not a journal of this release's format",
            ))
        }
        // Nothing whole: a journal whose creation a crash cut short (the caller knows whether
        // it was created).
        None => {
            return Ok(ReadBack {
                writes: Vec::new(),
                end: 0,
                torn: log.torn,
            })
        }
    }
    let mut writes = Vec::with_capacity(log.records.len());
    for r in records {
        let decoded = bincode::serde::decode_from_slice(r.payload, bincode::config::standard());
        let Ok((ops, _)) = decoded else {
            return Err(Corruption::new(
                path,
                r.offset,
                "a record that does not decode",
            ));
        };
        writes.push(ops);
    }
    Ok(ReadBack {
        writes,
        end: log.end,
        torn: log.torn,
    })
}

/// A writer that counts and checksums what passes through it.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: usize,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The log and the protocol state in memory, made durable by a journal on disk (see the
/// module's documentation).
pub struct JournalStorage<T: Entry> {
    state: MemoryStorage<T>,
    config: JournalStorageConfig,
    journal: Arc<dyn StoredFile>,
    journal_bytes: u64,
    /// The journal file's length: a multiple of [`ALLOCATION_STEP`], zeros after the records.
    allocated: u64,
    /// The next record's number.
    next_seq: u64,
    /// The size of the state when the journal was last rewritten.
    rewritten_bytes: u64,
    /// After a rewrite that could not be written: the journal size at which to try again.
    rewrite_retry_at: Option<u64>,
    /// Held while the store is open.
    _lock: Box<dyn Send + Sync>,
    failed: bool,
}

impl<T> JournalStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
{
    /// Opens the store in `config.path` (creating it if missing), reading its journal back.
    /// Fails with [`JournalStorageError::Corrupt`] rather than open with less than was
    /// written (see the module's documentation).
    pub fn open(config: JournalStorageConfig) -> Result<Self, JournalStorageError> {
        let files = config.files.clone();
        let dir = config.path.clone();
        files.create_dir_all(&dir).map_err(io(&dir))?;
        let lock = files.lock_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => JournalStorageError::Locked(dir.clone()),
            _ => io(&dir)(e),
        })?;
        // A rewrite that did not reach its rename left a file nobody needs.
        match files.remove_file(&dir.join(REWRITTEN)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dir)(e)),
            _ => {}
        }
        let path = dir.join(JOURNAL);
        let created = sealed::read(&*files, &dir.join(CREATED))?;
        let bytes = match files.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let read_back = read_journal::<T>(&bytes, &path)?;
        let has_journal = read_back.end > 0;
        let len = bytes.len() as u64;
        if created.is_some() && len % ALLOCATION_STEP != 0 {
            let reason = format!(
                "{len} bytes, not a multiple of the journal's allocation step \
                 ({ALLOCATION_STEP}): the file was cut short"
            );
            return Err(Corruption::new(&path, len, reason).into());
        }
        if created.is_some() && !has_journal {
            let reason = match bytes.is_empty() {
                true => "the journal is missing or empty, in a directory created with one",
                false => "the journal holds no whole record, in a directory created with one",
            };
            return Err(Corruption::new(&path, 0, reason).into());
        }
        let mut state = MemoryStorage::default();
        let mut next_seq = 1;
        for ops in read_back.writes {
            let ops: Vec<StorageOp<T>> = ops.into_iter().map(Into::into).collect();
            let _ = state.write_atomically(ops);
            next_seq += 1;
        }
        let journal = files.open(&path, true).map_err(io(&path))?;
        let mut end = read_back.end;
        let mut allocated = len;
        if read_back.torn {
            // The tail of a write cut short by a crash: it never returned, so it never
            // happened. Zeros in its place (the file keeps its length).
            let zeros = vec![0; (len - end) as usize];
            journal
                .write_at(&zeros, end)
                .and_then(|()| journal.sync_data())
                .map_err(io(&path))?;
        }
        if !has_journal {
            // A new store: the format record first (in allocated space), durably named, then
            // the marker that says the journal exists from now on.
            let format = record::encode(0, WAITED, FORMAT);
            allocated = allocation_for(format.len() as u64);
            journal
                .set_len(0)
                .and_then(|()| journal.set_len(allocated))
                .and_then(|()| journal.write_at(&format, 0))
                .and_then(|()| journal.sync_data())
                .map_err(io(&path))?;
            end = format.len() as u64;
            files.sync_dir(&dir).map_err(io(&dir))?;
        }
        if created.is_none() {
            sealed::write(&*files, &dir.join(CREATED), FORMAT)?;
        }
        let store = Self {
            state,
            config,
            journal,
            journal_bytes: end,
            allocated,
            next_seq,
            rewritten_bytes: 0,
            rewrite_retry_at: None,
            _lock: lock,
            failed: false,
        };
        Ok(store)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Bytes of the journal file.
    pub fn journal_bytes(&self) -> u64 {
        self.journal_bytes
    }

    /// Replaces the journal by one record of the whole state: the ops that rebuild it from
    /// nothing, encoded straight into a new file (no copy of the log in memory), synced, and
    /// renamed over the old journal.
    ///
    /// A failure before the rename leaves the old journal as it was, complete: it is not a
    /// failure of the store (a full disk or no file descriptor left, e.g. under a connection
    /// flood, passes), and the rewrite is tried again once another quarter of
    /// `compact_at_bytes` was written.
    /// A failure from the rename on leaves the journal's place unknown: the store fails.
    fn rewrite(&mut self) -> Result<(), JournalStorageError> {
        let files = self.config.files.clone();
        let dir = &self.config.path;
        let (file, record_len) = match self.write_rewritten() {
            Ok(done) => done,
            Err(_) => {
                let _ = files.remove_file(&dir.join(REWRITTEN));
                let step = (self.config.compact_at_bytes / 4).max(4096);
                self.rewrite_retry_at = Some(self.journal_bytes + step);
                return Ok(());
            }
        };
        sealed::install(&*files, &dir.join(REWRITTEN), &dir.join(JOURNAL))?;
        self.journal = file;
        self.journal_bytes = record_len;
        self.allocated = allocation_for(record_len);
        self.next_seq = 2;
        self.rewritten_bytes = record_len;
        self.rewrite_retry_at = None;
        Ok(())
    }

    /// The rewritten journal (its format record, then the state as record 1), written and
    /// synced under its temporary name.
    fn write_rewritten(&self) -> Result<(Arc<dyn StoredFile>, u64), JournalStorageError> {
        let new_path = self.config.path.join(REWRITTEN);
        let s = &self.state;
        let (snapshot, stopsign) = (s.snapshot_ref(), s.stopsign_ref());
        let mut ops = vec![
            OpRef::Trim(s.log_start()),
            OpRef::AppendEntries(s.held()),
            OpRef::SetCompactedIdx(s.get_compacted_idx().unwrap_or_default()),
            OpRef::SetSnapshot(snapshot),
            OpRef::SetDecidedIndex(s.get_decided_idx().unwrap_or_default()),
            OpRef::SetStopsign(stopsign),
        ];
        if let Ok(Some(b)) = s.get_promise() {
            ops.push(OpRef::SetPromise(b));
        }
        if let Ok(Some(b)) = s.get_accepted_round() {
            ops.push(OpRef::SetAcceptedRound(b));
        }
        let file = self
            .config
            .files
            .open(&new_path, true)
            .map_err(io(&new_path))?;
        let format = record::encode(0, WAITED, FORMAT);
        let total = format.len() as u64 + record::HEADER as u64 + encoded_len(&ops)?;
        let allocated = allocation_for(total);
        file.set_len(0)
            .and_then(|()| file.set_len(allocated))
            .and_then(|()| file.write_at(&format, 0))
            .map_err(io(&new_path))?;
        let at = (format.len() as u64, 1);
        let state_len = write_record(&*file, at, WAITED, &ops, &new_path, allocated)?;
        file.sync_data().map_err(io(&new_path))?;
        Ok((file, format.len() as u64 + state_len))
    }

    /// Makes room for `len` more bytes after the records: the file grows by whole allocation
    /// steps (made durable by the next write's sync, which needs the new length anyway).
    fn allocate(&mut self, len: u64) -> Result<(), JournalStorageError> {
        if self.journal_bytes + len <= self.allocated {
            return Ok(());
        }
        let path = self.config.path.join(JOURNAL);
        let grown = allocation_for(self.journal_bytes + len);
        crate::files::retrying_transient(|| self.journal.set_len(grown)).map_err(io(&path))?;
        self.allocated = grown;
        Ok(())
    }

    fn write(&mut self, ops: Vec<StorageOp<T>>) -> Result<(), JournalStorageError> {
        if self.failed {
            return Err(JournalStorageError::Failed);
        }
        let decided_only = ops
            .iter()
            .all(|op| matches!(op, StorageOp::SetDecidedIndex(_)));
        let ops: Vec<Op<T>> = ops.into_iter().map(Into::into).collect();
        let path = self.config.path.join(JOURNAL);
        let started = Instant::now();
        let wait = !decided_only || self.config.sync_decided_idx;
        let flags = if wait { WAITED } else { 0 };
        let at = (self.journal_bytes, self.next_seq);
        // Nothing is valid until the header is written last: a write that failed for a reason
        // that passes (a full disk that frees up, no descriptor left) is simply made again, and
        // one that does not fit is made again once the file has room for it.
        let written = self.allocate(record::HEADER as u64).and_then(|()| {
            let first = retry_write(&path, || {
                write_record(&*self.journal, at, flags, &ops, &path, self.allocated)
            });
            match first {
                Err(e) if is_past_allocation(&e) => {
                    self.allocate(record::HEADER as u64 + encoded_len(&ops)?)?;
                    retry_write(&path, || {
                        write_record(&*self.journal, at, flags, &ops, &path, self.allocated)
                    })
                }
                other => other,
            }
        });
        let synced = written.and_then(|len| {
            if wait {
                self.journal.sync_data().map_err(io(&path))?;
                if let Some(observer) = &self.config.sync_observer {
                    (observer.0)(started.elapsed());
                }
            }
            Ok(len)
        });
        match synced {
            Ok(len) => {
                self.journal_bytes += len;
                self.next_seq += 1;
            }
            // Nothing valid was written (the header comes last): the next write goes to the
            // same place.
            Err(e @ JournalStorageError::Codec(_)) => return Err(e),
            Err(e) => {
                // A write or sync failed: what the file holds now is unknown.
                self.failed = true;
                return Err(e);
            }
        }
        let ops: Vec<StorageOp<T>> = ops.into_iter().map(Into::into).collect();
        let _ = self.state.write_atomically(ops);
        let threshold = self.config.compact_at_bytes.max(2 * self.rewritten_bytes);
        let threshold = threshold.max(self.rewrite_retry_at.unwrap_or(0));
        if self.journal_bytes >= threshold {
            // The write itself is durable. A rewrite that could not be written left the old
            // journal in place (and returns Ok); one that failed from its rename on did not.
            if let Err(e) = self.rewrite() {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }
}

impl<T> Storage<T> for JournalStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        Ok(self.write(ops)?)
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::AppendEntry(entry)])
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::AppendEntries(entries)])
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::AppendOnPrefix(from_idx, entries)])
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::SetPromise(n_prom)])
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::SetDecidedIndex(ld)])
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.state.get_decided_idx()
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::SetAcceptedRound(na)])
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.state.get_accepted_round()
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        self.state.get_entries(from, to)
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        self.state.get_log_len()
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        self.state.get_suffix(from)
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.state.get_promise()
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::SetStopsign(s)])
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.state.get_stopsign()
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::Trim(idx)])
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::SetCompactedIdx(idx)])
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.state.get_compacted_idx()
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        self.write_atomically(vec![StorageOp::SetSnapshot(snapshot)])
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        self.state.get_snapshot()
    }
}
