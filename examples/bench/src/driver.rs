//! The workload, written once and instantiated for each implementation: `ours` (this
//! workspace) and, with the `upstream` feature, crates.io omnipaxos 0.2.4. Both expose the same
//! names, so one macro body drives either.

/// What a throughput run measured.
pub struct Throughput {
    pub seconds: f64,
    pub messages: u64,
}

/// Append→decided latencies on the leader, in nanoseconds, sorted.
pub struct Latency {
    pub samples: Vec<u64>,
}

macro_rules! driver {
    ($module:ident, $op:ident, $storage:ident) => {
        pub mod $module {
            use super::{Latency, Throughput};
            use std::time::Instant;
            use $op::messages::Message;
            use $op::storage::{Entry, NoSnapshot};
            use $op::{ClusterConfig, OmniPaxos, ServerConfig};
            use $storage::memory_storage::MemoryStorage;

            /// An 8-byte entry.
            #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
            pub struct Small(pub u64);
            impl Entry for Small {
                type Snapshot = NoSnapshot;
            }

            /// A 100-byte entry.
            #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
            pub struct Payload(pub Vec<u8>);
            impl Entry for Payload {
                type Snapshot = NoSnapshot;
            }

            type Server<T> = OmniPaxos<T, MemoryStorage<T>>;

            fn cluster<T: Entry>(nodes: u64) -> Vec<Server<T>> {
                let config = ClusterConfig {
                    configuration_id: 1,
                    nodes: (1..=nodes).collect(),
                    ..Default::default()
                };
                (1..=nodes)
                    .map(|pid| {
                        let server = ServerConfig {
                            pid,
                            ..Default::default()
                        };
                        config
                            .clone()
                            .build_for_server(server, MemoryStorage::default())
                            .expect("valid config")
                    })
                    .collect()
            }

            /// Moves messages until none remain (or, with `until`, until it holds); returns how
            /// many moved.
            fn drain<T: Entry>(
                servers: &mut [Server<T>],
                queue: &mut Vec<Message<T>>,
                mut until: impl FnMut(&[Server<T>]) -> bool,
            ) -> u64 {
                let mut moved = 0;
                loop {
                    for s in servers.iter_mut() {
                        s.take_outgoing_messages(queue);
                    }
                    if queue.is_empty() || until(servers) {
                        return moved;
                    }
                    moved += queue.len() as u64;
                    for m in queue.drain(..) {
                        let to = m.get_receiver() as usize - 1;
                        servers[to].handle_incoming(m);
                    }
                }
            }

            /// Ticks until every server follows one leader in the accept phase.
            fn elect<T: Entry>(servers: &mut [Server<T>], queue: &mut Vec<Message<T>>) -> usize {
                for _ in 0..10_000 {
                    for s in servers.iter_mut() {
                        s.tick();
                    }
                    drain(servers, queue, |_| false);
                    if let Some((pid, true)) = servers[0].get_current_leader() {
                        if servers
                            .iter()
                            .all(|s| s.get_current_leader() == Some((pid, true)))
                        {
                            return pid as usize - 1;
                        }
                    }
                }
                panic!("no leader after 10,000 ticks");
            }

            pub fn throughput<T: Entry>(
                nodes: u64,
                window: usize,
                entries: usize,
                entry: impl Fn(u64) -> T,
            ) -> Throughput {
                let mut servers = cluster::<T>(nodes);
                let mut queue = Vec::new();
                let leader = elect(&mut servers, &mut queue);
                let start = Instant::now();
                let mut messages = 0;
                let mut appended = 0;
                while appended < entries {
                    let n = window.min(entries - appended);
                    for i in 0..n {
                        servers[leader]
                            .append(entry((appended + i) as u64))
                            .expect("leader accepts");
                    }
                    appended += n;
                    messages += drain(&mut servers, &mut queue, |_| false);
                    assert!(
                        servers.iter().all(|s| s.get_decided_idx() >= appended),
                        "a window was not decided everywhere"
                    );
                }
                Throughput {
                    seconds: start.elapsed().as_secs_f64(),
                    messages,
                }
            }

            pub fn latency<T: Entry>(
                nodes: u64,
                samples: usize,
                entry: impl Fn(u64) -> T,
            ) -> Latency {
                let mut servers = cluster::<T>(nodes);
                let mut queue = Vec::new();
                let leader = elect(&mut servers, &mut queue);
                let mut out = Vec::with_capacity(samples);
                for i in 0..samples {
                    let target = servers[leader].get_decided_idx() + 1;
                    let start = Instant::now();
                    servers[leader]
                        .append(entry(i as u64))
                        .expect("leader accepts");
                    drain(&mut servers, &mut queue, |s| {
                        s[leader].get_decided_idx() >= target
                    });
                    out.push(start.elapsed().as_nanos() as u64);
                    drain(&mut servers, &mut queue, |_| false);
                }
                out.sort_unstable();
                Latency { samples: out }
            }
        }
    };
}

driver!(ours, omnipaxos, omnipaxos_storage);
#[cfg(feature = "upstream")]
driver!(upstream, omnipaxos_upstream, omnipaxos_storage_upstream);
