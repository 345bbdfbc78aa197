//! The Prometheus export of a three-node cluster on the in-memory transport: every scrape is a
//! well-formed OpenMetrics text, and its values move as the cluster works (decided index,
//! latencies and traffic with writes, the leader-change counter with a leader change).

mod common;

use common::*;
use omnipaxos_runtime::prometheus::{parse_text, Sample};
use omnipaxos_runtime::prometheus_client::encoding::text::encode;
use omnipaxos_runtime::prometheus_client::registry::Registry;
use omnipaxos_runtime::OmniPaxosHandle;

/// A registry with `handle`'s metrics in it.
fn registry_of(handle: &OmniPaxosHandle<u64>) -> Registry {
    let mut registry = Registry::default();
    handle.register_prometheus(&mut registry);
    registry
}

/// Scrapes `registry` and checks the text strictly.
fn scrape(registry: &Registry) -> Vec<Sample> {
    let mut text = String::new();
    encode(&mut text, registry).expect("encodes");
    parse_text(&text).unwrap_or_else(|e| panic!("not valid OpenMetrics: {e}\n{text}"))
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_move_with_writes_and_a_leader_change() {
    let nodes = [1, 2, 3];
    let (net, handles) = memory_cluster(&nodes);
    let leader = wait_leader(&handles).await;
    let handle = |pid: u64| handles[(pid - 1) as usize].clone();
    let registries: Vec<Registry> = handles.iter().map(registry_of).collect();
    let before = scrape(&registries[(leader - 1) as usize]);
    let decided_before = value(&before, "omnipaxos_decided_index", &[]);
    assert_eq!(value(&before, "omnipaxos_leader", &[]), leader as f64);
    assert_eq!(value(&before, "omnipaxos_role", &[("role", "leader")]), 1.0);
    assert_eq!(
        value(&before, "omnipaxos_role", &[("role", "follower")]),
        0.0
    );

    let mut ledger = Ledger::default();
    for v in 1..=20 {
        ledger.append_until_decided(&handle(leader), v).await;
    }
    // Metrics are published every tick: wait for a picture with the writes in it.
    let decided = wait_metrics(&handle(leader), "the writes in the metrics", |m| {
        m.decided_idx as f64 >= decided_before + 20.0
    })
    .await
    .decided_idx;
    let after = scrape(&registries[(leader - 1) as usize]);
    assert!(value(&after, "omnipaxos_decided_index", &[]) >= decided as f64);
    assert!(value(&after, "omnipaxos_proposals_total", &[]) >= 20.0);
    assert!(value(&after, "omnipaxos_decided_entries_total", &[]) >= 20.0);
    assert!(value(&after, "omnipaxos_append_to_decide_seconds_count", &[]) >= 20.0);
    assert!(value(&after, "omnipaxos_storage_write_seconds_count", &[]) >= 1.0);
    assert!(value(&after, "omnipaxos_storage_writes_total", &[]) >= 1.0);
    let follower = nodes.iter().copied().find(|p| *p != leader).unwrap();
    let peer = follower.to_string();
    let accepts_out = value(
        &after,
        "omnipaxos_messages_total",
        &[
            ("peer", &peer),
            ("kind", "AcceptDecide"),
            ("direction", "out"),
        ],
    );
    assert!(
        accepts_out >= 1.0,
        "{accepts_out} AcceptDecide messages sent"
    );
    assert_eq!(
        value(&after, "omnipaxos_peer_connected", &[("peer", &peer)]),
        1.0
    );
    assert_eq!(value(&after, "omnipaxos_connected_peers", &[]), 2.0);

    // The leader is cut off: the survivors count a leader change and report the link as down.
    // The counts are read before the leader is looked up again, so a change in between (a
    // slow machine) counts too.
    let before: Vec<f64> = registries
        .iter()
        .map(|r| value(&scrape(r), "omnipaxos_leader_changes_total", &[]))
        .collect();
    let leader = wait_leader(&handles).await;
    net.isolate(leader);
    let survivors: Vec<u64> = nodes.iter().copied().filter(|p| *p != leader).collect();
    let new_leader = wait_leader(&survivors.iter().map(|p| handle(*p)).collect::<Vec<_>>()).await;
    assert_ne!(new_leader, leader);
    for pid in survivors {
        let count = before[(pid - 1) as usize];
        wait_metrics(&handle(pid), "the leader change in the metrics", |m| {
            m.leader_changes as f64 > count && !m.peers[&leader].connected
        })
        .await;
        let survivor = scrape(&registries[(pid - 1) as usize]);
        assert!(value(&survivor, "omnipaxos_leader_changes_total", &[]) > count);
        let link = [("peer", leader.to_string())];
        let link: Vec<(&str, &str)> = link.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(value(&survivor, "omnipaxos_peer_connected", &link), 0.0);
    }
    for h in &handles {
        h.shutdown().await;
    }
}
