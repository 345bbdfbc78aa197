//! `JournalStorage`: a write cut short by a crash is dropped at reopen and everything before it
//! kept; the journal stays bounded by what the store holds however many writes go through it;
//! a second process cannot open the same directory.

mod common;
use common::*;
use omnipaxos::storage::{Storage, StorageOp};
use omnipaxos_storage::journal_storage::{
    JournalStorage, JournalStorageConfig, JournalStorageError, ALLOCATION_STEP,
};

fn open(path: &std::path::Path) -> JournalStorage<E> {
    JournalStorage::open(JournalStorageConfig::with_path(path)).unwrap()
}

#[test]
fn a_write_torn_by_a_crash_is_dropped_and_the_writes_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let end = {
        let mut s = open(dir.path());
        s.append_entries(es(0..5)).unwrap();
        s.set_decided_idx(3).unwrap();
        s.append_entries(es(5..600)).unwrap();
        s.journal_bytes() as usize
    };
    // The last sector of the last append never reached the disk.
    let journal = dir.path().join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let sector = (end - 1) / 512 * 512;
    bytes[sector..end].fill(0);
    std::fs::write(&journal, bytes).unwrap();
    let mut s = open(dir.path());
    assert_eq!(s.get_log_len().unwrap(), 5, "the torn append is gone");
    assert_eq!(s.get_decided_idx().unwrap(), 3);
    s.append_entry(E(42)).unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        s.get_entries(5, 6).unwrap(),
        vec![E(42)],
        "writes after the tear stay"
    );
}

#[test]
fn the_journal_stays_bounded_by_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = JournalStorageConfig::with_path(dir.path());
    config.compact_at_bytes = 64 << 10;
    let mut s = JournalStorage::<E>::open(config.clone()).unwrap();
    let mut largest = 0;
    for round in 0..400u64 {
        let first = round * 100;
        s.append_entries(es(first..first + 100)).unwrap();
        s.set_decided_idx(first as usize + 100).unwrap();
        // Keep the last 200 entries, as a server that compacts often does.
        if first >= 200 {
            s.write_atomically(vec![
                StorageOp::Trim(first as usize - 100),
                StorageOp::SetCompactedIdx(first as usize - 100),
                StorageOp::SetSnapshot(Some(Sum(first))),
            ])
            .unwrap();
        }
        largest = largest.max(s.journal_bytes());
    }
    assert!(
        largest <= config.compact_at_bytes + 4096,
        "{largest} bytes of journal for 40,000 writes"
    );
    let file = std::fs::metadata(dir.path().join("journal")).unwrap().len();
    assert_eq!(file % ALLOCATION_STEP, 0, "the file grows by whole steps");
    assert!(file >= s.journal_bytes() && file <= s.journal_bytes() + 2 * ALLOCATION_STEP);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.get_compacted_idx().unwrap(), 39_800);
    assert_eq!(
        s.get_log_len().unwrap(),
        200,
        "the entries after the compacted prefix"
    );
    assert_eq!(s.get_entries(39_950, 39_951).unwrap(), vec![E(39_950)]);
    assert_eq!(s.get_snapshot().unwrap(), Some(Sum(39_900)));
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = JournalStorage::<E>::open(JournalStorageConfig::with_path(dir.path()));
    assert!(matches!(second, Err(JournalStorageError::Locked(_))));
}

