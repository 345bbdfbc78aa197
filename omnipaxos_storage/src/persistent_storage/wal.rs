//! The write-ahead log: how a write becomes durable with one device wait.
//!
//! sled makes a flushed write durable with a `pwrite`, a `sync_file_range` and (ours, for power
//! safety) an `fdatasync`: two waits for the device. With the log, a write call is first
//! appended here as one record (the sled changes it makes) with one `pwrite` and one
//! `fdatasync` into a preallocated file, and only then applied to sled, unflushed. sled writes
//! its state to disk in the background; a *checkpoint* (sled's flush and an `fdatasync` of its
//! files) makes everything logged so far part of sled's durable state, and the log starts over
//! at offset 0 in a new *cycle*.
//!
//! At open, the records of the current cycle are applied to sled again, in order. A record
//! sets keys to values (or removes them), so applying it again is harmless, and since a change
//! reaches sled only after its record is durable, sled's state is always a prefix of the logged
//! changes: replaying the cycle from its start ends in exactly the state after its last record.
//!
//! A record is a [checksummed record](crate::files::record) numbered by its cycle (high 32
//! bits) and its place in the cycle. Reading stops at the first record of another cycle (the
//! file is emptied when a cycle starts, so none should follow) or at a torn last write; a
//! damaged record that is not one fails the open with [`Corruption`]. An unsynced write may
//! have been torn in several places, so its sectors must read as zeros where it was not
//! written: starting a cycle empties the file (and allocates it again) before anything is
//! written to it.

use crate::files::record::{self, Record, Rules, Verdict, WAITED};
use crate::files::Corruption;
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The log's file in the store's directory.
pub(super) const WAL_FILE: &str = "write_ahead.log";
/// The log's size: a checkpoint is taken when the next record does not fit.
pub(super) const WAL_CAPACITY: u64 = 16 << 20;

const HEADER: usize = record::HEADER;

/// Why the log could not be opened.
#[derive(Debug)]
pub(super) enum WalOpenError {
    Io(io::Error),
    Corrupt(Corruption),
}

impl From<io::Error> for WalOpenError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

pub(super) struct Wal {
    file: File,
    /// Where the next record goes.
    offset: u64,
    cycle: u64,
    /// The next record's sequence number in the cycle.
    seq: u64,
    capacity: u64,
}

