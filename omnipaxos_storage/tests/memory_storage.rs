//! `MemoryStorage` against the `Storage` contract: absolute indices across trims, range reads
//! that are all-or-nothing, and every getter on a fresh store.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, NoSnapshot, StopSign, Storage, StorageOp};
use omnipaxos::ClusterConfig;
use omnipaxos_storage::memory_storage::MemoryStorage;

#[derive(Clone, Debug, PartialEq)]
struct E(u64);

impl Entry for E {
    type Snapshot = NoSnapshot;
}

fn es(range: std::ops::Range<u64>) -> Vec<E> {
    range.map(E).collect()
}

#[test]
fn a_fresh_store_reports_nothing() {
    let s = MemoryStorage::<E>::default();
    assert_eq!(s.get_promise().unwrap(), None);
    assert_eq!(s.get_accepted_round().unwrap(), None);
    assert_eq!(s.get_decided_idx().unwrap(), 0);
    assert_eq!(s.get_compacted_idx().unwrap(), 0);
    assert_eq!(s.get_log_len().unwrap(), 0);
    assert_eq!(s.get_stopsign().unwrap(), None);
    assert!(s.get_snapshot().unwrap().is_none());
    assert!(s.get_entries(0, 1).unwrap().is_empty());
}

#[test]
fn indices_stay_absolute_across_trim_and_prefix_appends() {
    let mut s = MemoryStorage::<E>::default();
    s.append_entries(es(0..10)).unwrap();
    s.trim(4).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 6);
    assert_eq!(s.get_entries(4, 6).unwrap(), es(4..6));
    assert!(
        s.get_entries(3, 6).unwrap().is_empty(),
        "partly trimmed range"
    );
    assert!(
        s.get_entries(8, 11).unwrap().is_empty(),
        "range past the end"
    );
    assert_eq!(s.get_suffix(8).unwrap(), es(8..10));
    s.append_on_prefix(7, es(100..102)).unwrap();
    assert_eq!(s.get_suffix(6).unwrap(), vec![E(6), E(100), E(101)]);
    s.append_entry(E(102)).unwrap();
    assert_eq!(s.get_entries(9, 10).unwrap(), vec![E(102)]);
}

#[test]
fn write_atomically_applies_every_op_in_order() {
    let mut s = MemoryStorage::<E>::default();
    let b = Ballot::with(1, 2, 0, 3);
    let ss = StopSign::with(
        ClusterConfig {
            configuration_id: 2,
            nodes: vec![1, 2],
            flexible_quorum: None,
        },
        Some(vec![7]),
    );
    s.write_atomically(vec![
        StorageOp::AppendEntries(es(0..5)),
        StorageOp::AppendOnPrefix(3, es(30..32)),
        StorageOp::SetAcceptedRound(b),
        StorageOp::SetPromise(b),
        StorageOp::SetDecidedIndex(4),
        StorageOp::Trim(2),
        StorageOp::SetCompactedIdx(2),
        StorageOp::SetStopsign(Some(ss.clone())),
        StorageOp::AppendEntry(E(99)),
    ])
    .unwrap();
    assert_eq!(s.get_suffix(2).unwrap(), vec![E(2), E(30), E(31), E(99)]);
    assert_eq!(s.get_accepted_round().unwrap(), Some(b));
    assert_eq!(s.get_promise().unwrap(), Some(b));
    assert_eq!(s.get_decided_idx().unwrap(), 4);
    assert_eq!(s.get_compacted_idx().unwrap(), 2);
    assert_eq!(s.get_stopsign().unwrap(), Some(ss));
}

#[test]
fn trimming_past_the_log_keeps_indices_absolute() {
    let mut s = MemoryStorage::<E>::default();
    s.append_entries(es(0..3)).unwrap();
    s.trim(10).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 0);
    s.append_on_prefix(10, es(10..12)).unwrap();
    assert_eq!(s.get_entries(10, 12).unwrap(), es(10..12));
}
