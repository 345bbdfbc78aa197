//! `PersistentStorage` batch writes: `append_entries` of 1,000 8-byte entries, with and
//! without `sync_writes`, and a read of a 1,000-entry range.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use omnipaxos::storage::Storage;
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};

fn store(dir: &tempfile::TempDir, name: &str, sync: bool) -> PersistentStorage<u64> {
    let mut config =
        PersistentStorageConfig::with_path(dir.path().join(name).to_string_lossy().to_string());
    config.set_sync_writes(sync);
    PersistentStorage::open(config)
}

fn batch_writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<u64> = (0..1000).collect();
    let mut group = c.benchmark_group("persistent_storage");
    group.throughput(Throughput::Elements(batch.len() as u64));
    for sync in [false, true] {
        let mut s = store(&dir, if sync { "sync" } else { "nosync" }, sync);
        let name = if sync {
            "append_1000_sync_on"
        } else {
            "append_1000_sync_off"
        };
        group.bench_function(name, |b| {
            b.iter(|| s.append_entries(batch.clone()).unwrap())
        });
    }
    let mut s = store(&dir, "read", false);
    for _ in 0..100 {
        s.append_entries(batch.clone()).unwrap();
    }
    group.bench_function("read_1000", |b| {
        b.iter(|| assert_eq!(s.get_entries(50_500, 51_500).unwrap().len(), 1000))
    });
    group.finish();
}

criterion_group!(benches, batch_writes);
criterion_main!(benches);
