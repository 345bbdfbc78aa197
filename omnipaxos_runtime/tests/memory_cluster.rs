//! A three-node cluster on the in-memory transport: exact indices from every node, across a
//! leader crash; batching read from the metrics; fire-and-forget appends; reads; the far end
//! of a chain writes through the middle.
//!
//! Every outcome is checked against the decided log: an `Ok(idx)` must name the slot that holds
//! the entry on every node, and no entry, whatever its outcome, may be decided twice.

mod common;

use common::*;
use omnipaxos_runtime::{AppendError, OmniPaxosHandle, Role};

/// An append in flight: its value and, once it resolves, its outcome.
type Pending = tokio::task::JoinHandle<(u64, Result<usize, AppendError<u64>>)>;

fn spawn_appends(h: &OmniPaxosHandle<u64>, values: impl Iterator<Item = u64>) -> Vec<Pending> {
    values
        .map(|value| {
            let h = h.clone();
            tokio::spawn(async move { (value, h.append_notify(value).await) })
        })
        .collect()
}

async fn collect(ledger: &mut Ledger, tasks: Vec<Pending>) {
    for t in tasks {
        let (value, result) = within("append", t).await.expect("task");
        ledger.record(value, result);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_notify_from_every_node_resolves_with_the_true_index() {
    let nodes = [1, 2, 3];
    let (_net, handles) = memory_cluster(&nodes);
    wait_leader(&handles).await;
    let mut tasks = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        let base = (i as u64 + 1) * 1000;
        tasks.extend(spawn_appends(h, base..base + 50));
    }
    let mut ledger = Ledger::default();
    collect(&mut ledger, tasks).await;
    assert!(!ledger.decided.is_empty());
    ledger.check(&handles).await;
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
    let start = fresh_metrics(&handle(leader)).await.accepted_idx;
    let near_tasks = spawn_appends(&handle(near), 10_000..10_020);
    let far_tasks = spawn_appends(&handle(far), 20_000..20_020);
    let mut ledger = Ledger::default();
    collect(&mut ledger, near_tasks).await;
    wait_metrics(&handle(leader), "far's entries placed", |m| {
        m.accepted_idx >= start + 40
    })
    .await;
    net.isolate(leader);
    handle(leader).shutdown().await;
    let mut far_ledger = Ledger::default();
    collect(&mut far_ledger, far_tasks).await;
    // The survivors go on; every Ok named the true slot, and every in-doubt entry was decided
    // at most once (the runtime never proposed it again).
    net.resume(leader, far);
    let survivors = vec![handle(near), handle(far)];
    wait_leader(&survivors).await;
    ledger.append_until_decided(&survivors[0], 99_000).await;
    ledger.in_doubt.extend(far_ledger.in_doubt);
    ledger.decided.extend(far_ledger.decided);
    ledger.check(&survivors).await;
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
    let tasks = spawn_appends(&handle(followers[0]), 500..510);
    wait_metrics(&handle(leader), "entries placed on the leader", |m| {
        m.accepted_idx >= before + 10
    })
    .await;
    net.isolate(leader);
    handle(leader).shutdown().await;
    for t in tasks {
        let (_, result) = within("append", t).await.expect("task");
        assert!(
            matches!(result, Err(AppendError::InDoubt { .. })),
            "{result:?}"
        );
    }
    let survivors = vec![handle(followers[0]), handle(followers[1])];
    wait_leader(&survivors).await;
    let mut ledger = Ledger::default();
    ledger.append_until_decided(&survivors[1], 7).await;
    ledger.check(&survivors).await;
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
    let before = fresh_metrics(&leader_handle).await;
    let mut tasks = Vec::new();
    for caller in 0..64u64 {
        let h = leader_handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for k in 0..100u64 {
                ok += u64::from(h.append_notify(caller * 1000 + k).await.is_ok());
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += within("callers", t).await.expect("task");
    }
    let after = wait_metrics(&leader_handle, "metrics after the load", |m| {
        m.appends_decided >= before.appends_decided + ok
    })
    .await;
    let writes = after.storage_writes - before.storage_writes;
    let entries = after.decided_entries - before.decided_entries;
    let ratio = writes as f64 / entries as f64;
    eprintln!("{writes} storage writes for {entries} decided entries: {ratio:.4} per entry");
    assert!(entries >= 1000, "only {entries} entries decided");
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
    let mut ledger = Ledger::default();
    let (_, idx) = ledger.append_until_decided(&handles[0], 21).await;
    // A read on any node resolves at or after every write that completed before it.
    let read = handles[2].read_linearizable().await.expect("read index");
    assert!(read > idx, "read index {read} before the write at {idx}");
    // The stream gives every decided entry once, in index order.
    let mut next = 0;
    while next <= idx {
        let e = within("decided stream", stream.next())
            .await
            .expect("stream open");
        assert_eq!(e.idx, next, "the stream skipped or repeated an index");
        next += 1;
    }
    let log = decided_log(&handles[2]).await;
    assert!(log.contains(&Some(21)) || ledger.decided.iter().any(|(v, _)| log.contains(&Some(*v))));
    for h in &handles {
        h.shutdown().await;
    }
    // What was buffered is still read, then the stream ends.
    within("the stream ends when the node stops", async {
        while stream.next().await.is_some() {}
    })
    .await;
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
        if m.role == Role::Leader {
            break middle;
        }
        if let Some(l) = m.leader.filter(|l| *l != middle) {
            if fresh_metrics(&handle(l)).await.role == Role::Leader {
                break l;
            }
        }
    };
    let far = if leader == a { b } else { a };
    let mut ledger = Ledger::default();
    for k in 0..20u64 {
        ledger.append(&handle(far), 70_000 + k).await;
    }
    // Whatever the elections under partial connectivity do, the far end gets writes decided.
    ledger.append_until_decided(&handle(far), 80_000).await;
    ledger.check(&handles).await;
    let still = fresh_metrics(&handle(far)).await.leader == Some(leader);
    if leader != middle && still {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_reaches_a_deposed_leader_is_forwarded_to_the_new_one() {
    let nodes = [1, 2, 3];
    let (net, handles) = memory_cluster(&nodes);
    let old = wait_leader(&handles).await;
    let others: Vec<u64> = nodes.iter().copied().filter(|p| *p != old).collect();
    let (follower, next) = (others[0], others[1]);
    let handle = |pid: u64| handles[(pid - 1) as usize].clone();
    // The follower's append is on its way to the old leader (held back) when `next` takes over.
    net.pause(follower, old);
    let pending = {
        let h = handle(follower);
        tokio::spawn(async move { h.append_notify(4242).await })
    };
    wait_metrics(&handle(follower), "the append sent", |m| {
        m.pending_requests > 0
    })
    .await;
    handle(next).try_become_leader().await.expect("running");
    wait_metrics(&handle(old), "the old leader deposed", |m| {
        m.leader == Some(next)
    })
    .await;
    net.resume(follower, old);
    // The old leader answers that it did not take the entry; the follower sends it to `next`.
    let result = within("the append", pending).await.expect("task");
    let mut ledger = Ledger::default();
    let idx = ledger.record(4242, result);
    assert!(
        idx.is_some(),
        "the entry was neither forwarded nor decided: {ledger:?}"
    );
    ledger.check(&handles).await;
    for h in &handles {
        h.shutdown().await;
    }
}
