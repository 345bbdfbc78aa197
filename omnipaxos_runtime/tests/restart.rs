//! Restarting nodes that went through a reconfiguration, on durable storage: a node replays its
//! configurations in order and comes back in the newest one, and a node that joined restarts
//! alone, from the handover it saved, with the old configuration's nodes gone.

mod common;

use common::*;
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos};
use omnipaxos_runtime::directory::DirectoryStorage;
use omnipaxos_runtime::transport::memory::MemoryNetwork;
use omnipaxos_runtime::{spawn_reconfigurable, OmniPaxosHandle, RuntimeConfig, StorageFactory};
use omnipaxos_storage::persistent_storage::PersistentStorage;
use std::path::Path;

/// Starts `pid` from `data/node-<pid>`, built for configuration `cluster` (the one it was first
/// given: the runtime replays from there).
fn start(
    data: &Path,
    pid: u64,
    cluster: ClusterConfig,
    net: &MemoryNetwork<u64>,
    join_from: Vec<u64>,
) -> OmniPaxosHandle<u64> {
    let mut storage = DirectoryStorage::new(data.join(format!("node-{pid}")));
    let first: PersistentStorage<u64> = storage.open(cluster.configuration_id).expect("open");
    let op: OmniPaxos<u64, PersistentStorage<u64>> = cluster
        .build_for_server(server_config(pid), first)
        .expect("config");
    spawn_reconfigurable(
        op,
        RuntimeConfig::default(),
        net.transport(),
        storage,
        join_from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restart_into_the_newest_configuration_and_a_joiner_restarts_alone() {
    let data = tempfile::tempdir().expect("tempdir");
    let old = [1, 2, 3];
    let new = [1, 2, 4];
    let net = MemoryNetwork::new();
    let mut handles: Vec<_> = old
        .iter()
        .map(|&p| start(data.path(), p, config(1, &old), &net, vec![]))
        .collect();
    let joiner = start(data.path(), 4, config(2, &new), &net, old.to_vec());
    wait_leader(&handles).await;
    let mut ledger = Ledger::default();
    for v in 1..=10u64 {
        ledger.append(&handles[0], v).await;
    }
    handles[1]
        .reconfigure(config(2, &new), None)
        .await
        .expect("proposed");
    wait_metrics(&handles[0], "node 1 in configuration 2", |m| {
        m.configuration_id == 2
    })
    .await;
    wait_metrics(&handles[2], "node 3 retired", |m| {
        m.role == omnipaxos_runtime::Role::Retired
    })
    .await;
    if let Some(retired) = handles.pop() {
        retired.shutdown().await;
    }
    handles.push(joiner);
    wait_leader(&handles).await;
    let (_, idx) = ledger.append_until_decided(&handles[2], 100).await;
    for h in &handles {
        wait_decided(h, idx + 1).await;
        h.shutdown().await;
    }

    // Everything restarts from disk with the configuration it was first given. Node 3 (retired)
    // stays down, so the joiner cannot fetch its handover again.
    let net = MemoryNetwork::new();
    let restarted = vec![
        start(data.path(), 1, config(1, &old), &net, vec![]),
        start(data.path(), 2, config(1, &old), &net, vec![]),
        start(data.path(), 4, config(2, &new), &net, old.to_vec()),
    ];
    for h in &restarted {
        wait_metrics(h, "back in configuration 2", |m| m.configuration_id == 2).await;
    }
    wait_leader(&restarted).await;
    ledger.append_until_decided(&restarted[0], 200).await;
    // The joiner's stream starts with the old configuration, from the handover it saved, and
    // only then the new one.
    let joined = history(&restarted[2], 200).await;
    let first_new = joined
        .iter()
        .position(|(c, _)| *c == 2)
        .expect("configuration 2");
    assert!(
        joined[first_new..].iter().all(|(c, _)| *c == 2),
        "configuration 1 after configuration 2: {joined:?}"
    );
    for (v, _) in ledger.decided.iter().filter(|(v, _)| *v <= 10) {
        assert!(
            joined[..first_new].contains(&(1, *v)),
            "{v} missing from the saved handover {joined:?}"
        );
    }
    // A node that replayed its configurations streams its whole history from 0: configuration
    // 1 up to its StopSign, then configuration 2.
    let replayed = history(&restarted[0], 200).await;
    assert_eq!(replayed.first().map(|(c, _)| *c), Some(1), "{replayed:?}");
    for (v, _) in &ledger.decided {
        let config = if *v <= 10 { 1 } else { 2 };
        assert!(
            replayed.contains(&(config, *v)),
            "{v} missing from configuration {config} in {replayed:?}"
        );
    }
    // After a trim of configuration 2, its compacted prefix arrives as one entry.
    let decided = restarted[0].decided_idx().await.expect("running");
    for h in &restarted {
        wait_decided(h, decided).await;
    }
    let leader = restarted
        .iter()
        .find(|h| h.metrics().borrow().role == omnipaxos_runtime::Role::Leader)
        .expect("a leader");
    leader.trim(Some(decided)).await.expect("trim");
    wait_metrics(&restarted[0], "the trim", |m| m.compacted_idx == decided).await;
    let after = history(&restarted[0], 200).await;
    assert!(
        after.contains(&(1, 10)),
        "configuration 1 is still streamed"
    );
    assert!(!after.contains(&(2, 100)), "trimmed away");
    for h in &restarted {
        h.shutdown().await;
    }
}

/// `(configuration, value)` of every decided entry streamed from 0 until `last` arrives;
/// a compacted prefix shows as `(configuration, 0)`.
async fn history(node: &OmniPaxosHandle<u64>, last: u64) -> Vec<(u32, u64)> {
    let mut stream = node.subscribe_decided(0).await.expect("subscribed");
    let mut seen = Vec::new();
    while !seen.contains(&(2, last)) && !seen.contains(&(2, 0)) {
        let e = within("the history", stream.next()).await.expect("open");
        match e.entry {
            LogEntry::Decided(v) => seen.push((e.config_id, v)),
            LogEntry::Snapshotted(_) | LogEntry::Trimmed(_) => seen.push((e.config_id, 0)),
            _ => {}
        }
    }
    seen
}
