//! `GET /metrics` of a running three-process cluster: the text is well-formed OpenMetrics
//! (read by a strict parser), and its values move as the cluster works: the decided index and
//! the HTTP request counts grow with writes, and a leader change increments the counter.

mod support;

use kv_store::demo::Demo;
use std::path::PathBuf;
use std::time::Duration;
use support::metrics::{scrape, value};

const PUTS_OK: [(&str, &str); 3] = [("route", "/kv/{key}"), ("method", "PUT"), ("status", "200")];

#[test]
fn metrics_parse_and_move_with_writes_and_a_leader_change() {
    let mut cluster = Demo::start(PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))).unwrap();
    let leader = cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let before = scrape(&cluster, leader);
    let decided_before = value(&before, "omnipaxos_decided_index", &[]).unwrap();
    assert_eq!(value(&before, "omnipaxos_leader", &[]), Some(leader as f64));
    assert_eq!(
        value(&before, "omnipaxos_role", &[("role", "leader")]),
        Some(1.0)
    );
    for family in [
        "omnipaxos_storage_fsync_seconds_count",
        "omnipaxos_storage_write_seconds_count",
        "omnipaxos_append_to_decide_seconds_count",
        "omnipaxos_connected_peers",
        "omnipaxos_leader_changes_total",
        "omnipaxos_storage_failures_total",
    ] {
        assert!(value(&before, family, &[]).is_some(), "no {family}");
    }

    // 50 writes through the leader: its decided index, request count, fsyncs and traffic grow
    // (the metrics are published every tick: wait until they show the writes).
    for i in 0..50 {
        let path = format!("/kv/metrics-{i}");
        let r = cluster.client.request(
            cluster.http[&leader],
            "PUT",
            &path,
            "v",
            Duration::from_secs(10),
        );
        assert_eq!(r.expect("PUT").status, 200);
    }
    let after = cluster
        .wait_for("the writes in the metrics", |d| {
            let after = scrape(d, leader);
            let decided = value(&after, "omnipaxos_decided_index", &[])?;
            (decided >= decided_before + 50.0).then_some(after)
        })
        .unwrap();
    assert!(value(&after, "kv_store_http_requests_total", &PUTS_OK).unwrap() >= 50.0);
    let put_latency = [("route", "/kv/{key}"), ("method", "PUT")];
    assert!(
        value(
            &after,
            "kv_store_http_request_duration_seconds_count",
            &put_latency
        )
        .unwrap()
            >= 50.0
    );
    assert!(
        value(&after, "omnipaxos_storage_fsync_seconds_count", &[]).unwrap()
            > value(&before, "omnipaxos_storage_fsync_seconds_count", &[]).unwrap()
    );
    assert!(value(&after, "omnipaxos_append_to_decide_seconds_count", &[]).unwrap() >= 50.0);
    let follower = cluster.live().into_iter().find(|p| *p != leader).unwrap();
    let to_follower = [
        ("peer", follower.to_string()),
        ("kind", "AcceptDecide".to_string()),
        ("direction", "out".to_string()),
    ];
    let labels: Vec<(&str, &str)> = to_follower.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(value(&after, "omnipaxos_messages_total", &labels).unwrap() >= 1.0);
    assert!(value(&after, "omnipaxos_message_bytes_total", &labels).unwrap() > 0.0);

    // The leader is killed: the survivors count a leader change. The counts are read before
    // the leader is looked up again, so a change in between (a slow machine) counts too.
    let changes =
        |d: &Demo, pid: u64| value(&scrape(d, pid), "omnipaxos_leader_changes_total", &[]);
    let before: Vec<(u64, f64)> = cluster
        .live()
        .into_iter()
        .map(|pid| (pid, changes(&cluster, pid).unwrap()))
        .collect();
    let leader = cluster.wait_for("the leader", |d| d.leader()).unwrap();
    cluster.kill(leader);
    cluster
        .wait_for("a new leader", |d| d.leader().filter(|l| *l != leader))
        .unwrap();
    for (pid, count) in before.into_iter().filter(|(pid, _)| *pid != leader) {
        cluster
            .wait_for("the leader change in the metrics", |d| {
                (changes(d, pid)? > count).then_some(())
            })
            .unwrap();
        let survivor = scrape(&cluster, pid);
        let link = [("peer", leader.to_string())];
        let link: Vec<(&str, &str)> = link.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            value(&survivor, "omnipaxos_peer_connected", &link),
            Some(0.0)
        );
    }
}
