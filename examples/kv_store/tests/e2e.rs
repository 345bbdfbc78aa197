//! End to end: three `kv_store node` processes on 127.0.0.1, 1,000 keys written through
//! different nodes, the leader SIGKILLed, writes continue, the killed node restarts from its
//! directory, and every acknowledged key is read back from every node.

use kv_store::demo::Demo;
use std::path::PathBuf;

#[test]
fn acknowledged_writes_survive_a_leader_crash_and_restart() {
    let mut cluster = Demo::start(PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))).unwrap();
    let leader = cluster.wait_for("a leader", |d| d.leader()).unwrap();
    cluster.write_keys("before", 0, 1000).unwrap();
    cluster.kill(leader);
    let next = cluster
        .wait_for("a new leader", |d| d.leader().filter(|l| *l != leader))
        .unwrap();
    assert_ne!(next, leader);
    cluster.write_keys("after", 1000, 200).unwrap();
    cluster.spawn(leader).unwrap();
    let target = cluster
        .status(next)
        .and_then(|s| s["decided_idx"].as_u64())
        .unwrap();
    cluster
        .wait_for("the restarted node to catch up", |d| {
            (d.status(leader)?["applied_idx"].as_u64()? >= target).then_some(())
        })
        .unwrap();
    assert_eq!(cluster.acknowledged.len(), 1200);
    for pid in [1, 2, 3] {
        cluster.verify_on(pid).unwrap();
    }
}
