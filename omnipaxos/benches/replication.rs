//! Append→decided on every server, per entry, for 3 and 5 servers: the leader appends a window
//! of 1,000 entries and the messages are moved until every server decided it.

mod common;
use common::Cluster;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const WINDOW: u64 = 1000;

fn append_to_decided(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_to_decided");
    group.throughput(Throughput::Elements(WINDOW));
    for nodes in [3u64, 5] {
        group.bench_with_input(
            BenchmarkId::new("window_1000", nodes),
            &nodes,
            |b, &nodes| {
                let mut cluster = Cluster::in_memory(nodes);
                let mut next = 0u64;
                b.iter(|| {
                    let leader = cluster.leader;
                    for _ in 0..WINDOW {
                        cluster.servers[leader].append(next).unwrap();
                        next += 1;
                    }
                    cluster.drain();
                    assert_eq!(cluster.servers[0].get_decided_idx() as u64, next);
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, append_to_decided);
criterion_main!(benches);
