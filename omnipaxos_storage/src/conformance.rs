//! The storage conformance suite (feature `conformance`): the checks every [`Storage`] must pass
//! for the core to be safe on it, runnable on your own store in one call:
//!
//! ```
//! use omnipaxos_storage::conformance;
//! use omnipaxos_storage::memory_storage::MemoryStorage;
//!
//! // A fresh store, and how to reopen one after a restart (here: it is kept as it is).
//! conformance::run_all(MemoryStorage::default, |store| store);
//! ```
//!
//! The checks use [`TestEntry`] (a `u64` with a summing [`Sum`] snapshot), so your store must be
//! generic over the entry type, as `MemoryStorage<T>` and `PersistentStorage<T>` are. Each check
//! is also public, to run alone. A failing check panics with what went wrong.
//!
//! What is checked: a fresh store reports nothing; appends keep their order across calls
//! (chunks); `append_on_prefix` truncates then appends; indices stay absolute after `trim`;
//! `write_atomically` applies every operation in order, and every getter returns the same after
//! a reopen.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, Snapshot, StopSign, Storage, StorageOp};
use omnipaxos::ClusterConfig;
use serde::{Deserialize, Serialize};

/// The entry type of the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestEntry(pub u64);

impl Entry for TestEntry {
    type Snapshot = Sum;
}

/// The snapshot of [`TestEntry`]: the sum of the entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sum(pub u64);

impl Snapshot<TestEntry> for Sum {
    fn create(entries: &[TestEntry]) -> Self {
        Sum(entries.iter().map(|e| e.0).sum())
    }
    fn merge(&mut self, delta: Self) {
        self.0 += delta.0;
    }
    fn use_snapshots() -> bool {
        true
    }
}

/// `TestEntry`s with the values in `range`.
pub fn entries(range: std::ops::Range<u64>) -> Vec<TestEntry> {
    range.map(TestEntry).collect()
}

/// Everything a store holds, for comparisons. `log_start` is the first index held (tracked by
/// the caller, as the trait does not report it).
#[derive(Debug, PartialEq)]
pub struct State {
    /// `get_promise`.
    pub promise: Option<Ballot>,
    /// `get_accepted_round`.
    pub accepted_round: Option<Ballot>,
    /// `get_decided_idx`.
    pub decided_idx: usize,
    /// `get_compacted_idx`.
    pub compacted_idx: usize,
    /// `get_log_len`.
    pub log_len: usize,
    /// The entries held, from `log_start`.
    pub entries: Vec<TestEntry>,
    /// `get_stopsign`.
    pub stopsign: Option<StopSign>,
    /// `get_snapshot`.
    pub snapshot: Option<Sum>,
}

/// Reads every getter of `s`; `log_start` is the first index it holds.
///
/// # Panics
/// If a getter returns an error.
pub fn state_of<S: Storage<TestEntry>>(s: &S, log_start: usize) -> State {
    let log_len = s.get_log_len().unwrap();
    State {
        promise: s.get_promise().unwrap(),
        accepted_round: s.get_accepted_round().unwrap(),
        decided_idx: s.get_decided_idx().unwrap(),
        compacted_idx: s.get_compacted_idx().unwrap(),
        log_len,
        entries: s.get_entries(log_start, log_start + log_len).unwrap(),
        stopsign: s.get_stopsign().unwrap(),
        snapshot: s.get_snapshot().unwrap(),
    }
}

/// How the checks get a fresh store and reopen one (a restart).
pub struct Harness<S> {
    fresh: Box<dyn FnMut() -> S>,
    reopen: Box<dyn FnMut(S) -> S>,
}

impl<S> Harness<S> {
    /// `fresh` makes an empty store; `reopen` takes a store, closes it and opens it again from
    /// wherever it keeps its data.
    pub fn new(fresh: impl FnMut() -> S + 'static, reopen: impl FnMut(S) -> S + 'static) -> Self {
        Self {
            fresh: Box::new(fresh),
            reopen: Box::new(reopen),
        }
    }

    fn fresh(&mut self) -> S {
        (self.fresh)()
    }

    fn reopen(&mut self, store: S) -> S {
        (self.reopen)(store)
    }
}

