//! Reconfiguration handled by the runtime: `reconfigure` on a handle moves the running nodes
//! to the next configuration, a node that is not part of it retires, a joining node fetches the
//! handover itself and streams the old state before the new log, and appends refused by the
//! sealed log are proposed again in the next configuration.

mod common;

use common::*;
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos};
use omnipaxos_runtime::transport::memory::MemoryNetwork;
use omnipaxos_runtime::{
    spawn_reconfigurable, OmniPaxosEvent, OmniPaxosHandle, Role, RuntimeConfig,
};
use omnipaxos_storage::memory_storage::MemoryStorage;

fn start(
    pid: u64,
    cluster: ClusterConfig,
    net: &MemoryNetwork<u64>,
    join_from: Vec<u64>,
) -> OmniPaxosHandle<u64> {
    let op: OmniPaxos<u64, MemoryStorage<u64>> = cluster
        .build_for_server(server_config(pid), MemoryStorage::default())
        .expect("config");
    let factory = |_config_id: u32| Ok::<_, String>(MemoryStorage::default());
    spawn_reconfigurable(
        op,
        RuntimeConfig::default(),
        net.transport(),
        factory,
        join_from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_moves_running_nodes_and_a_joiner_starts_from_the_handover() {
    let net = MemoryNetwork::new();
    let old = [1, 2, 3];
    let handles: Vec<_> = old
        .iter()
        .map(|&p| start(p, config(1, &old), &net, vec![]))
        .collect();
    let joiner = start(4, config(2, &[1, 2, 4]), &net, vec![1, 2, 3]);
    wait_leader(&handles).await;
    let mut events = handles[0].subscribe_events();
    let mut ledger = Ledger::default();
    for v in 1..=10u64 {
        ledger.append(&handles[2], v).await;
    }
    handles[0]
        .reconfigure(config(2, &[1, 2, 4]), None)
        .await
        .expect("proposed");
    // Appends racing with the reconfiguration: refused by the sealed log, they are proposed
    // again in configuration 2 by the runtime.
    let racing: Vec<_> = (11..=20u64)
        .map(|v| {
            let h = handles[1].clone();
            tokio::spawn(async move { h.append_notify(v).await })
        })
        .collect();
    within("the reconfiguration", async {
        loop {
            if let Ok(OmniPaxosEvent::Reconfigured { .. }) = events.recv().await {
                break;
            }
        }
    })
    .await;
    // Node 1 is part of configuration 2 and moves there.
    wait_metrics(&handles[0], "node 1 in configuration 2", |m| {
        m.configuration_id == 2
    })
    .await;
    for (t, v) in racing.into_iter().zip(11u64..) {
        let result = within("racing append", t).await.expect("task");
        // Refused by the sealed log, it goes to configuration 2: never a sealed-log error.
        assert!(
            !matches!(result, Err(omnipaxos_runtime::AppendError::Propose(_))),
            "{result:?}"
        );
        ledger.record(v, result);
    }
    wait_metrics(&handles[2], "node 3 retires", |m| m.role == Role::Retired).await;
    // The new configuration serves, also through the joiner.
    let new = vec![handles[0].clone(), handles[1].clone(), joiner.clone()];
    wait_leader(&new).await;
    let (last, idx) = ledger.append_until_decided(&joiner, 99).await;
    // The joiner's stream: configuration 1 from its handover (10 entries, some racing ones
    // maybe, then the StopSign), then configuration 2's log.
    let mut stream = joiner.subscribe_decided(0).await.expect("subscribed");
    let mut old_values = Vec::new();
    let mut new_values = Vec::new();
    loop {
        let e = within("the joiner's stream", stream.next())
            .await
            .expect("open");
        match (e.config_id, e.entry) {
            (1, LogEntry::Decided(v)) => old_values.push(v),
            (1, LogEntry::StopSign(ss, true)) => assert_eq!(ss.next_config.configuration_id, 2),
            (2, LogEntry::Decided(v)) => {
                new_values.push(v);
                if e.idx == idx {
                    assert_eq!(v, last);
                    break;
                }
            }
            other => panic!("unexpected entry {other:?}"),
        }
    }
    // Every append decided anywhere is in the joiner's stream, and nothing is there twice.
    let all: Vec<u64> = old_values.iter().chain(&new_values).copied().collect();
    let unique: std::collections::BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an entry appears twice: {all:?}");
    for (v, _) in &ledger.decided {
        assert!(
            unique.contains(v),
            "{v} was decided but the joiner never saw it"
        );
    }
    for v in &all {
        assert!(ledger.decided.iter().any(|(d, _)| d == v) || ledger.in_doubt.contains(v));
    }
    // A retired node refuses appends with the core's error.
    let refused = handles[2].append_notify(1000).await;
    assert!(
        matches!(refused, Err(omnipaxos_runtime::AppendError::Propose(_))),
        "{refused:?}"
    );
    for h in handles.iter().chain([&joiner]) {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_next_storage_fails_to_open_stays_reports_it_and_moves_once_it_opens() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let net = MemoryNetwork::new();
    let old = [1, 2, 3];
    let failures_left = Arc::new(AtomicUsize::new(2));
    let handles: Vec<_> = old
        .iter()
        .map(|&p| {
            let op: OmniPaxos<u64, MemoryStorage<u64>> = config(1, &old)
                .build_for_server(server_config(p), MemoryStorage::default())
                .expect("config");
            let failures_left = failures_left.clone();
            // Node 1's storage for configuration 2 fails to open twice.
            let factory = move |_config_id: u32| {
                let fail = p == 1
                    && failures_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                match fail {
                    true => Err("disk not mounted".to_string()),
                    false => Ok(MemoryStorage::default()),
                }
            };
            spawn_reconfigurable(
                op,
                RuntimeConfig::default(),
                net.transport(),
                factory,
                vec![],
            )
        })
        .collect();
    wait_leader(&handles).await;
    let mut events = handles[0].subscribe_events();
    handles[2]
        .reconfigure(config(2, &old), None)
        .await
        .expect("proposed");
    within("node 1 reports the failed open", async {
        loop {
            if let Ok(OmniPaxosEvent::StorageFailed { error }) = events.recv().await {
                assert!(error.contains("disk not mounted"), "{error}");
                break;
            }
        }
    })
    .await;
    // It stays (it does not retire) and moves once the storage opens.
    wait_metrics(&handles[0], "node 1 in configuration 2", |m| {
        m.configuration_id == 2
    })
    .await;
    assert_eq!(failures_left.load(Ordering::SeqCst), 0);
    let mut ledger = Ledger::default();
    ledger.append_until_decided(&handles[0], 7).await;
    for h in &handles {
        h.shutdown().await;
    }
}
