//! One conformance suite for every `Storage`: `MemoryStorage`, `PersistentStorage`, and a
//! wrapper that fails its k-th write. Ordering, absolute indices after trim, `write_atomically`
//! all-or-nothing, and every getter after reopen.

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::simulation::{FaultMode, SimStorage};
use omnipaxos::storage::{StopSign, Storage, StorageOp};
use omnipaxos::ClusterConfig;
use omnipaxos_storage::memory_storage::MemoryStorage;
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};

/// How a suite gets a fresh store and reopens it (a restart).
trait Harness {
    type S: Storage<E>;
    fn fresh(&mut self) -> Self::S;
    fn reopen(&mut self, store: Self::S) -> Self::S;
}

struct Memory;

impl Harness for Memory {
    type S = MemoryStorage<E>;
    fn fresh(&mut self) -> Self::S {
        MemoryStorage::default()
    }
    fn reopen(&mut self, store: Self::S) -> Self::S {
        store
    }
}

struct Persistent {
    dir: tempfile::TempDir,
    next: usize,
    current: String,
}

impl Persistent {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            next: 0,
            current: String::new(),
        }
    }
}

impl Harness for Persistent {
    type S = PersistentStorage<E>;
    fn fresh(&mut self) -> Self::S {
        self.next += 1;
        self.current = self
            .dir
            .path()
            .join(format!("store-{}", self.next))
            .to_string_lossy()
            .into();
        PersistentStorage::new(PersistentStorageConfig::with_path(self.current.clone()))
    }
    fn reopen(&mut self, store: Self::S) -> Self::S {
        drop(store);
        PersistentStorage::open(PersistentStorageConfig::with_path(self.current.clone()))
    }
}

fn ballot(n: u32) -> Ballot {
    Ballot::with(1, n, 0, 2)
}

fn stopsign() -> StopSign {
    StopSign::with(
        ClusterConfig {
            configuration_id: 2,
            nodes: vec![1, 2, 4],
            flexible_quorum: None,
        },
        Some(vec![9]),
    )
}

fn fresh_store_reports_nothing(h: &mut impl Harness) {
    let s = h.fresh();
    assert_eq!(s.get_promise().unwrap(), None);
    assert_eq!(s.get_accepted_round().unwrap(), None);
    assert_eq!(s.get_decided_idx().unwrap(), 0);
    assert_eq!(s.get_compacted_idx().unwrap(), 0);
    assert_eq!(s.get_log_len().unwrap(), 0);
    assert_eq!(s.get_stopsign().unwrap(), None);
    assert_eq!(s.get_snapshot().unwrap(), None);
    assert!(s.get_entries(0, 1).unwrap().is_empty());
    assert!(s.get_suffix(0).unwrap().is_empty());
}

fn appends_keep_their_order(h: &mut impl Harness) {
    let mut s = h.fresh();
    s.append_entry(E(0)).unwrap();
    s.append_entries(es(1..5)).unwrap();
    s.append_entries(vec![]).unwrap();
    s.append_entry(E(5)).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_entries(0, 6).unwrap(), es(0..6));
    assert_eq!(
        s.get_entries(2, 5).unwrap(),
        es(2..5),
        "across chunk boundaries"
    );
    assert!(s.get_entries(4, 7).unwrap().is_empty(), "all or nothing");
    assert_eq!(s.get_suffix(3).unwrap(), es(3..6));
    let s = h.reopen(s);
    assert_eq!(s.get_entries(0, 6).unwrap(), es(0..6));
}

fn append_on_prefix_truncates_then_appends(h: &mut impl Harness) {
    let mut s = h.fresh();
    s.append_entries(es(0..4)).unwrap();
    s.append_entries(es(4..8)).unwrap();
    s.append_on_prefix(6, es(60..62)).unwrap(); // inside the second chunk
    assert_eq!(s.get_suffix(0).unwrap(), [es(0..6), es(60..62)].concat());
    s.append_on_prefix(4, es(40..41)).unwrap(); // at a chunk boundary
    assert_eq!(s.get_suffix(0).unwrap(), [es(0..4), es(40..41)].concat());
    s.append_on_prefix(5, vec![]).unwrap(); // at the end: nothing to drop
    assert_eq!(s.get_log_len().unwrap(), 5);
    let mut s = h.reopen(s);
    assert_eq!(s.get_suffix(0).unwrap(), [es(0..4), es(40..41)].concat());
    s.append_entry(E(99)).unwrap();
    assert_eq!(s.get_entries(5, 6).unwrap(), vec![E(99)]);
}

fn indices_stay_absolute_after_trim(h: &mut impl Harness) {
    let mut s = h.fresh();
    s.append_entries(es(0..5)).unwrap();
    s.append_entries(es(5..10)).unwrap();
    s.trim(4).unwrap();
    s.set_compacted_idx(4).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_entries(4, 7).unwrap(), es(4..7));
    assert!(s.get_entries(3, 7).unwrap().is_empty(), "partly trimmed");
    assert!(s.get_suffix(2).unwrap().is_empty());
    s.trim(2).unwrap(); // lower than before: nothing changes
    assert_eq!(s.get_log_len().unwrap(), 6);
    let mut s = h.reopen(s);
    assert_eq!(s.get_compacted_idx().unwrap(), 4);
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_suffix(4).unwrap(), es(4..10));
    s.append_on_prefix(8, es(80..82)).unwrap();
    assert_eq!(s.get_suffix(7).unwrap(), vec![E(7), E(80), E(81)]);
    // Trimming past the end empties the log; appends continue at the trimmed index.
    s.trim(20).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 0);
    s.append_on_prefix(20, es(20..22)).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_entries(20, 22).unwrap(), es(20..22));
}

