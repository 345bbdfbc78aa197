//! A three-node cluster on the in-memory transport: exact indices from every node, across a
//! leader crash; batching read from the metrics; fire-and-forget appends; reads.

mod common;

use common::*;
use omnipaxos_runtime::AppendError;
use std::collections::BTreeSet;

/// Every `Ok(idx)` names the slot that really holds the entry in the decided log of every node.
async fn check_indices(
    handles: &[omnipaxos_runtime::OmniPaxosHandle<u64>],
    outcomes: &[(u64, usize)],
) {
    let top = outcomes.iter().map(|(_, idx)| idx + 1).max().unwrap_or(0);
    for h in handles {
        wait_decided(h, top).await;
        let log = decided_log(h).await;
        for (value, idx) in outcomes {
            assert_eq!(
                log[*idx],
                Some(*value),
                "entry {value} was reported at {idx}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_notify_from_every_node_resolves_with_the_true_index() {
    let nodes = [1, 2, 3];
    let (_net, handles) = memory_cluster(&nodes);
    wait_leader(&handles).await;
    let mut tasks = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        for k in 0..50u64 {
            let h = h.clone();
            let value = (i as u64 + 1) * 1000 + k;
            tasks.push(tokio::spawn(async move {
                (value, h.append_notify(value).await)
            }));
        }
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let (value, result) = within("append", t).await.expect("task");
        outcomes.push((value, result.expect("decided: no fault was injected")));
    }
    let indices: BTreeSet<usize> = outcomes.iter().map(|(_, i)| *i).collect();
    assert_eq!(
        indices.len(),
        outcomes.len(),
        "two entries reported at one index"
    );
    check_indices(&handles, &outcomes).await;
    for h in &handles {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_on_a_follower_while_its_leader_dies_resolves_truthfully() {
    let nodes = [1, 2, 3];
    let (net, handles) = memory_cluster(&nodes);
    let leader = wait_leader(&handles).await;
    let others: Vec<u64> = nodes.iter().copied().filter(|p| *p != leader).collect();
    let (near, far) = (others[0], others[1]);
    let handle = |pid: u64| handles[(pid - 1) as usize].clone();
    // The leader's messages to `far` are held back: `far`'s entries get decided (with `near`)
    // but their outcomes never reach `far` before the leader dies.
    net.pause(leader, far);
    let append = |pid: u64, base: u64| {
        let h = handle(pid);
        (0..20u64)
            .map(|k| {
                let h = h.clone();
                tokio::spawn(async move { (base + k, h.append_notify(base + k).await) })
            })
            .collect::<Vec<_>>()
    };
    let near_tasks = append(near, 10_000);
    let far_tasks = append(far, 20_000);
    let mut decided = Vec::new();
    for t in near_tasks {
        let (value, result) = within("append on near", t).await.expect("task");
        decided.push((
            value,
            result.expect("near reaches the leader and a majority"),
        ));
    }
    wait_metrics(&handle(leader), "far's entries placed", |m| {
        m.decided_idx >= 40
    })
    .await;
    net.isolate(leader);
    handle(leader).shutdown().await;
    let mut in_doubt = Vec::new();
    for t in far_tasks {
        let (value, result) = within("append on far", t).await.expect("task");
        match result {
            Ok(idx) => decided.push((value, idx)),
            Err(AppendError::InDoubt { .. }) => in_doubt.push(value),
            Err(other) => panic!("{value}: {other} is not true: the entry was decided"),
        }
    }
    assert!(
        !in_doubt.is_empty(),
        "far never learnt its outcomes, so they are in doubt"
    );
    // The survivors go on; every Ok named the true slot, and every in-doubt entry was in fact
    // decided exactly once (the runtime never proposed it again).
    let survivors = vec![handle(near), handle(far)];
    net.resume(leader, far);
    wait_leader(&survivors).await;
    let idx = within("append after the crash", survivors[0].append_notify(99_999))
        .await
        .expect("the survivors form a majority");
    decided.push((99_999, idx));
    check_indices(&survivors, &decided).await;
    let log = decided_log(&survivors[1]).await;
    for value in in_doubt {
        let copies = log.iter().filter(|v| **v == Some(value)).count();
        assert_eq!(copies, 1, "{value} decided {copies} times");
    }
    for h in &survivors {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_deposed_leader_placed_but_never_replicated_are_in_doubt_and_never_decided() {
    let nodes = [1, 2, 3];
    let (net, handles) = memory_cluster(&nodes);
    let leader = wait_leader(&handles).await;
    let handle = |pid: u64| handles[(pid - 1) as usize].clone();
    let followers: Vec<u64> = nodes.iter().copied().filter(|p| *p != leader).collect();
    for f in &followers {
        net.pause(leader, *f);
    }
    let before = handle(leader).metrics().borrow().accepted_idx;
    let tasks: Vec<_> = (0..10u64)
        .map(|k| {
            let h = handle(followers[0]);
            tokio::spawn(async move { h.append_notify(500 + k).await })
        })
        .collect();
    wait_metrics(&handle(leader), "entries placed on the leader", |m| {
        m.accepted_idx >= before + 10
    })
    .await;
    net.isolate(leader);
    handle(leader).shutdown().await;
    for t in tasks {
        let result = within("append", t).await.expect("task");
        assert!(
            matches!(result, Err(AppendError::InDoubt { .. })),
            "{result:?}"
        );
    }
    let survivors = vec![handle(followers[0]), handle(followers[1])];
    wait_leader(&survivors).await;
    let idx = survivors[1].append_notify(7).await.expect("decided");
    wait_decided(&survivors[0], idx + 1).await;
    let log = decided_log(&survivors[0]).await;
    assert!(
        log.iter().flatten().all(|v| !(500..510).contains(v)),
        "{log:?}"
    );
    for h in &survivors {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_callers_share_storage_writes() {
    let nodes = [1, 2, 3];
    let (_net, handles) = memory_cluster(&nodes);
    let leader = wait_leader(&handles).await;
    let leader_handle = handles[(leader - 1) as usize].clone();
    let before = leader_handle.metrics().borrow().clone();
    let mut tasks = Vec::new();
    for caller in 0..64u64 {
        let h = leader_handle.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..100u64 {
                h.append_notify(caller * 1000 + k).await.expect("decided");
            }
        }));
    }
    for t in tasks {
        within("callers", t).await.expect("task");
    }
    let after = wait_metrics(&leader_handle, "metrics after the load", |m| {
        m.appends_decided >= before.appends_decided + 6400
    })
    .await;
    let writes = after.storage_writes - before.storage_writes;
    let entries = after.decided_entries - before.decided_entries;
    let ratio = writes as f64 / entries as f64;
    eprintln!("{writes} storage writes for {entries} decided entries: {ratio:.4} per entry");
    assert!(entries >= 6400, "{entries} entries decided");
    assert!(
        ratio <= 0.1,
        "{writes} storage writes for {entries} decided entries ({ratio:.3} per entry)"
    );
    for h in &handles {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_subscriptions_and_fire_and_forget_appends() {
    let nodes = [1, 2, 3];
    let (_net, handles) = memory_cluster(&nodes);
    wait_leader(&handles).await;
    let mut stream = handles[2].subscribe_decided(0).await.expect("subscribed");
    for v in 1..=20u64 {
        handles[1].append(v).await.expect("taken");
    }
    let idx = handles[0].append_notify(21).await.expect("decided");
    // A read on any node resolves at or after every write that completed before it.
    let read = handles[2].read_linearizable().await.expect("read index");
    assert!(read > idx, "read index {read} before the write at {idx}");
    let mut seen = Vec::new();
    while seen.len() < 21 {
        let e = within("decided stream", stream.next())
            .await
            .expect("stream open");
        assert_eq!(e.idx, seen.len(), "the stream skipped or repeated an index");
        if let omnipaxos::util::LogEntry::Decided(v) = e.entry {
            seen.push(v);
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=21).collect::<Vec<u64>>());
    for h in &handles {
        h.shutdown().await;
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends when the node stops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_leader_writes_through_a_peer() {
    let nodes = [1, 2, 3];
    let (net, handles) = memory_cluster(&nodes);
    let first = wait_leader(&handles).await;
    let others: Vec<u64> = nodes.iter().copied().filter(|p| *p != first).collect();
    let handle = |pid: u64| handles[(pid - 1) as usize].clone();
    // The chained scenario: one link down. Whichever end leads afterwards, the other end can
    // only reach it through the node in the middle.
    let (a, b, middle) = (first, others[1], others[0]);
    net.cut(a, b);
    let leader = loop {
        let m = fresh_metrics(&handle(middle)).await;
        if m.role == omnipaxos_runtime::Role::Follower {
            if let Some(l) = m.leader.filter(|l| *l != middle) {
                let lm = fresh_metrics(&handle(l)).await;
                if lm.role == omnipaxos_runtime::Role::Leader {
                    break l;
                }
            }
        } else if m.role == omnipaxos_runtime::Role::Leader {
            break middle;
        }
    };
    let far = if leader == a { b } else { a };
    let mut decided = Vec::new();
    for k in 0..20u64 {
        let value = 70_000 + k;
        let idx = within("append on the far end", handle(far).append_notify(value))
            .await
            .expect("the far end of a chain serves writes");
        decided.push((value, idx));
    }
    check_indices(&handles, &decided).await;
    if leader != middle {
        let relayed = fresh_metrics(&handle(middle)).await;
        let appends = relayed.messages.get("Append").copied().unwrap_or_default();
        assert!(
            appends.msgs_in > 0 && appends.msgs_out > 0,
            "the middle relayed nothing: {appends:?}"
        );
    }
    for h in &handles {
        h.shutdown().await;
    }
}
