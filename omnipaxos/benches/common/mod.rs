//! A cluster of servers in one thread with a message queue, shared by the benches.
#![allow(dead_code)]

use omnipaxos::messages::Message;
use omnipaxos::storage::Storage;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;

pub type Server = OmniPaxos<u64, MemoryStorage<u64>>;

pub struct Cluster<B: Storage<u64>> {
    pub servers: Vec<OmniPaxos<u64, B>>,
    pub queue: Vec<Message<u64>>,
    pub leader: usize,
}

impl Cluster<MemoryStorage<u64>> {
    pub fn in_memory(nodes: u64) -> Self {
        Self::new(nodes, |_| MemoryStorage::default())
    }
}

impl<B: Storage<u64>> Cluster<B> {
    pub fn new(nodes: u64, storage: impl Fn(u64) -> B) -> Self {
        let config = ClusterConfig {
            configuration_id: 1,
            nodes: (1..=nodes).collect(),
            ..Default::default()
        };
        let servers = (1..=nodes)
            .map(|pid| {
                let server = ServerConfig {
                    pid,
                    ..Default::default()
                };
                config
                    .clone()
                    .build_for_server(server, storage(pid))
                    .unwrap()
            })
            .collect();
        let mut cluster = Self {
            servers,
            queue: Vec::new(),
            leader: 0,
        };
        cluster.leader = cluster.elect();
        cluster
    }

    fn elect(&mut self) -> usize {
        loop {
            for s in self.servers.iter_mut() {
                s.tick();
            }
            self.drain();
            if let Some((pid, true)) = self.servers[0].get_current_leader() {
                if self
                    .servers
                    .iter()
                    .all(|s| s.get_current_leader() == Some((pid, true)))
                {
                    return pid as usize - 1;
                }
            }
        }
    }

    /// Moves messages until none remain.
    pub fn drain(&mut self) {
        loop {
            for s in self.servers.iter_mut() {
                s.take_outgoing_messages(&mut self.queue);
            }
            if self.queue.is_empty() {
                return;
            }
            for m in self.queue.drain(..) {
                let to = m.get_receiver() as usize - 1;
                self.servers[to].handle_incoming(m);
            }
        }
    }
}
