//! Power cuts, simulated: `JournalStorage` writes through a simulated file system that keeps
//! what was written apart from what was synced; the machine dies at a seeded point (in the
//! middle of whatever the store was doing), the power cut drops or tears what was not synced,
//! and the store must open again with every write it acknowledged. Twice per seed: the second
//! round writes after the first recovery's cut-off tail.
//!
//! `POWER_CUTS=N` runs N seeds (default 1,000), `POWER_CUT_FIRST=S` starts at seed S.

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::StopSign;
use omnipaxos::storage::{Storage, StorageOp};
use omnipaxos::ClusterConfig;
use omnipaxos_storage::files::sim::SimFiles;
use omnipaxos_storage::files::FileSystem;
use omnipaxos_storage::journal_storage::{JournalStorage, JournalStorageConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::path::Path;
use std::sync::Arc;

/// A seeded generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(files: &SimFiles) -> JournalStorage<E> {
    let mut config = JournalStorageConfig::with_path("/node/config-1");
    config.compact_at_bytes = 4096;
    config.set_file_system(Arc::new(files.clone()));
    match JournalStorage::open(config) {
        Ok(store) => store,
        Err(e) => panic!("the store does not open after a power cut: {e}"),
    }
}

/// Everything `store` holds (its held entries start at its compacted index: the writes below
/// always trim and compact together).
fn held(store: &impl Storage<E>) -> State {
    state_of(store, store.get_compacted_idx().unwrap())
}

/// A store in memory holding what `store` holds.
fn copy_of(store: &impl Storage<E>) -> MemoryStorage<E> {
    let state = held(store);
    let mut ops = vec![
        StorageOp::Trim(state.compacted_idx),
        StorageOp::AppendEntries(state.entries.clone()),
        StorageOp::SetCompactedIdx(state.compacted_idx),
        StorageOp::SetSnapshot(state.snapshot),
        StorageOp::SetDecidedIndex(state.decided_idx),
        StorageOp::SetStopsign(state.stopsign.clone()),
    ];
    ops.extend(state.promise.map(StorageOp::SetPromise));
    ops.extend(state.accepted_round.map(StorageOp::SetAcceptedRound));
    let mut copy = MemoryStorage::default();
    copy.write_atomically(ops).unwrap();
    copy
}

/// Makes writes the protocol could make.
struct Writer {
    rng: Rng,
    next_entry: u64,
    round: u32,
}

impl Writer {
    fn next_write(&mut self, acked: &MemoryStorage<E>) -> Vec<StorageOp<E>> {
        let compacted = acked.get_compacted_idx().unwrap();
        let len = compacted + acked.get_log_len().unwrap();
        let decided = acked.get_decided_idx().unwrap();
        let rng = &mut self.rng;
        let first = self.next_entry;
        let n = 1 + rng.below(150);
        match rng.below(20) {
            0..=6 => {
                self.next_entry += n;
                vec![StorageOp::AppendEntries(es(first..first + n))]
            }
            7 => {
                self.next_entry += n;
                let from = decided + rng.below((len - decided) as u64 + 1) as usize;
                vec![StorageOp::AppendOnPrefix(from, es(first..first + n))]
            }
            8 | 9 => {
                self.round += 1;
                vec![StorageOp::SetPromise(Ballot::with(1, self.round, 0, 2))]
            }
            10 => vec![StorageOp::SetAcceptedRound(Ballot::with(
                1, self.round, 0, 2,
            ))],
            11..=15 => {
                let to = decided + rng.below((len - decided) as u64 + 1) as usize;
                vec![StorageOp::SetDecidedIndex(to)]
            }
            16 | 17 => {
                let to = compacted + rng.below((decided - compacted) as u64 + 1) as usize;
                vec![StorageOp::SetCompactedIdx(to), StorageOp::Trim(to)]
            }
            18 => vec![StorageOp::SetSnapshot(Some(Sum(rng.below(1000))))],
            _ => vec![StorageOp::SetStopsign(Some(StopSign::with(
                ClusterConfig {
                    configuration_id: 2,
                    nodes: vec![1, 2, 3],
                    flexible_quorum: None,
                },
                None,
            )))],
        }
    }
}

/// Whether the journal's records end with a torn one.
fn ends_torn(bytes: &[u8]) -> bool {
    use omnipaxos_storage::files::record::{read_log, Record, Rules, Verdict};
    let rules = Rules {
        belongs: |_: &Record<'_>| Verdict::Take,
        later: |_: &Record<'_>| false,
        unsynced_from: None,
    };
    read_log(bytes, rules).is_ok_and(|log| log.torn)
}

/// `StorageOp` is not `Clone` (as upstream's): a copy by hand.
fn copy_ops(ops: &[StorageOp<E>]) -> Vec<StorageOp<E>> {
    ops.iter()
        .map(|op| match op {
            StorageOp::AppendEntry(e) => StorageOp::AppendEntry(*e),
            StorageOp::AppendEntries(es) => StorageOp::AppendEntries(es.clone()),
            StorageOp::AppendOnPrefix(i, es) => StorageOp::AppendOnPrefix(*i, es.clone()),
            StorageOp::SetPromise(b) => StorageOp::SetPromise(*b),
            StorageOp::SetDecidedIndex(i) => StorageOp::SetDecidedIndex(*i),
            StorageOp::SetAcceptedRound(b) => StorageOp::SetAcceptedRound(*b),
            StorageOp::SetCompactedIdx(i) => StorageOp::SetCompactedIdx(*i),
            StorageOp::Trim(i) => StorageOp::Trim(*i),
            StorageOp::SetStopsign(s) => StorageOp::SetStopsign(s.clone()),
            StorageOp::SetSnapshot(s) => StorageOp::SetSnapshot(*s),
        })
        .collect()
}

