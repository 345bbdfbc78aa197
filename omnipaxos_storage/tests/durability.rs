//! `PersistentStorage` as a process sees it: reopening right after a drop, a store in use by
//! another instance, and how many durable syncs a write costs with `sync_writes` on and off.

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Storage, StorageOp};
use omnipaxos_storage::persistent_storage::{
    PersistentStorage, PersistentStorageConfig, PersistentStorageError,
};

fn config(dir: &tempfile::TempDir, sync_writes: bool) -> PersistentStorageConfig {
    let mut config =
        PersistentStorageConfig::with_path(dir.path().join("store").to_string_lossy().into());
    config.set_sync_writes(sync_writes);
    config
}

#[test]
fn reopening_right_after_a_drop_always_works() {
    // sled closes its locked file only when its background tasks let go of the database, which
    // can be after `drop` returned; the drop waits for that, so an in-process restart never
    // finds the store locked.
    let dir = tempfile::tempdir().unwrap();
    for round in 0..1000u64 {
        let mut store: PersistentStorage<E> =
            PersistentStorage::try_open(config(&dir, round % 2 == 0))
                .unwrap_or_else(|e| panic!("reopen {round} failed: {e}"));
        assert_eq!(store.get_log_len().unwrap(), round as usize, "nothing lost");
        store.append_entry(E(round)).unwrap();
        drop(store);
    }
    let store: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    assert_eq!(store.get_entries(0, 1000).unwrap(), es(0..1000));
}

#[test]
fn a_store_in_use_is_refused_at_once_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let first: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    match PersistentStorage::<E>::try_open(config(&dir, true)) {
        Err(PersistentStorageError::Locked(path)) => assert_eq!(path, first.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("two live instances on one store"),
    }
    drop(first);
    assert!(PersistentStorage::<E>::try_open(config(&dir, true)).is_ok());
}

#[test]
fn sync_writes_on_makes_every_write_call_durable_with_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut store: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    assert_eq!(store.flush_count(), 0);
    // A group-committed burst: one call, one sync, however many entries.
    store.append_entries(es(0..1000)).unwrap();
    assert_eq!(store.flush_count(), 1);
    // A composite protocol write (a log synchronisation): one call, one sync.
    store
        .write_atomically(vec![
            StorageOp::SetPromise(Ballot::with(1, 2, 0, 1)),
            StorageOp::SetAcceptedRound(Ballot::with(1, 2, 0, 1)),
            StorageOp::AppendOnPrefix(900, es(5000..5200)),
            StorageOp::SetDecidedIndex(950),
        ])
        .unwrap();
    assert_eq!(store.flush_count(), 2);
    store.set_promise(Ballot::with(2, 2, 0, 1)).unwrap();
    store.trim(10).unwrap();
    assert_eq!(store.flush_count(), 4, "one per call");
}

#[test]
fn the_decided_index_alone_is_synced_by_the_next_write_unless_asked_to_wait() {
    // (log, sync_decided_idx) -> whether a write of the decided index alone syncs.
    for (log, sync_decided_idx, syncs) in [
        (true, false, false),
        (true, true, true),
        (false, false, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&dir, true);
        config.set_write_ahead_log(log);
        config.set_sync_decided_idx(sync_decided_idx);
        let mut store: PersistentStorage<E> = PersistentStorage::open(config.clone());
        store.append_entries(es(0..10)).unwrap();
        assert_eq!(store.flush_count(), 1);
        store.set_decided_idx(4).unwrap();
        store
            .write_atomically(vec![StorageOp::SetDecidedIndex(5)])
            .unwrap();
        let expected = if syncs { 3 } else { 1 };
        assert_eq!(
            store.flush_count(),
            expected,
            "log {log}, sync {sync_decided_idx}"
        );
        // Anything else with it waits, and makes it durable with it.
        store
            .write_atomically(vec![
                StorageOp::AppendEntries(es(10..12)),
                StorageOp::SetDecidedIndex(6),
            ])
            .unwrap();
        assert_eq!(store.flush_count(), expected + 1);
        store.set_decided_idx(8).unwrap();
        drop(store);
        let store: PersistentStorage<E> = PersistentStorage::open(config);
        assert_eq!(store.get_decided_idx().unwrap(), 8);
        assert_eq!(store.get_entries(0, 12).unwrap(), es(0..12));
    }
}