/// Runs every check on the stores `fresh` makes, reopened with `reopen`.
///
/// # Panics
/// On the first check that fails, naming it.
pub fn run_all<S: Storage<TestEntry> + 'static>(
    fresh: impl FnMut() -> S + 'static,
    reopen: impl FnMut(S) -> S + 'static,
) {
    let mut h = Harness::new(fresh, reopen);
    fresh_store_reports_nothing(&mut h);
    appends_keep_their_order(&mut h);
    append_on_prefix_truncates_then_appends(&mut h);
    indices_stay_absolute_after_trim(&mut h);
    write_atomically_applies_every_op_in_order(&mut h);
    setters_survive_reopen(&mut h);
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

/// A fresh store has no promise, no accepted round, nothing decided, compacted or logged.
pub fn fresh_store_reports_nothing<S: Storage<TestEntry>>(h: &mut Harness<S>) {
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

/// Appends, single and batched, keep their order; reads are all or nothing; a reopen keeps them.
pub fn appends_keep_their_order<S: Storage<TestEntry>>(h: &mut Harness<S>) {
    let mut s = h.fresh();
    s.append_entry(TestEntry(0)).unwrap();
    s.append_entries(entries(1..5)).unwrap();
    s.append_entries(vec![]).unwrap();
    s.append_entry(TestEntry(5)).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_entries(0, 6).unwrap(), entries(0..6));
    assert_eq!(
        s.get_entries(2, 5).unwrap(),
        entries(2..5),
        "across chunk boundaries"
    );
    assert!(s.get_entries(4, 7).unwrap().is_empty(), "all or nothing");
    assert_eq!(s.get_suffix(3).unwrap(), entries(3..6));
    let s = h.reopen(s);
    assert_eq!(s.get_entries(0, 6).unwrap(), entries(0..6));
}

/// `append_on_prefix` drops everything from its index, inside a batch or at its edge, then appends.
pub fn append_on_prefix_truncates_then_appends<S: Storage<TestEntry>>(h: &mut Harness<S>) {
    let mut s = h.fresh();
    s.append_entries(entries(0..4)).unwrap();
    s.append_entries(entries(4..8)).unwrap();
    s.append_on_prefix(6, entries(60..62)).unwrap(); // inside the second chunk
    assert_eq!(
        s.get_suffix(0).unwrap(),
        [entries(0..6), entries(60..62)].concat()
    );
    s.append_on_prefix(4, entries(40..41)).unwrap(); // at a chunk boundary
    assert_eq!(
        s.get_suffix(0).unwrap(),
        [entries(0..4), entries(40..41)].concat()
    );
    s.append_on_prefix(5, vec![]).unwrap(); // at the end: nothing to drop
    assert_eq!(s.get_log_len().unwrap(), 5);
    let mut s = h.reopen(s);
    assert_eq!(
        s.get_suffix(0).unwrap(),
        [entries(0..4), entries(40..41)].concat()
    );
    s.append_entry(TestEntry(99)).unwrap();
    assert_eq!(s.get_entries(5, 6).unwrap(), vec![TestEntry(99)]);
}

/// After `trim`, indices are still absolute; a lower trim changes nothing; appends go on after a trim past the end.
pub fn indices_stay_absolute_after_trim<S: Storage<TestEntry>>(h: &mut Harness<S>) {
    let mut s = h.fresh();
    s.append_entries(entries(0..5)).unwrap();
    s.append_entries(entries(5..10)).unwrap();
    s.trim(4).unwrap();
    s.set_compacted_idx(4).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_entries(4, 7).unwrap(), entries(4..7));
    assert!(s.get_entries(3, 7).unwrap().is_empty(), "partly trimmed");
    assert!(s.get_suffix(2).unwrap().is_empty());
    s.trim(2).unwrap(); // lower than before: nothing changes
    assert_eq!(s.get_log_len().unwrap(), 6);
    let mut s = h.reopen(s);
    assert_eq!(s.get_compacted_idx().unwrap(), 4);
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_suffix(4).unwrap(), entries(4..10));
    s.append_on_prefix(8, entries(80..82)).unwrap();
    assert_eq!(
        s.get_suffix(7).unwrap(),
        vec![TestEntry(7), TestEntry(80), TestEntry(81)]
    );
    // Trimming past the end empties the log; appends continue at the trimmed index.
    s.trim(20).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 0);
    s.append_on_prefix(20, entries(20..22)).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_entries(20, 22).unwrap(), entries(20..22));
}

/// `write_atomically` applies every operation in order, and the result survives a reopen.
pub fn write_atomically_applies_every_op_in_order<S: Storage<TestEntry>>(h: &mut Harness<S>) {
    let mut s = h.fresh();
    s.write_atomically(vec![
        StorageOp::AppendEntries(entries(0..5)),
        StorageOp::AppendOnPrefix(3, entries(30..32)),
        StorageOp::AppendEntry(TestEntry(99)),
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
        entries: vec![TestEntry(2), TestEntry(30), TestEntry(31), TestEntry(99)],
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

/// Every setter's value survives a reopen.
pub fn setters_survive_reopen<S: Storage<TestEntry>>(h: &mut Harness<S>) {
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
