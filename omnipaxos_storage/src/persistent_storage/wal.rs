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
//! A record: magic, payload length, cycle, sequence number within the cycle, CRC-32 of
//! everything else, then the payload. Reading stops at the first record that is torn, has
//! another cycle or skips a sequence number: what follows is an older cycle's leftovers.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The log's file in the store's directory.
pub(super) const WAL_FILE: &str = "write_ahead.log";
/// The log's size: a checkpoint is taken when the next record does not fit.
pub(super) const WAL_CAPACITY: u64 = 16 << 20;

const MAGIC: u32 = 0x4f50_574c;
const HEADER: usize = 4 + 4 + 8 + 8 + 4;

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
    pub(super) fn open(dir: &Path, capacity: u64) -> io::Result<(Self, Vec<Vec<u8>>)> {
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
        let (cycle, payloads) = read_cycle(&mut file)?;
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

    /// Starts cycle `cycle` (above every earlier one) at the start of the file: called once
    /// everything logged before is in sled's durable state.
    pub(super) fn start_cycle(&mut self, cycle: u64) {
        self.cycle = cycle;
        self.offset = 0;
        self.seq = 0;
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
        let record = encode_record(self.cycle, self.seq, payload);
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

fn checksum(cycle: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&MAGIC.to_le_bytes());
    hasher.update(&(payload.len() as u32).to_le_bytes());
    hasher.update(&cycle.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode_record(cycle: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&MAGIC.to_le_bytes());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&cycle.to_le_bytes());
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(&checksum(cycle, seq, payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// The cycle of the record at the start of the file (0 if there is none) and the payloads of
/// that cycle's unbroken run of records.
fn read_cycle(file: &mut File) -> io::Result<(u64, Vec<Vec<u8>>)> {
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut payloads = Vec::new();
    let mut cycle = None;
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= len {
        if file.read_exact(&mut header).is_err() {
            break;
        }
        let field = |at: usize, n: usize| &header[at..at + n];
        let u32_at = |at| u32::from_le_bytes(field(at, 4).try_into().expect("4 bytes"));
        let u64_at = |at| u64::from_le_bytes(field(at, 8).try_into().expect("8 bytes"));
        let (magic, size, rec_cycle, seq, crc) =
            (u32_at(0), u32_at(4), u64_at(8), u64_at(16), u32_at(24));
        let expected_seq = payloads.len() as u64;
        if magic != MAGIC
            || offset + (HEADER as u64) + u64::from(size) > len
            || cycle.is_some_and(|c| c != rec_cycle)
            || seq != expected_seq
        {
            break;
        }
        let mut payload = vec![0u8; size as usize];
        if file.read_exact(&mut payload).is_err() || checksum(rec_cycle, seq, &payload) != crc {
            break;
        }
        cycle = Some(rec_cycle);
        payloads.push(payload);
        offset += (HEADER + size as usize) as u64;
    }
    Ok((cycle.unwrap_or(0), payloads))
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
        wal.start_cycle(1);
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
        wal.start_cycle(1);
        for i in 0..10u8 {
            wal.append(&[i; 20], true).unwrap();
        }
        wal.start_cycle(2);
        wal.append(b"new", true).unwrap();
        wal.append(b"newer", true).unwrap();
        drop(wal);
        let (wal, records) = reopen(dir.path());
        assert_eq!(wal.cycle(), 2);
        assert_eq!(records, vec![b"new".to_vec(), b"newer".to_vec()]);
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path());
        wal.start_cycle(3);
        wal.append(b"first", true).unwrap();
        wal.append(b"second", true).unwrap();
        let torn_at = wal.offset - 2;
        drop(wal);
        // The last bytes of the second record never reached the disk.
        let file = OpenOptions::new()
            .write(true)
            .open(Wal::path(dir.path()))
            .unwrap();
        let mut file = file;
        file.seek(SeekFrom::Start(torn_at)).unwrap();
        file.write_all(&[0xff, 0xff]).unwrap();
        drop(file);
        let (_, records) = reopen(dir.path());
        assert_eq!(records, vec![b"first".to_vec()]);
    }

    #[test]
    fn a_record_that_does_not_fit_is_known_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path());
        wal.start_cycle(1);
        assert!(wal.can_ever_fit(4096 - HEADER));
        assert!(!wal.can_ever_fit(4096 - HEADER + 1));
        wal.append(&[0u8; 2000], true).unwrap();
        assert!(wal.fits(4096 - HEADER - 2000 - HEADER));
        assert!(!wal.fits(4096 - HEADER - 2000 - HEADER + 1));
    }
}