#[test]
fn a_rewrite_that_cannot_be_written_leaves_the_store_working_and_is_tried_again() {
    // What a node under a connection flood meets (no file descriptor left for the new
    // journal), stood in for by a directory where the new journal's file would go.
    let dir = tempfile::tempdir().unwrap();
    let mut config = JournalStorageConfig::with_path(dir.path());
    config.compact_at_bytes = 16 << 10;
    let mut s = JournalStorage::<E>::open(config).unwrap();
    let blocker = dir.path().join("journal.new");
    std::fs::create_dir(&blocker).unwrap();
    let mut written = 0u64;
    while s.journal_bytes() < 64 << 10 {
        s.append_entries(es(written..written + 50)).unwrap();
        written += 50;
    }
    assert!(
        s.get_log_len().unwrap() as u64 == written,
        "every write was taken"
    );
    // The obstacle goes; a later write rewrites the journal (it shrinks to one record).
    std::fs::remove_dir(&blocker).unwrap();
    let before = s.journal_bytes();
    let mut shrunk = false;
    for _ in 0..400 {
        s.write_atomically(vec![
            StorageOp::SetDecidedIndex(written as usize),
            StorageOp::Trim(written as usize - 10),
        ])
        .unwrap();
        s.append_entries(es(written..written + 50)).unwrap();
        written += 50;
        if s.journal_bytes() < before {
            shrunk = true;
            break;
        }
    }
    assert!(shrunk, "the rewrite was tried again");
    let (len, decided) = (s.get_log_len().unwrap(), s.get_decided_idx().unwrap());
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        (s.get_log_len().unwrap(), s.get_decided_idx().unwrap()),
        (len, decided),
        "nothing was lost"
    );
}

/// The files of a journal store in `dir`, on `files`.
fn open_on(
    dir: &std::path::Path,
    files: std::sync::Arc<dyn omnipaxos_storage::files::FileSystem>,
) -> Result<JournalStorage<E>, JournalStorageError> {
    let mut config = JournalStorageConfig::with_path(dir);
    config.set_file_system(files);
    JournalStorage::open(config)
}

#[test]
fn no_file_descriptor_left_for_a_while_is_waited_out_not_a_failure() {
    use omnipaxos_storage::files::{faulty::FaultyFiles, os};
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    const EMFILE: i32 = 24;
    let files = std::sync::Arc::new(FaultyFiles::failing_transiently(os(), EMFILE, 5));
    let mut s = open_on(dir.path(), files).unwrap();
    s.append_entries(es(0..10)).unwrap();
    s.append_entry(E(10)).unwrap();
    drop(s);
    assert_eq!(
        open(dir.path()).get_log_len().unwrap(),
        11,
        "both writes, once each"
    );
}

#[test]
fn a_damaged_or_cut_journal_is_refused_with_the_file_and_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ends: Vec<u64> = {
        let mut s = open(dir.path());
        let mut ends = vec![s.journal_bytes()];
        for i in 0..5u64 {
            s.append_entries(es(i * 100..i * 100 + 100)).unwrap();
            ends.push(s.journal_bytes());
        }
        ends
    };
    let journal = dir.path().join("journal");
    let good = std::fs::read(&journal).unwrap();
    let middle = ends[2] as usize;
    let last = ends[4] as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a flipped byte in a middle record's header",
            flip(&good, middle + 2),
        ),
        (
            "a flipped byte in a middle record's payload",
            flip(&good, middle + 60),
        ),
        (
            "a flipped byte in the last record's header",
            flip(&good, last + 9),
        ),
        (
            "a flipped byte in the last record's payload",
            flip(&good, last + 100),
        ),
        (
            "the file cut inside a middle record",
            good[..middle + 50].to_vec(),
        ),
        (
            "the file cut inside the last record",
            good[..last + 50].to_vec(),
        ),
        ("an empty file", Vec::new()),
    ];
    for (case, bytes) in cases {
        std::fs::write(&journal, &bytes).unwrap();
        match JournalStorage::<E>::open(JournalStorageConfig::with_path(dir.path())) {
            Err(JournalStorageError::Corrupt(c)) => {
                assert!(c.path.ends_with("journal"), "{case}: {c}");
            }
            Err(e) => panic!("{case}: not a corruption error: {e}"),
            Ok(s) => panic!("{case}: opened with {} entries", s.get_log_len().unwrap()),
        }
    }
    std::fs::remove_file(&journal).unwrap();
    let missing = JournalStorage::<E>::open(JournalStorageConfig::with_path(dir.path()));
    assert!(
        matches!(missing, Err(JournalStorageError::Corrupt(_))),
        "a missing journal"
    );
    std::fs::write(&journal, &good).unwrap();
    assert_eq!(
        open(dir.path()).get_log_len().unwrap(),
        500,
        "the good file opens whole"
    );
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at] ^= 0x20;
    bytes
}
