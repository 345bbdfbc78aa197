//! Replicas are compared: a key planted in one node's state store behind its back (while it was
//! down, through the store's own code, so every checksum holds) makes its digests differ from
//! the others' at the next agreed position, and the nodes raise the `divergence` alarm
//! (`/health` 503 naming the position and the nodes).

use kv_store::demo::Demo;
use kv_store::machine::KeyValues;
use kv_store::state_store::StateStore;
use std::time::Duration;

fn exe() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))
}

/// Node `pid`'s `/health` status code and body.
fn health(cluster: &Demo, pid: u64) -> Option<(u16, serde_json::Value)> {
    let r = cluster
        .client
        .request(
            cluster.http[&pid],
            "GET",
            "/health",
            "",
            Duration::from_secs(2),
        )
        .ok()?;
    Some((r.status, r.body))
}

#[test]
fn a_state_altered_behind_a_nodes_back_raises_the_divergence_alarm() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.write_keys("before", 0, 20).unwrap();
    cluster.kill(2);
    {
        let mut store = StateStore::open(&cluster.data_dir(2).join("state")).unwrap();
        store
            .put("planted".into(), "behind its back".into())
            .unwrap();
    }
    cluster.spawn(2).unwrap();
    for pid in [1, 2, 3] {
        assert_eq!(
            health(&cluster, pid).map_or(200, |h| h.0),
            200,
            "no alarm yet"
        );
    }
    // Past the restarted node's reservation and the next agreed position.
    cluster.write_keys("after", 20, 1300).unwrap();
    let (pid, body) = cluster
        .wait_for("the divergence alarm", |d| {
            [1, 2, 3].iter().find_map(|p| {
                let (code, body) = health(d, *p)?;
                (code == 503).then_some((*p, body))
            })
        })
        .unwrap();
    assert_eq!(body["fault"]["kind"], "divergence", "node {pid}: {body}");
    let cause = body["fault"]["cause"].as_str().unwrap();
    assert!(cause.contains("node 2"), "{cause}");
    let status = cluster.status(pid).unwrap();
    assert_eq!(status["fault"]["kind"], "divergence");
}

#[test]
fn identical_replicas_raise_no_alarm() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.write_keys("before", 0, 20).unwrap();
    cluster.kill(2);
    cluster.spawn(2).unwrap();
    cluster.write_keys("after", 20, 1300).unwrap();
    // Every node took digests past the restart and compared them with both others'.
    let compared = |d: &Demo, p: u64| d.status(p)?["digest_comparisons"].as_u64();
    let before: Vec<u64> = [1, 2, 3]
        .iter()
        .map(|p| compared(&cluster, *p).unwrap_or(0))
        .collect();
    cluster
        .wait_for("two more comparisons on every node", |d| {
            [1, 2, 3]
                .iter()
                .zip(&before)
                .all(|(p, b)| compared(d, *p).is_some_and(|n| n >= b + 2))
                .then_some(())
        })
        .unwrap();
    for pid in [1, 2, 3] {
        assert_eq!(health(&cluster, pid).map(|h| h.0), Some(200), "node {pid}");
    }
}