impl Wal {
    /// Opens (or creates, preallocated and named durably) the log in `dir`; returns it with the
    /// payloads of its current cycle, oldest first, to be applied again. The log writes nothing
    /// until [`Wal::start_cycle`].
    pub(super) fn open(dir: &Path, capacity: u64) -> Result<(Self, Vec<Vec<u8>>), WalOpenError> {
        let path = dir.join(WAL_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if !existed {
            // Writing inside allocated space spares every sync a change of the file's size.
            let _ = fs2::FileExt::allocate(&file, capacity);
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let (cycle, payloads) = read_cycle(&mut file, &path)?;
        let wal = Self {
            file,
            offset: 0,
            cycle,
            seq: 0,
            capacity,
        };
        Ok((wal, payloads))
    }

    /// The cycle whose records are in the log.
    pub(super) fn cycle(&self) -> u64 {
        self.cycle
    }

    /// Starts cycle `cycle` (above every earlier one) at the start of an emptied file: called
    /// once everything logged before is in sled's durable state.
    pub(super) fn start_cycle(&mut self, cycle: u64) -> io::Result<()> {
        // A torn write must read as zeros where it was not written, not as the older cycle.
        self.file.set_len(0)?;
        let _ = fs2::FileExt::allocate(&self.file, self.capacity);
        self.file.sync_all()?;
        self.cycle = cycle;
        self.offset = 0;
        self.seq = 0;
        Ok(())
    }

    /// Whether a record of `len` payload bytes fits after the current one.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.offset + (HEADER + len) as u64 <= self.capacity
    }

    /// Whether a record of `len` payload bytes fits in an empty log.
    pub(super) fn can_ever_fit(&self, len: usize) -> bool {
        (HEADER + len) as u64 <= self.capacity
    }

    /// Appends one record; with `wait`, returns once it (and every record before it) is on the
    /// device. Without, it is in the file (a crash of the process keeps it) and reaches the
    /// device with the next waited-for record: records are only ever added at the end, so one
    /// `fdatasync` covers all of them.
    pub(super) fn append(&mut self, payload: &[u8], wait: bool) -> io::Result<()> {
        let flags = if wait { WAITED } else { 0 };
        let record = record::encode(numbered(self.cycle, self.seq), flags, payload);
        self.file.seek(SeekFrom::Start(self.offset))?;
        self.file.write_all(&record)?;
        if wait {
            self.file.sync_data()?;
        }
        self.offset += record.len() as u64;
        self.seq += 1;
        Ok(())
    }

    /// The log's path in `dir`.
    pub(super) fn path(dir: &Path) -> PathBuf {
        dir.join(WAL_FILE)
    }
}

/// A record's number: its cycle, and its place in the cycle.
fn numbered(cycle: u64, seq: u64) -> u64 {
    (cycle << 32) | (seq & 0xffff_ffff)
}

/// The cycle of the record at the start of the file (0 if there is none) and the payloads of
/// that cycle's run of records.
fn read_cycle(file: &mut File, path: &Path) -> Result<(u64, Vec<Vec<u8>>), WalOpenError> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let cycle = Cell::new(None::<u64>);
    let next = Cell::new(0u64);
    let log = record::read_log(
        &bytes,
        Rules {
            belongs: |r: &Record<'_>| {
                let (c, seq) = (r.seq >> 32, r.seq & 0xffff_ffff);
                match cycle.get() {
                    Some(current) if current != c => return Verdict::End,
                    _ => cycle.set(Some(c)),
                }
                if seq != next.get() {
                    let reason = format!("record {seq} of cycle {c} where {} belongs", next.get());
                    return Verdict::Corrupt(reason);
                }
                next.set(seq + 1);
                Verdict::Take
            },
            later: |r: &Record<'_>| {
                let (c, seq) = (r.seq >> 32, r.seq & 0xffff_ffff);
                cycle.get().map_or(true, |current| current == c) && seq > next.get()
            },
            unsynced_from: None,
        },
    )
    .map_err(|damage| WalOpenError::Corrupt(Corruption::new(path, damage.offset, damage.reason)))?;
    let payloads = log.records.iter().map(|r| r.payload.to_vec()).collect();
    Ok((cycle.get().unwrap_or(0), payloads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(dir: &Path) -> (Wal, Vec<Vec<u8>>) {
        Wal::open(dir, 4096).unwrap()
    }

    #[test]
    fn records_of_the_current_cycle_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, old) = reopen(dir.path());
        assert!(old.is_empty());
        wal.start_cycle(1).unwrap();
        for i in 0..10u8 {
            wal.append(&[i; 7], true).unwrap();
        }
        drop(wal);
        let (wal, records) = reopen(dir.path());
        assert_eq!(wal.cycle(), 1);
        assert_eq!(records, (0..10u8).map(|i| vec![i; 7]).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_cycle_hides_the_older_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path());
        wal.start_cycle(1).unwrap();
        for i in 0..10u8 {
            wal.append(&[i; 20], true).unwrap();
        }
        wal.start_cycle(2).unwrap();
        wal.append(b"new", true).unwrap();
        wal.append(b"newer", true).unwrap();
        drop(wal);
        let (wal, records) = reopen(dir.path());
        assert_eq!(wal.cycle(), 2);
        assert_eq!(records, vec![b"new".to_vec(), b"newer".to_vec()]);
    }

    /// Overwrites the last `n` bytes of the log's records with `byte`.
    fn overwrite_tail(dir: &Path, end: u64, n: u64, byte: u8) {
        let mut file = OpenOptions::new().write(true).open(Wal::path(dir)).unwrap();
        file.seek(SeekFrom::Start(end - n)).unwrap();
        file.write_all(&vec![byte; n as usize]).unwrap();
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path());
        wal.start_cycle(3).unwrap();
        wal.append(b"first", true).unwrap();
        wal.append(&[7; 1000], true).unwrap();
        let end = wal.offset;
        drop(wal);
        // The second record's last sector never reached the disk.
        overwrite_tail(dir.path(), end, end - 1024, 0);
        let (_, records) = reopen(dir.path());
        assert_eq!(records, vec![b"first".to_vec()]);
    }

    #[test]
    fn a_flipped_byte_in_a_record_is_refused() {
        for (which, n) in [("the last record", 2), ("the first record", 30 + 6)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = reopen(dir.path());
            wal.start_cycle(3).unwrap();
            wal.append(b"first!", true).unwrap();
            wal.append(b"second", true).unwrap();
            wal.append(b"third.", true).unwrap();
            let end = wal.offset;
            drop(wal);
            overwrite_tail(dir.path(), end - if n > 2 { 30 } else { 0 }, 1, 0x55);
            match Wal::open(dir.path(), 4096) {
                Err(WalOpenError::Corrupt(c)) => assert!(c.offset < end, "{which}: {c}"),
                Err(WalOpenError::Io(e)) => panic!("{which}: {e}"),
                Ok((_, records)) => panic!("{which}: opened with {} records", records.len()),
            }
        }
    }

    #[test]
    fn a_record_that_does_not_fit_is_known_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path());
        wal.start_cycle(1).unwrap();
        assert!(wal.can_ever_fit(4096 - HEADER));
        assert!(!wal.can_ever_fit(4096 - HEADER + 1));
        wal.append(&[0u8; 2000], true).unwrap();
        assert!(wal.fits(4096 - HEADER - 2000 - HEADER));
        assert!(!wal.fits(4096 - HEADER - 2000 - HEADER + 1));
    }
}