#[test]
fn sync_writes_off_never_syncs_and_a_clean_drop_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store: PersistentStorage<E> = PersistentStorage::open(config(&dir, false));
    store.append_entries(es(0..100)).unwrap();
    store.set_decided_idx(100).unwrap();
    assert_eq!(store.flush_count(), 0);
    drop(store);
    let store: PersistentStorage<E> = PersistentStorage::open(config(&dir, false));
    assert_eq!(store.get_entries(0, 100).unwrap(), es(0..100));
    assert_eq!(store.get_decided_idx().unwrap(), 100);
}

#[test]
fn a_batch_larger_than_sleds_log_buffer_is_synced_and_read_back() {
    // sled writes a value above a quarter of a segment (128 KiB by default) to its own file under
    // `blobs/`; the sync covers those files too.
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<E> = (0..40_000u64).map(|i| E(u64::MAX - i)).collect();
    let mut store: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    store.append_entries(big.clone()).unwrap();
    assert_eq!(store.flush_count(), 1);
    let blobs = std::fs::read_dir(dir.path().join("store").join("blobs"))
        .unwrap()
        .count();
    assert!(blobs > 0, "the batch went to a blob file");
    drop(store);
    let store: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    assert_eq!(store.get_entries(0, big.len()).unwrap(), big);
}

#[test]
fn a_failed_open_releases_the_store_before_it_returns() {
    // A chunk whose value is shorter than its header: opening reports the store corrupt. The
    // failed open must let go of the store before returning, so that the next open sees the
    // same corruption, not a store "in use".
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let db = sled::open(&path).unwrap();
        let mut key = vec![b'l'];
        key.extend_from_slice(&0u64.to_be_bytes());
        db.insert(key, vec![1u8, 2]).unwrap();
        db.flush().unwrap();
    }
    // sled's own handle above may still be closing: wait for it like a restart would.
    let mut first = PersistentStorage::<E>::try_open(config(&dir, true));
    while matches!(first, Err(PersistentStorageError::Locked(_))) {
        std::thread::yield_now();
        first = PersistentStorage::<E>::try_open(config(&dir, true));
    }
    assert!(matches!(first, Err(PersistentStorageError::Corrupt(_))));
    for _ in 0..20 {
        match PersistentStorage::<E>::try_open(config(&dir, true)) {
            Err(PersistentStorageError::Corrupt(_)) => {}
            Err(other) => panic!("expected the corruption again, got {other}"),
            Ok(_) => panic!("a corrupt store opened"),
        }
    }
}

/// An entry whose snapshot is one mebibyte, for the test below.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Small(u64);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Blob(Vec<u8>);

impl omnipaxos::storage::Snapshot<Small> for Blob {
    fn create(_entries: &[Small]) -> Self {
        Blob(vec![7; 1 << 20])
    }
    fn merge(&mut self, _delta: Self) {}
    fn use_snapshots() -> bool {
        true
    }
}

impl omnipaxos::storage::Entry for Small {
    type Snapshot = Blob;
}

