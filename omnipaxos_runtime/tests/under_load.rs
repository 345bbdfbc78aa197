//! The default timings hold on a starved machine: with twice as many busy threads as cores
//! competing with the nodes, a cluster configured from TOML with the runtime's defaults has no
//! leader change while it works, and replaces a crashed leader with one new leader.

mod common;

use common::*;
use omnipaxos::OmniPaxos;
use omnipaxos_runtime::config::DEFAULT_ELECTION_TICKS;
use omnipaxos_runtime::{spawn_actor, NodeConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn node_toml(pid: u64) -> String {
    format!(
        "[cluster_config]\nconfiguration_id = 1\nnodes = [1, 2, 3]\n\n\
         [server_config]\npid = {pid}\n\n\
         [runtime]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// Busy threads that take the CPU from everything else until dropped.
struct Starve {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Starve {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n = std::hint::black_box(
                            n.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    n
                })
            })
            .collect();
        Starve { stop, threads }
    }
}

impl Drop for Starve {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits for a leader that stays through more than one election round (40 metrics updates, a
/// tick each); returns it and each node's leader-change count then.
async fn settled(handles: &[omnipaxos_runtime::OmniPaxosHandle<u64>]) -> (u64, Vec<u64>) {
    loop {
        let leader = wait_leader(handles).await;
        let changes = |hs: &[omnipaxos_runtime::OmniPaxosHandle<u64>]| -> Vec<u64> {
            hs.iter()
                .map(|h| h.metrics().borrow().leader_changes)
                .collect()
        };
        let before = changes(handles);
        let mut rx = handles[0].metrics();
        for _ in 0..40 {
            within("a tick", rx.changed()).await.expect("running");
        }
        if changes(handles) == before {
            return (leader, before);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_cluster_keeps_its_leader_and_still_replaces_a_crashed_one() {
    let nodes = [1u64, 2, 3];
    let configs: Vec<NodeConfig> = nodes
        .iter()
        .map(|&pid| NodeConfig::from_toml(&node_toml(pid)).expect("valid"))
        .collect();
    let transports = tcp_transports(&nodes, |_, _| {});
    let handles: Vec<_> = configs
        .iter()
        .zip(transports)
        .map(|(config, transport)| {
            let op: OmniPaxos<u64, MemoryStorage<u64>> = config
                .omnipaxos
                .clone()
                .build(MemoryStorage::default())
                .expect("config");
            spawn_actor(op, config.runtime.clone(), transport)
        })
        .collect();
    // Start from a settled cluster: nodes that connected late may re-elect once at startup.
    let (leader, before) = settled(&handles).await;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut ledger = Ledger::default();
    {
        let _starve = Starve::start(4 * cores);
        let follower = &handles[(leader % 3) as usize];
        for v in 0..300u64 {
            ledger.append(follower, v).await;
            if v % 50 == 0 {
                within("read", follower.read_linearizable())
                    .await
                    .expect("read");
            }
        }
    }
    for (h, before) in handles.iter().zip(before) {
        let m = fresh_metrics(h).await;
        assert_eq!(
            m.leader_changes, before,
            "node {} saw the leader change under load",
            m.pid
        );
    }
    assert!(
        ledger.in_doubt.is_empty(),
        "no leader change, so no doubt: {:?}",
        ledger.in_doubt
    );
    ledger.check(&handles).await;
    // A leader crashed while the machine is starved is replaced once: the survivors notice
    // the death apart, and the first to stand used to elect itself only to be replaced by the
    // next (two changes for every death, also on an idle machine).
    let _starve = Starve::start(4 * cores);
    let survivors: Vec<_> = handles
        .iter()
        .filter(|h| h.metrics().borrow().pid != leader)
        .cloned()
        .collect();
    let mut before = Vec::new();
    for h in &survivors {
        before.push(fresh_metrics(h).await.leader_changes);
    }
    handles[(leader - 1) as usize].shutdown().await;
    let started = std::time::Instant::now();
    let next = wait_leader(&survivors).await;
    eprintln!(
        "leader {leader} crashed; {next} leads after {:?}",
        started.elapsed()
    );
    assert_ne!(next, leader);
    // Two election rounds more, counted in a survivor's own ticks: a second change would be
    // in them.
    let mut rx = survivors[0].metrics();
    for _ in 0..2 * DEFAULT_ELECTION_TICKS + 2 {
        within("a tick", rx.changed()).await.expect("running");
    }
    for (h, before) in survivors.iter().zip(before) {
        let m = fresh_metrics(h).await;
        assert_eq!(
            m.leader_changes,
            before + 1,
            "node {}: one death, one new leader",
            m.pid
        );
    }
    ledger.append_until_decided(&survivors[0], 1000).await;
    for h in &survivors {
        h.shutdown().await;
    }
}

/// A follower restarted from its storage while the machine is starved and the leader is slow
/// to answer must not stand against the leader (it used to, when its first round ended before
/// it heard the leader: `kv_store/tests/large_state.rs` failed that way one run in six under
/// load). Each restart holds back the leader's messages to the follower for its first round
/// and a half, counted in the follower's own ticks (one metrics update each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_follower_restarts_under_load_change_no_leader() {
    use omnipaxos::simulation::SimStorage;
    use omnipaxos_runtime::transport::memory::MemoryNetwork;
    use omnipaxos_runtime::{Role, RuntimeConfig};

    let nodes = [1u64, 2, 3];
    let net = MemoryNetwork::new();
    let storages: Vec<SimStorage<MemoryStorage<u64>>> = nodes
        .iter()
        .map(|_| SimStorage::new(MemoryStorage::default()))
        .collect();
    let start = |pid: u64| {
        let op: OmniPaxos<u64, _> = cluster_config(&nodes)
            .build_for_server(server_config(pid), storages[(pid - 1) as usize].clone())
            .expect("config");
        spawn_actor(op, RuntimeConfig::default(), net.transport())
    };
    let mut handles: Vec<_> = nodes.iter().map(|&pid| start(pid)).collect();
    let (leader, _) = settled(&handles).await;
    let follower = nodes.iter().copied().find(|p| *p != leader).unwrap_or(1);
    let witnesses: Vec<_> = handles
        .iter()
        .filter(|h| h.metrics().borrow().pid != follower)
        .cloned()
        .collect();
    let before: Vec<u64> = witnesses
        .iter()
        .map(|h| h.metrics().borrow().leader_changes)
        .collect();
    let leading = handles[(leader - 1) as usize].clone();
    let writer = tokio::spawn(async move {
        let mut v = 0u64;
        while leading.append_notify(v).await.is_ok() {
            v += 1;
        }
        v
    });
    {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let _starve = Starve::start(2 * cores);
        for restart in 1..=20 {
            let at = (follower - 1) as usize;
            handles[at].shutdown().await;
            let target = fresh_metrics(&witnesses[0]).await.decided_idx;
            net.pause(leader, follower);
            handles[at] = start(follower);
            let mut ticks = handles[at].metrics();
            for _ in 0..(DEFAULT_ELECTION_TICKS * 3 / 2) {
                within("a tick", ticks.changed()).await.expect("running");
            }
            net.resume(leader, follower);
            let caught_up = wait_metrics(&handles[at], "the restarted follower caught up", |m| {
                m.decided_idx >= target
            })
            .await;
            assert_eq!(
                (caught_up.role, caught_up.leader),
                (Role::Follower, Some(leader)),
                "restart {restart}: the follower stood against a healthy leader"
            );
        }
    }
    let after: Vec<u64> = witnesses
        .iter()
        .map(|h| h.metrics().borrow().leader_changes)
        .collect();
    assert_eq!(after, before, "a restarted follower changed the leader");
    assert_eq!(wait_leader(&handles).await, leader);
    for h in &handles {
        h.shutdown().await;
    }
    let written = within("the writer", writer).await.expect("writer");
    assert!(written > 0, "the leader decided appends throughout");
}