fn write_atomically_applies_every_op_in_order(h: &mut impl Harness) {
    let mut s = h.fresh();
    s.write_atomically(vec![
        StorageOp::AppendEntries(es(0..5)),
        StorageOp::AppendOnPrefix(3, es(30..32)),
        StorageOp::AppendEntry(E(99)),
        StorageOp::SetAcceptedRound(ballot(3)),
        StorageOp::SetPromise(ballot(4)),
        StorageOp::SetDecidedIndex(4),
        StorageOp::Trim(2),
        StorageOp::SetCompactedIdx(2),
        StorageOp::SetSnapshot(Some(Sum(1))),
        StorageOp::SetStopsign(Some(stopsign())),
    ])
    .unwrap();
    let expected = State {
        promise: Some(ballot(4)),
        accepted_round: Some(ballot(3)),
        decided_idx: 4,
        compacted_idx: 2,
        log_len: 4,
        entries: vec![E(2), E(30), E(31), E(99)],
        stopsign: Some(stopsign()),
        snapshot: Some(Sum(1)),
    };
    assert_eq!(state_of(&s, 2), expected);
    let mut s = h.reopen(s);
    assert_eq!(state_of(&s, 2), expected, "every getter after reopen");
    s.write_atomically(vec![
        StorageOp::SetStopsign(None),
        StorageOp::SetSnapshot(None),
    ])
    .unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_stopsign().unwrap(), None);
    assert_eq!(s.get_snapshot().unwrap(), None);
}

fn setters_survive_reopen(h: &mut impl Harness) {
    let mut s = h.fresh();
    s.set_promise(ballot(7)).unwrap();
    s.set_accepted_round(ballot(6)).unwrap();
    s.set_decided_idx(0).unwrap();
    s.set_stopsign(Some(stopsign())).unwrap();
    s.set_snapshot(Some(Sum(5))).unwrap();
    s.set_compacted_idx(3).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_promise().unwrap(), Some(ballot(7)));
    assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(6)));
    assert_eq!(s.get_stopsign().unwrap(), Some(stopsign()));
    assert_eq!(s.get_snapshot().unwrap(), Some(Sum(5)));
    assert_eq!(s.get_compacted_idx().unwrap(), 3);
}

macro_rules! suite {
    ($name:ident, $harness:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn fresh_store() {
                fresh_store_reports_nothing(&mut $harness);
            }
            #[test]
            fn ordering() {
                appends_keep_their_order(&mut $harness);
            }
            #[test]
            fn append_on_prefix() {
                append_on_prefix_truncates_then_appends(&mut $harness);
            }
            #[test]
            fn absolute_indices_after_trim() {
                indices_stay_absolute_after_trim(&mut $harness);
            }
            #[test]
            fn write_atomically() {
                write_atomically_applies_every_op_in_order(&mut $harness);
            }
            #[test]
            fn reopen() {
                setters_survive_reopen(&mut $harness);
            }
        }
    };
}

suite!(memory, Memory);
suite!(persistent, Persistent::new());

/// A failing write leaves the store exactly as it was, whichever write fails.
#[test]
fn a_failing_write_changes_nothing() {
    let script = |s: &mut SimStorage<MemoryStorage<E>>, step: usize| -> Result<(), ()> {
        let r = match step {
            0 => s.append_entries(es(0..4)),
            1 => s.write_atomically(vec![
                StorageOp::AppendOnPrefix(2, es(20..23)),
                StorageOp::SetAcceptedRound(ballot(2)),
                StorageOp::SetDecidedIndex(2),
            ]),
            2 => s.set_promise(ballot(3)),
            3 => s.write_atomically(vec![StorageOp::Trim(1), StorageOp::SetCompactedIdx(1)]),
            4 => s.append_entry(E(7)),
            5 => s.set_stopsign(Some(stopsign())),
            _ => s.write_atomically(vec![
                StorageOp::SetSnapshot(Some(Sum(3))),
                StorageOp::SetDecidedIndex(5),
            ]),
        };
        r.map_err(|_| ())
    };
    for k in 0..7u64 {
        let mut s = SimStorage::new(MemoryStorage::default());
        s.set_fault(FaultMode::FailWritesAfter(k));
        for step in 0..7 {
            let log_start = if step > 3 { 1 } else { 0 };
            let before = state_of(&s, log_start);
            if script(&mut s, step).is_err() {
                assert_eq!(step as u64, k, "the k-th write is the one that fails");
                assert_eq!(
                    state_of(&s, log_start),
                    before,
                    "k={k}: a failed write changed the store"
                );
                break;
            }
        }
    }
}
