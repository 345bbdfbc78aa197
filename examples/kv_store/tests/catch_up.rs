//! A follower that was down while more than a frame's worth of writes were decided catches up
//! when it restarts: its log synchronisation (about 24 MB, above the transport's 16 MiB frame
//! limit, which once made the leader refuse it on every try) arrives in parts, no frame on the
//! wire is above the limit, and every key reads back on the follower.
//!
//! Not checked here: that no election happens on the way. The leader builds the
//! synchronisation and the follower writes it on their own threads, which in a debug build on a
//! loaded machine takes longer than the 100 ms election round (issue 15); a release build
//! caught up 50 MB without one (`docs/performance.md`, "Large state").

mod support;

use kv_store::client::{key_path, request};
use kv_store::demo::Demo;
use std::path::PathBuf;
use std::time::Duration;
use support::metrics::{scrape, sum, value};

/// The runtime's default `max_frame_bytes`.
const FRAME: f64 = (16 << 20) as f64;
const KEYS: usize = 240;
const VALUE_BYTES: usize = 100_000;

/// Writes `KEYS` values of `VALUE_BYTES` through node `pid` from 8 threads; returns them.
fn write_large_values(cluster: &Demo, pid: u64) -> Vec<(String, String)> {
    let addr = cluster.http[&pid];
    let writers: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut written = Vec::new();
                for i in (t..KEYS).step_by(8) {
                    let key = format!("large-{i:04}");
                    let fill = char::from(b'a' + (i % 26) as u8);
                    let value: String = std::iter::repeat_n(fill, VALUE_BYTES).collect();
                    let r = request(
                        addr,
                        "PUT",
                        &key_path(&key),
                        &value,
                        Duration::from_secs(30),
                    )
                    .expect("PUT");
                    assert_eq!(r.status, 200, "PUT {key}: {}", r.body);
                    written.push((key, value));
                }
                written
            })
        })
        .collect();
    writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect()
}

#[test]
fn a_follower_behind_by_more_than_a_frame_catches_up_in_parts() {
    let mut cluster = Demo::start(PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))).unwrap();
    let leader = cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let follower = [1, 2, 3].into_iter().find(|p| *p != leader).unwrap();
    cluster.kill(follower);
    let written = write_large_values(&cluster, leader);
    for (key, value) in &written {
        cluster.acknowledged.insert(key.clone(), value.clone());
    }
    let target = cluster.status(leader).unwrap()["decided_idx"]
        .as_u64()
        .unwrap();

    cluster.spawn(follower).unwrap();
    cluster
        .wait_for("the restarted follower to catch up", |d| {
            (d.status(follower)?["applied_idx"].as_u64()? >= target).then_some(())
        })
        .unwrap();
    cluster.verify_on(follower).unwrap();

    // The synchronisation was larger than a frame; no frame was.
    let received = scrape(&cluster, follower);
    let sync_in = sum(
        &received,
        "omnipaxos_message_bytes_total",
        &[("kind", "AcceptSync"), ("direction", "in")],
    );
    assert!(
        sync_in > FRAME,
        "the follower received {sync_in} bytes of AcceptSync"
    );
    for pid in cluster.live() {
        let largest = value(&scrape(&cluster, pid), "omnipaxos_largest_frame_bytes", &[])
            .expect("omnipaxos_largest_frame_bytes");
        assert!(
            largest > 0.0 && largest <= FRAME + 5.0,
            "node {pid}: a frame of {largest} bytes"
        );
    }
}
