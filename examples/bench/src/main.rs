//! The benchmark of DESIGN.md §4: N servers in one process and one thread, messages moved
//! through in-memory queues until none remain; the leader appends windows of W entries and each
//! window is drained until every server decided it. Prints one JSON line per run.
//!
//! ```text
//! cargo run --release -p bench -- [--nodes 3] [--window 1000] [--entries 100000]
//!                                 [--storage memory|persistent] [--sync on|off] [--runs 3]
//! ```

use omnipaxos::messages::Message;
use omnipaxos::simulation::SimStorage;
use omnipaxos::storage::{Entry, Storage};
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use std::time::Instant;

/// An 8-byte entry.
#[derive(Clone, Debug, omnipaxos::macros::Entry, serde::Serialize, serde::Deserialize)]
struct Small(u64);

#[derive(Clone, Debug)]
struct Args {
    nodes: u64,
    window: usize,
    entries: usize,
    storage: String,
    sync: bool,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 3,
        window: 1000,
        entries: 100_000,
        storage: "memory".into(),
        sync: true,
        runs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => args.nodes = value()?.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--window" => args.window = value()?.parse().map_err(|e| format!("--window: {e}"))?,
            "--entries" => {
                args.entries = value()?.parse().map_err(|e| format!("--entries: {e}"))?
            }
            "--storage" => args.storage = value()?,
            "--sync" => args.sync = value()? == "on",
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.window == 0 || args.nodes == 0 {
        return Err("--window and --nodes must be positive".into());
    }
    Ok(args)
}

/// What one run measured.
struct Outcome {
    seconds: f64,
    messages: u64,
    writes: u64,
}

fn build<T: Entry, B: Storage<T>>(nodes: u64, storage: impl Fn(u64) -> B) -> Vec<OmniPaxos<T, B>> {
    let cluster = ClusterConfig {
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
            cluster
                .clone()
                .build_for_server(server, storage(pid))
                .expect("valid config")
        })
        .collect()
}

/// Moves messages between the servers until none remain; returns how many moved.
fn drain<T: Entry, B: Storage<T>>(
    servers: &mut [OmniPaxos<T, B>],
    queue: &mut Vec<Message<T>>,
) -> u64 {
    let mut moved = 0;
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
}

fn run<T: Entry, B: Storage<T>>(
    args: &Args,
    storage: impl Fn(u64) -> B,
    entry: impl Fn(u64) -> T,
) -> Outcome {
    let mut servers: Vec<OmniPaxos<T, B>> = build(args.nodes, storage);
    let mut queue = Vec::new();
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
    let start = Instant::now();
    let mut messages = 0;
    let mut appended = 0;
    while appended < args.entries {
        let n = args.window.min(args.entries - appended);
        for i in 0..n {
            servers[leader]
                .append(entry((appended + i) as u64))
                .expect("leader accepts");
        }
        appended += n;
        messages += drain(&mut servers, &mut queue);
        if let Some(s) = servers.iter().find(|s| s.get_decided_idx() < appended) {
            panic!(
                "window not decided everywhere: server {} at {}",
                s.get_pid(),
                s.get_decided_idx()
            );
        }
    }
    Outcome {
        seconds: start.elapsed().as_secs_f64(),
        messages,
        writes: 0,
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    for _ in 0..args.runs {
        let outcome = match args.storage.as_str() {
            "memory" => run(&args, |_| MemoryStorage::default(), Small),
            "persistent" => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let handles: Vec<SimStorage<PersistentStorage<Small>>> = (1..=args.nodes)
                    .map(|pid| {
                        let mut config = PersistentStorageConfig::with_path(
                            dir.path()
                                .join(format!("node-{pid}"))
                                .to_string_lossy()
                                .into(),
                        );
                        config.set_sync_writes(args.sync);
                        SimStorage::new(PersistentStorage::open(config))
                    })
                    .collect();
                let before: u64 = handles
                    .iter()
                    .map(|h| h.with_store(|s| s.flush_count()))
                    .sum();
                let writes_before: u64 = handles.iter().map(|h| h.write_count()).sum();
                let mut outcome = run(&args, |pid| handles[pid as usize - 1].clone(), Small);
                let flushes: u64 = handles
                    .iter()
                    .map(|h| h.with_store(|s| s.flush_count()))
                    .sum();
                let writes: u64 = handles.iter().map(|h| h.write_count()).sum();
                outcome.writes = writes - writes_before;
                eprintln!("flushes: {}", flushes - before);
                outcome
            }
            other => {
                eprintln!("bench: unknown storage {other}");
                std::process::exit(2);
            }
        };
        let per_entry = |x: u64| x as f64 / args.entries as f64;
        println!(
            "{{\"storage\":\"{}\",\"sync\":{},\"nodes\":{},\"window\":{},\"entries\":{},\"entries_per_sec\":{:.0},\"messages_per_entry\":{:.4},\"writes_per_entry\":{:.5},\"peak_rss_kib\":{}}}",
            args.storage,
            args.sync,
            args.nodes,
            args.window,
            args.entries,
            args.entries as f64 / outcome.seconds,
            per_entry(outcome.messages),
            per_entry(outcome.writes),
            peak_rss_kib()
        );
    }
}
