//! Model test: random batches of storage operations, applied to `PersistentStorage` (and to
//! `JournalStorage`) and to `MemoryStorage` (the model), with reopens in between; after every step both hold the same
//! state. `MODEL_SEEDS=N` runs more seeds (default 20).

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::simulation::SimRng;
use omnipaxos::storage::{StopSign, Storage, StorageOp};
use omnipaxos::ClusterConfig;
use omnipaxos_storage::journal_storage::{JournalStorage, JournalStorageConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};

/// Where the model says the log starts and ends, to generate valid indices.
struct Bounds {
    log_start: usize,
    log_end: usize,
}

fn random_op(rng: &mut SimRng, b: &Bounds, next_value: &mut u64) -> StorageOp<E> {
    let mut values = |n: u64| -> Vec<E> {
        let v = (*next_value..*next_value + n).map(E).collect();
        *next_value += n;
        v
    };
    match rng.range(0, 11) {
        0 => StorageOp::AppendEntry(values(1).remove(0)),
        1 | 2 => {
            let n = rng.range(0, 6);
            StorageOp::AppendEntries(values(n))
        }
        3 | 4 => {
            let from = rng.range(b.log_start as u64, b.log_end as u64) as usize;
            let n = rng.range(0, 4);
            StorageOp::AppendOnPrefix(from, values(n))
        }
        5 => StorageOp::Trim(rng.range(b.log_start as u64, b.log_end as u64 + 2) as usize),
        6 => StorageOp::SetDecidedIndex(rng.range(0, 50) as usize),
        7 => StorageOp::SetCompactedIdx(rng.range(0, 50) as usize),
        8 => StorageOp::SetPromise(Ballot::with(1, rng.range(0, 9) as u32, 0, rng.range(1, 3))),
        9 => StorageOp::SetAcceptedRound(Ballot::with(1, rng.range(0, 9) as u32, 0, 1)),
        10 => StorageOp::SetStopsign(rng.chance(0.5).then(|| {
            StopSign::with(
                ClusterConfig {
                    configuration_id: 2,
                    nodes: vec![1, 2],
                    flexible_quorum: None,
                },
                None,
            )
        })),
        _ => StorageOp::SetSnapshot(rng.chance(0.5).then(|| Sum(rng.range(0, 100)))),
    }
}

/// Applies `op` through the individual method, as the core does outside atomic batches.
fn apply_one<S: Storage<E>>(s: &mut S, op: StorageOp<E>) {
    match op {
        StorageOp::AppendEntry(e) => s.append_entry(e),
        StorageOp::AppendEntries(es) => s.append_entries(es),
        StorageOp::AppendOnPrefix(from, es) => s.append_on_prefix(from, es),
        StorageOp::SetPromise(b) => s.set_promise(b),
        StorageOp::SetDecidedIndex(i) => s.set_decided_idx(i),
        StorageOp::SetAcceptedRound(b) => s.set_accepted_round(b),
        StorageOp::SetCompactedIdx(i) => s.set_compacted_idx(i),
        StorageOp::Trim(i) => s.trim(i),
        StorageOp::SetStopsign(ss) => s.set_stopsign(ss),
        StorageOp::SetSnapshot(snap) => s.set_snapshot(snap),
    }
    .unwrap();
}

fn clone_op(op: &StorageOp<E>) -> StorageOp<E> {
    match op {
        StorageOp::AppendEntry(e) => StorageOp::AppendEntry(*e),
        StorageOp::AppendEntries(es) => StorageOp::AppendEntries(es.clone()),
        StorageOp::AppendOnPrefix(f, es) => StorageOp::AppendOnPrefix(*f, es.clone()),
        StorageOp::SetPromise(b) => StorageOp::SetPromise(*b),
        StorageOp::SetDecidedIndex(i) => StorageOp::SetDecidedIndex(*i),
        StorageOp::SetAcceptedRound(b) => StorageOp::SetAcceptedRound(*b),
        StorageOp::SetCompactedIdx(i) => StorageOp::SetCompactedIdx(*i),
        StorageOp::Trim(i) => StorageOp::Trim(*i),
        StorageOp::SetStopsign(ss) => StorageOp::SetStopsign(ss.clone()),
        StorageOp::SetSnapshot(s) => StorageOp::SetSnapshot(*s),
    }
}

fn update_bounds(b: &mut Bounds, op: &StorageOp<E>) {
    match op {
        StorageOp::AppendEntry(_) => b.log_end += 1,
        StorageOp::AppendEntries(es) => b.log_end += es.len(),
        StorageOp::AppendOnPrefix(from, es) => {
            let skip = b.log_start.saturating_sub(*from).min(es.len());
            b.log_end = (*from).max(b.log_start).min(b.log_end) + es.len() - skip;
        }
        StorageOp::Trim(i) if *i > b.log_start => {
            b.log_start = *i;
            b.log_end = b.log_end.max(*i);
        }
        _ => {}
    }
}

#[test]
fn persistent_storage_behaves_like_memory_storage() {
    behaves_like_memory_storage(|path| {
        PersistentStorage::<E>::open(PersistentStorageConfig::with_path(path.to_string()))
    });
}

#[test]
fn journal_storage_behaves_like_memory_storage() {
    // A tiny threshold: the journal is rewritten every few writes.
    behaves_like_memory_storage(|path| {
        let mut config = JournalStorageConfig::with_path(path);
        config.compact_at_bytes = 300;
        JournalStorage::<E>::open(config).unwrap()
    });
}

/// Random writes on the store `open` opens (and reopens, as a restart) and on the model.
fn behaves_like_memory_storage<S: Storage<E>>(mut open: impl FnMut(&str) -> S) {
    let seeds: u64 = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..seeds {
        let path = dir
            .path()
            .join(format!("model-{seed}"))
            .to_string_lossy()
            .to_string();
        let mut rng = SimRng::new(seed);
        let mut model = MemoryStorage::<E>::default();
        let mut store = open(&path);
        let mut bounds = Bounds {
            log_start: 0,
            log_end: 0,
        };
        let mut next_value = 0;
        for step in 0..150 {
            let n = rng.range(1, 4);
            let ops: Vec<StorageOp<E>> = (0..n)
                .map(|_| {
                    let op = random_op(&mut rng, &bounds, &mut next_value);
                    update_bounds(&mut bounds, &op);
                    op
                })
                .collect();
            if rng.chance(0.5) {
                let copy = ops.iter().map(clone_op).collect();
                model.write_atomically(copy).unwrap();
                store.write_atomically(ops).unwrap();
            } else {
                for op in ops {
                    apply_one(&mut model, clone_op(&op));
                    apply_one(&mut store, op);
                }
            }
            if rng.chance(0.1) {
                drop(store);
                store = open(&path);
            }
            assert_eq!(
                state_of(&store, bounds.log_start),
                state_of(&model, bounds.log_start),
                "seed {seed}, step {step}"
            );
        }
    }
}
