//! The persistence workload: the same windows on `PersistentStorage` directories, counting
//! flushes (ours only: upstream 0.2.4's persistent store is RocksDB, not built here).

use crate::Run;
use omnipaxos::messages::Message;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, omnipaxos::macros::Entry, serde::Serialize, serde::Deserialize)]
struct Small(u64);

type Store = Arc<Mutex<PersistentStorage<Small>>>;

pub struct Outcome {
    pub seconds: f64,
    pub messages: u64,
    pub flushes: u64,
}

pub fn throughput(run: &Run) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let stores: Vec<Store> = (1..=run.nodes)
        .map(|pid| {
            let path = dir
                .path()
                .join(format!("node-{pid}"))
                .to_string_lossy()
                .to_string();
            let mut config = PersistentStorageConfig::with_path(path);
            config.set_sync_writes(run.sync);
            config.set_write_ahead_log(run.wal);
            PersistentStorage::try_open(config)
                .map(|store| Arc::new(Mutex::new(store)))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let cluster = ClusterConfig {
        configuration_id: 1,
        nodes: (1..=run.nodes).collect(),
        ..Default::default()
    };
    let mut servers: Vec<OmniPaxos<Small, Store>> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let server = ServerConfig {
                pid: i as u64 + 1,
                ..Default::default()
            };
            cluster
                .clone()
                .build_for_server(server, store.clone())
                .expect("valid config")
        })
        .collect();
    let mut queue: Vec<Message<Small>> = Vec::new();
    let drain = |servers: &mut Vec<OmniPaxos<Small, Store>>, queue: &mut Vec<Message<Small>>| {
        let mut moved = 0u64;
        loop {
            for s in servers.iter_mut() {
                s.take_outgoing_messages(queue);
            }
            if queue.is_empty() {
                return moved;
            }
            moved += queue.len() as u64;
            for m in queue.drain(..) {
                let to = m.get_receiver() as usize - 1;
                servers[to].handle_incoming(m);
            }
        }
    };
    let leader = loop {
        for s in servers.iter_mut() {
            s.tick();
        }
        drain(&mut servers, &mut queue);
        if let Some((pid, true)) = servers[0].get_current_leader() {
            if servers
                .iter()
                .all(|s| s.get_current_leader() == Some((pid, true)))
            {
                break pid as usize - 1;
            }
        }
    };
    let flushes_before: u64 = stores
        .iter()
        .map(|s| s.lock().map_or(0, |p| p.flush_count()))
        .sum();
    let start = Instant::now();
    let (mut appended, mut messages) = (0, 0);
    while appended < run.entries {
        let n = run.window.min(run.entries - appended);
        for i in 0..n {
            servers[leader]
                .append(Small((appended + i) as u64))
                .map_err(|e| e.to_string())?;
        }
        appended += n;
        messages += drain(&mut servers, &mut queue);
        if servers.iter().any(|s| s.get_decided_idx() < appended) {
            return Err("a window was not decided everywhere".into());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let flushes: u64 = stores
        .iter()
        .map(|s| s.lock().map_or(0, |p| p.flush_count()))
        .sum();
    Ok(Outcome {
        seconds,
        messages,
        flushes: flushes - flushes_before,
    })
}
