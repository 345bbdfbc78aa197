//! The public conformance suite (`omnipaxos_storage::conformance`) on `MemoryStorage` and
//! `PersistentStorage`, and a wrapper failing its k-th write: a failed write changes nothing.

mod common;
use common::*;
use omnipaxos::simulation::{FaultMode, SimStorage};
use omnipaxos::storage::{Storage, StorageOp};
use omnipaxos_storage::conformance;
use omnipaxos_storage::journal_storage::{JournalStorage, JournalStorageConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};

#[test]
fn memory_storage_conforms() {
    conformance::run_all(MemoryStorage::default, |store| store);
}

#[test]
fn persistent_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut next = 0;
    conformance::run_all(
        move || {
            next += 1;
            let path = root
                .join(format!("store-{next}"))
                .to_string_lossy()
                .into_owned();
            PersistentStorage::new(PersistentStorageConfig::with_path(path))
        },
        |store: PersistentStorage<E>| {
            let path = store.path().to_string();
            drop(store);
            PersistentStorage::open(PersistentStorageConfig::with_path(path))
        },
    );
    drop(dir);
}

#[test]
fn journal_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut next = 0;
    conformance::run_all(
        move || {
            next += 1;
            let config = JournalStorageConfig::with_path(root.join(format!("journal-{next}")));
            JournalStorage::open(config).unwrap()
        },
        |store: JournalStorage<E>| {
            let path = store.path().to_path_buf();
            drop(store);
            JournalStorage::open(JournalStorageConfig::with_path(path)).unwrap()
        },
    );
    drop(dir);
}

fn ballot(n: u32) -> omnipaxos::ballot_leader_election::Ballot {
    omnipaxos::ballot_leader_election::Ballot::with(1, n, 0, 2)
}

fn stopsign() -> omnipaxos::storage::StopSign {
    omnipaxos::storage::StopSign::with(
        omnipaxos::ClusterConfig {
            configuration_id: 2,
            nodes: vec![1, 2, 4],
            flexible_quorum: None,
        },
        None,
    )
}

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
