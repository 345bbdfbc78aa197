//! Shared by the storage tests: an entry type with a snapshot, and a full picture of a store's
//! state for comparisons.
#![allow(dead_code)]

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Snapshot, StopSign, Storage};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    omnipaxos::macros::Entry,
)]
#[snapshot(Sum)]
pub struct E(pub u64);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sum(pub u64);

impl Snapshot<E> for Sum {
    fn create(entries: &[E]) -> Self {
        Sum(entries.iter().map(|e| e.0).sum())
    }
    fn merge(&mut self, delta: Self) {
        self.0 += delta.0;
    }
    fn use_snapshots() -> bool {
        true
    }
}

pub fn es(range: std::ops::Range<u64>) -> Vec<E> {
    range.map(E).collect()
}

/// Everything a store holds. `log_start` is the first index held (tracked by the caller, as the
/// trait does not report it).
#[derive(Debug, PartialEq)]
pub struct State {
    pub promise: Option<Ballot>,
    pub accepted_round: Option<Ballot>,
    pub decided_idx: usize,
    pub compacted_idx: usize,
    pub log_len: usize,
    pub entries: Vec<E>,
    pub stopsign: Option<StopSign>,
    pub snapshot: Option<Sum>,
}

pub fn state_of<S: Storage<E>>(s: &S, log_start: usize) -> State {
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