fn decided_only(ops: &[StorageOp<E>]) -> bool {
    ops.iter()
        .all(|op| matches!(op, StorageOp::SetDecidedIndex(_)))
}

/// One life of the store: writes until the machine dies (after a seeded number of file
/// calls), then the power cut; the store reopened on what survived must hold every write
/// it acknowledged (and maybe the one in flight), with a decided index no lower than the last
/// waited-for write's. Returns the file system after the cut.
fn one_life(files: SimFiles, writer: &mut Writer, seed: u64) -> (SimFiles, bool) {
    let mut store = open(&files);
    let mut acked = copy_of(&store);
    let mut decided_floor = acked.get_decided_idx().unwrap();
    files.die_after(files.calls() + 1 + writer.rng.below(400));
    let mut in_flight = None;
    for _ in 0..10_000 {
        let ops = writer.next_write(&acked);
        if store.write_atomically(copy_ops(&ops)).is_err() {
            in_flight = Some(ops);
            break;
        }
        acked.write_atomically(copy_ops(&ops)).unwrap();
        if !decided_only(&ops) {
            decided_floor = acked.get_decided_idx().unwrap();
        }
    }
    drop(store);
    let after = files.power_cut(seed);
    let journal = Path::new("/node/config-1/journal");
    let torn = after.read(journal).is_ok_and(|bytes| ends_torn(&bytes));
    let reopened = open(&after);
    let found = held(&reopened);
    assert!(
        found.decided_idx >= decided_floor,
        "seed {seed}: decided index {} below the synced {decided_floor}",
        found.decided_idx
    );
    let mut candidates = vec![held(&acked)];
    if let Some(ops) = in_flight {
        let mut with = copy_of(&acked);
        with.write_atomically(ops).unwrap();
        candidates.push(held(&with));
    }
    let matches = candidates.iter().any(|expected| {
        let mut found = held(&reopened);
        let decided_ok = found.decided_idx <= expected.decided_idx;
        found.decided_idx = expected.decided_idx;
        decided_ok && found == *expected
    });
    assert!(
        matches,
        "seed {seed}: after the cut the store holds {found:?}, expected one of {candidates:?}"
    );
    (after, torn)
}

#[test]
fn every_acknowledged_write_survives_power_cuts_at_random_points() {
    let (first, count) = (env("POWER_CUT_FIRST", 0), env("POWER_CUTS", 1000));
    let mut torn_tails = 0;
    for seed in first..first + count {
        let mut writer = Writer {
            rng: Rng(seed),
            next_entry: 0,
            round: 0,
        };
        let mut files = SimFiles::new();
        for _life in 0..2 {
            let (after, torn) = one_life(files, &mut writer, seed);
            torn_tails += usize::from(torn);
            files = after;
        }
    }
    assert!(
        torn_tails > 0,
        "no cut tore a write: the simulation cuts nothing"
    );
}

/// Damage on the device, not a cut: one flipped bit anywhere in a journal whose writes were
/// all acknowledged makes the store refuse to open (a typed error), or open with every write
/// (when the bit is in a record it may drop: a decided index never waited for).
#[test]
fn a_flipped_bit_in_synced_data_is_refused_never_forgotten() {
    use omnipaxos_storage::journal_storage::JournalStorageError;
    let journal = Path::new("/node/config-1/journal");
    let (mut refused, mut opened) = (0, 0);
    for seed in 0..env("POWER_CUTS", 1000) / 4 {
        let mut writer = Writer {
            rng: Rng(seed),
            next_entry: 0,
            round: 0,
        };
        let files = SimFiles::new();
        let mut store = open(&files);
        let mut acked = copy_of(&store);
        for _ in 0..1 + writer.rng.below(30) {
            let ops = writer.next_write(&acked);
            store.write_atomically(copy_ops(&ops)).unwrap();
            acked.write_atomically(ops).unwrap();
        }
        store.set_promise(Ballot::with(1, 999, 0, 2)).unwrap(); // the last write waits
        acked.set_promise(Ballot::with(1, 999, 0, 2)).unwrap();
        // Anywhere in the records (the zeros the file is allocated ahead with hold nothing).
        let len = store.journal_bytes();
        drop(store);
        let at = writer.rng.below(len);
        files
            .corrupt(journal, at, 1 << writer.rng.below(8))
            .unwrap();
        let mut config = JournalStorageConfig::with_path("/node/config-1");
        config.set_file_system(Arc::new(files.clone()));
        match JournalStorage::<E>::open(config) {
            Err(JournalStorageError::Corrupt(c)) => {
                assert!(
                    c.offset <= at,
                    "seed {seed}: damage at {at} reported at {}",
                    c.offset
                );
                refused += 1;
            }
            Err(e) => panic!("seed {seed}: not a corruption error: {e}"),
            Ok(reopened) => {
                let mut found = held(&reopened);
                let expected = held(&acked);
                assert!(found.decided_idx <= expected.decided_idx, "seed {seed}");
                found.decided_idx = expected.decided_idx;
                assert_eq!(
                    found, expected,
                    "seed {seed}: opened with less after a bit flip at {at}"
                );
                opened += 1;
            }
        }
    }
    assert!(
        refused > 0 && refused > opened * 10,
        "{refused} refused, {opened} opened"
    );
}