/// Bytes this process handed to `write`-like system calls so far.
#[cfg(target_os = "linux")]
fn bytes_written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_large_snapshot_is_not_written_again_by_every_later_write() {
    use omnipaxos::storage::Snapshot;
    let dir = tempfile::tempdir().unwrap();
    let mut store: PersistentStorage<Small> = PersistentStorage::open(config(&dir, true));
    store.append_entries((0..10).map(Small).collect()).unwrap();
    store
        .write_atomically(vec![
            StorageOp::SetSnapshot(Some(Blob::create(&[]))),
            StorageOp::SetCompactedIdx(5),
            StorageOp::Trim(5),
        ])
        .unwrap();
    let before = bytes_written();
    for idx in 0..100 {
        store.set_decided_idx(idx % 10).unwrap();
    }
    let written = bytes_written() - before;
    // A hundred small writes; before the snapshot had a tree of its own, each carried the
    // snapshot's leaf again (about 100 MiB here).
    assert!(
        written < 10 << 20,
        "{written} bytes written for 100 small writes"
    );
    assert_eq!(
        store.get_snapshot().unwrap().map(|b| b.0.len()),
        Some(1 << 20)
    );
    drop(store);
    let store: PersistentStorage<Small> = PersistentStorage::open(config(&dir, true));
    assert_eq!(
        store.get_snapshot().unwrap().map(|b| b.0.len()),
        Some(1 << 20)
    );
    assert_eq!(store.get_compacted_idx().unwrap(), 5);
}

#[test]
fn the_sync_observer_hears_of_every_sync_and_only_of_syncs() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    for sync_writes in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let heard = Arc::new(AtomicU64::new(0));
        let mut config = config(&dir, sync_writes);
        let counter = heard.clone();
        config.set_sync_observer(move |took| {
            assert!(took > std::time::Duration::ZERO);
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let mut store: PersistentStorage<E> = PersistentStorage::open(config);
        store.append_entries(es(0..10)).unwrap();
        store.set_decided_idx(5).unwrap();
        store.set_promise(Ballot::with(1, 2, 0, 1)).unwrap();
        assert_eq!(heard.load(Ordering::Relaxed), store.flush_count());
        // The decided index alone is not synced (it goes with the promise).
        assert_eq!(
            heard.load(Ordering::Relaxed),
            if sync_writes { 2 } else { 0 }
        );
    }
}

#[test]
fn a_log_left_by_a_synced_run_never_rolls_back_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    // A synced run: its last writes are in the write-ahead log.
    let mut store: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    store.append_entries(es(0..10)).unwrap();
    store.set_decided_idx(5).unwrap();
    drop(store);
    // A run without syncs (no log) moves on; a clean drop keeps its writes.
    let mut store: PersistentStorage<E> = PersistentStorage::open(config(&dir, false));
    assert_eq!(store.get_decided_idx().unwrap(), 5);
    store.set_decided_idx(9).unwrap();
    drop(store);
    // The log's records are older than what sled holds now: they are not applied again.
    for sync_writes in [false, true] {
        let store: PersistentStorage<E> = PersistentStorage::open(config(&dir, sync_writes));
        assert_eq!(
            store.get_decided_idx().unwrap(),
            9,
            "sync_writes {sync_writes}"
        );
        assert_eq!(store.get_entries(0, 10).unwrap(), es(0..10));
    }
}

#[test]
fn a_store_opened_with_and_without_the_log_in_turn_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = 0;
    for round in 0..6u64 {
        let mut config = config(&dir, true);
        config.set_write_ahead_log(round % 2 == 0);
        config.set_write_ahead_log_bytes(1024); // a checkpoint every few writes
        let mut store: PersistentStorage<E> = PersistentStorage::open(config);
        assert_eq!(store.get_log_len().unwrap(), expected, "round {round}");
        for _ in 0..30 {
            store
                .append_entries(es(expected as u64..expected as u64 + 3))
                .unwrap();
            expected += 3;
            store.set_decided_idx(expected).unwrap();
        }
        // One durable write per call, but the decided index alone waits only without the log.
        let durable = if round % 2 == 0 { 30 } else { 60 };
        assert_eq!(store.flush_count(), durable, "round {round}");
        drop(store);
    }
    let store: PersistentStorage<E> = PersistentStorage::open(config(&dir, true));
    assert_eq!(
        store.get_entries(0, expected).unwrap(),
        es(0..expected as u64)
    );
    assert_eq!(store.get_decided_idx().unwrap(), expected);
}
