//! A three-node cluster over TCP on 127.0.0.1: exact indices from every node across a leader
//! crash, refused frames change nothing, a log synchronisation larger than a frame arrives in
//! parts, shutdown leaves no task and the store reopens.

mod common;

use common::*;
use omnipaxos::OmniPaxos;
use omnipaxos_runtime::{spawn_actor, wire, AppendError, RuntimeConfig};
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_notify_over_tcp_is_exact_across_a_leader_crash() {
    let nodes = [1, 2, 3];
    let handles = spawn_nodes(&nodes, tcp_transports(&nodes, |_, _| {}));
    let leader = wait_leader(&handles).await;
    let mut tasks = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        for k in 0..30u64 {
            let h = h.clone();
            let value = (i as u64 + 1) * 1000 + k;
            tasks.push(tokio::spawn(async move {
                (value, h.append_notify(value).await)
            }));
        }
    }
    // The leader stops while entries are on their way.
    handles[(leader - 1) as usize].shutdown().await;
    let mut ledger = Ledger::default();
    for t in tasks {
        let (value, result) = within("append", t).await.expect("task");
        match result {
            // Stopped before it was sent anywhere, or while the leader held it.
            Err(AppendError::Shutdown) => ledger.in_doubt.push(value),
            result => {
                ledger.record(value, result);
            }
        }
    }
    let survivors: Vec<_> = handles
        .iter()
        .filter(|h| !h.is_stopped())
        .cloned()
        .collect();
    assert_eq!(survivors.len(), 2);
    wait_leader(&survivors).await;
    for (k, h) in survivors.iter().enumerate() {
        ledger
            .append_until_decided(h, 90_000 + 1000 * k as u64)
            .await;
    }
    ledger.check(&survivors).await;
    for h in &survivors {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_strangers_and_oversized_frames_are_refused_and_change_nothing() {
    let nodes = [1, 2, 3];
    let transports = tcp_transports(&nodes, |_, c| c.max_frame_bytes = 64 * 1024);
    let addresses: Vec<_> = transports
        .iter()
        .map(|t| t.local_addr().expect("bound"))
        .collect();
    let handles = spawn_nodes(&nodes, transports);
    let leader = wait_leader(&handles).await;
    let target = &handles[(leader - 1) as usize];
    let ballot = target.metrics().borrow().ballot;
    // A valid append for the leader, from a pid that is not a peer.
    let append = wire::WireMessage::Append {
        incarnation: 1,
        ballot,
        entries: vec![(1, 666u64)],
    };
    let mut body = Vec::new();
    wire::encode(&append, &mut body).expect("encode");
    send_raw(
        addresses[(leader - 1) as usize],
        &[(0, 99u64.to_be_bytes().to_vec()), (1, body)],
    )
    .await;
    wait_metrics(target, "the stranger refused", |m| m.frames_refused >= 1).await;
    // A frame above the limit, even from a peer's pid, closes the connection unread.
    let before = target.metrics().borrow().frames_refused;
    send_raw(
        addresses[(leader - 1) as usize],
        &[(0, 2u64.to_be_bytes().to_vec()), (1, vec![0u8; 100 * 1024])],
    )
    .await;
    wait_metrics(target, "the oversized frame refused", |m| {
        m.frames_refused > before
    })
    .await;
    // The cluster still works, and 666 was never appended.
    let (_, idx) = Ledger::default().append_until_decided(&handles[0], 7).await;
    for h in &handles {
        wait_decided(h, idx + 1).await;
        let log = decided_log(h).await;
        assert!(
            !log.contains(&Some(666)),
            "a stranger's entry was appended: {log:?}"
        );
    }
    for h in &handles {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_leaves_no_task_running_and_the_store_reopens() {
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = [1, 2, 3];
    let path = |pid: u64| {
        dir.path()
            .join(format!("node-{pid}"))
            .to_string_lossy()
            .to_string()
    };
    let open = |pid: u64| {
        PersistentStorage::try_open(PersistentStorageConfig::with_path(path(pid))).expect("open")
    };
    let transports = tcp_transports(&nodes, |_, _| {});
    let handles: Vec<_> = nodes
        .iter()
        .zip(transports)
        .map(|(&pid, t)| {
            let op: OmniPaxos<u64, PersistentStorage<u64>> = cluster_config(&nodes)
                .build_for_server(server_config(pid), open(pid))
                .expect("config");
            spawn_actor(op, RuntimeConfig::default(), t)
        })
        .collect();
    wait_leader(&handles).await;
    let (_, idx) = Ledger::default()
        .append_until_decided(&handles[1], 42)
        .await;
    for h in &handles {
        wait_decided(h, idx + 1).await;
    }
    for h in &handles {
        h.shutdown().await;
    }
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        baseline,
        "tasks left running after shutdown"
    );
    // Every store reopens at once and holds the decided entry.
    for &pid in &nodes {
        let op: OmniPaxos<u64, PersistentStorage<u64>> = cluster_config(&nodes)
            .build_for_server(server_config(pid), open(pid))
            .expect("reopened");
        assert!(op.get_decided_idx() > idx);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_node_and_releases_its_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node-1").to_string_lossy().to_string();
    let open = || PersistentStorage::try_open(PersistentStorageConfig::with_path(path.clone()));
    let nodes = [1];
    let op: OmniPaxos<u64, PersistentStorage<u64>> = cluster_config(&nodes)
        .build_for_server(server_config(1), open().expect("open"))
        .expect("config");
    let transport = tcp_transports(&nodes, |_, _| {}).remove(0);
    let handle = spawn_actor(op, RuntimeConfig::default(), transport);
    let clone = handle.clone();
    let (_, idx) = Ledger::default().append_until_decided(&clone, 5).await;
    let mut metrics = handle.metrics();
    drop(handle);
    drop(clone);
    // The node's metrics sender goes away only after the instance (and its store) is dropped.
    within("the node stops", async {
        while metrics.changed().await.is_ok() {}
    })
    .await;
    let reopened: OmniPaxos<u64, PersistentStorage<u64>> = cluster_config(&nodes)
        .build_for_server(server_config(1), open().expect("the store is free again"))
        .expect("config");
    assert!(reopened.get_decided_idx() > idx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_synchronisation_larger_than_a_frame_arrives_in_parts() {
    // Frames of at most 4 KiB; node 3 is down while 6,000 entries are decided, then restarts
    // from its store: the leader's `AcceptSync` to it carries all of them, some 20 KiB.
    const FRAME: usize = 4096;
    const ENTRIES: u64 = 6000;
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = [1, 2, 3];
    let open = |pid: u64| {
        let path = dir.path().join(format!("node-{pid}"));
        PersistentStorage::try_open(PersistentStorageConfig::with_path(
            path.to_string_lossy().to_string(),
        ))
        .expect("open")
    };
    let spawn = |pid: u64, transport| {
        let op: OmniPaxos<u64, PersistentStorage<u64>> = cluster_config(&nodes)
            .build_for_server(server_config(pid), open(pid))
            .expect("config");
        spawn_actor(op, RuntimeConfig::default(), transport)
    };
    let transports = tcp_transports(&nodes, |_, c| c.max_frame_bytes = FRAME);
    let addresses: Vec<_> = transports
        .iter()
        .map(|t| t.local_addr().expect("bound"))
        .collect();
    let mut handles: Vec<_> = nodes
        .iter()
        .zip(transports)
        .map(|(&pid, t)| spawn(pid, t))
        .collect();
    wait_leader(&handles).await;
    handles[2].shutdown().await;
    let survivors = &handles[..2];
    let leader = wait_leader(survivors).await;
    let leader = handles[(leader - 1) as usize].clone();
    // In rounds, so that the node's request queue never fills.
    for round in 0..ENTRIES / 500 {
        for value in round * 500..(round + 1) * 500 {
            leader.append(value).await.expect("append");
        }
        wait_decided(&leader, ((round + 1) * 500) as usize).await;
    }
    for h in survivors {
        wait_decided(h, ENTRIES as usize).await;
    }
    // Node 3 again, on its old address and store.
    let mut config = omnipaxos_runtime::NetworkConfig::new(addresses[2], Default::default());
    config.max_frame_bytes = FRAME;
    let mut transport =
        omnipaxos_runtime::transport::tcp::TcpTransport::bind(3, config).expect("rebind");
    for (pid, address) in [(1, addresses[0]), (2, addresses[1])] {
        omnipaxos_runtime::transport::Transport::add_peer(
            &mut transport,
            pid,
            Some(address.to_string()),
        );
    }
    handles[2] = spawn(3, transport);
    wait_decided(&handles[2], ENTRIES as usize).await;
    let expected = decided_log(&leader).await;
    assert_eq!(decided_log(&handles[2]).await, expected);
    // Counters as published after everything above (the metrics are a watch, updated on ticks).
    let mut metrics = Vec::new();
    for h in &handles {
        metrics.push(fresh_metrics(h).await);
    }
    let sync =
        |m: &omnipaxos_runtime::Metrics| m.messages.get("AcceptSync").cloned().unwrap_or_default();
    let received = sync(&metrics[2]).bytes_in;
    assert!(
        received > 4 * FRAME as u64,
        "node 3 received {received} bytes of AcceptSync"
    );
    // Sent by whichever node led when node 3 came back.
    let sent = metrics[..2].iter().map(|m| sync(m).bytes_out).max();
    assert!(
        sent > Some(4 * FRAME as u64),
        "{sent:?} bytes of AcceptSync sent"
    );
    assert_eq!(metrics[2].frames_refused, 0);
    for m in &metrics {
        assert!(m.largest_frame_bytes > 0);
        assert!(
            m.largest_frame_bytes <= FRAME as u64 + 5,
            "node {} saw a frame of {} bytes",
            m.pid,
            m.largest_frame_bytes
        );
    }
    for h in &handles {
        h.shutdown().await;
    }
}
