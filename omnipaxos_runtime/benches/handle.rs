//! Appends per second through `OmniPaxosHandle::append_notify` on a three-node cluster on the
//! in-memory transport (memory storage): one caller waiting for each decision, and 64 callers
//! at once. `cargo bench -p omnipaxos_runtime --bench handle`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_runtime::transport::memory::MemoryNetwork;
use omnipaxos_runtime::{spawn_actor, OmniPaxosHandle, Role, RuntimeConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::time::{Duration, Instant};

const PER_ITERATION: u64 = 6400;

async fn cluster() -> Vec<OmniPaxosHandle<u64>> {
    let net = MemoryNetwork::new();
    let nodes = [1u64, 2, 3];
    let handles: Vec<_> = nodes
        .iter()
        .map(|&pid| {
            let server = ServerConfig {
                pid,
                election_tick_timeout: 30,
                resend_message_tick_timeout: 20,
                ..Default::default()
            };
            let cluster = ClusterConfig {
                configuration_id: 1,
                nodes: nodes.to_vec(),
                ..Default::default()
            };
            let op: OmniPaxos<u64, MemoryStorage<u64>> = cluster
                .build_for_server(server, MemoryStorage::default())
                .expect("config");
            spawn_actor(op, RuntimeConfig::default(), net.transport())
        })
        .collect();
    // Wait for a leader, then put it first.
    loop {
        for (i, h) in handles.iter().enumerate() {
            let mut rx = h.metrics();
            let _ = rx.changed().await;
            if rx.borrow().role == Role::Leader {
                let mut ordered = handles.clone();
                ordered.swap(0, i);
                return ordered;
            }
        }
    }
}

async fn appends(leader: &OmniPaxosHandle<u64>, callers: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let h = leader.clone();
            tokio::spawn(async move {
                for k in 0..PER_ITERATION / callers {
                    let _ = h.append_notify(c * PER_ITERATION + k).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed()
}

fn handle_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handles = runtime.block_on(cluster());
    let mut group = c.benchmark_group("append_notify");
    group.throughput(Throughput::Elements(PER_ITERATION));
    group.sample_size(10);
    for callers in [1u64, 64] {
        group.bench_function(format!("{callers} callers"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += appends(&handles[0], callers).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
    runtime.block_on(async {
        for h in &handles {
            h.shutdown().await;
        }
    });
}

criterion_group!(benches, handle_throughput);
criterion_main!(benches);
