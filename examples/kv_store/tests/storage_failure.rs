//! A node whose disk fails while it runs stops taking part and says so (`/health` 503 with the
//! cause, `/status`), exits with code 75 after its grace period for a supervisor to restart
//! it, and restarted on a working disk it has every acknowledged write. The failure is
//! injected (feature `failpoints`): the node's journal fails after a number of writes.

use kv_store::demo::Demo;
use kv_store::health::EXIT_FAULT;
use std::time::Duration;

fn exe() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))
}

const FAILPOINT: (&str, &str) = ("KV_STORE_FAIL_JOURNAL_WRITES_AFTER", "40");

/// Sets node `pid`'s `[node] fault_grace_secs`.
fn set_grace(cluster: &Demo, pid: u64, secs: u64) {
    let path = cluster.dir().join(format!("node{pid}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("fault_grace_secs"))
        .collect();
    let text = kept
        .join("\n")
        .replacen("[node]", &format!("[node]\nfault_grace_secs = {secs}"), 1);
    std::fs::write(&path, text).unwrap();
}

/// Writes keys `first..first + count` through node 2 (node 1 answers nothing while its disk
/// fails), remembering the acknowledged ones.
fn write_through_node_2(cluster: &mut Demo, first: usize, count: usize) {
    for i in first..first + count {
        let (key, value) = (format!("key-{i:05}"), format!("value-{i}"));
        let path = kv_store::client::key_path(&key);
        let r = cluster.client.request(
            cluster.http[&2],
            "PUT",
            &path,
            &value,
            Duration::from_secs(10),
        );
        if r.is_ok_and(|r| r.status == 200) {
            cluster.acknowledged.insert(key, value);
        }
    }
}

#[test]
fn a_node_whose_disk_fails_says_so_exits_75_and_restarts_with_everything() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.write_keys("before", 0, 20).unwrap();
    // While it waits out its (long) grace period, the node says why it stopped.
    cluster.kill(1);
    set_grace(&cluster, 1, 3600);
    cluster.spawn_with_env(1, &[FAILPOINT]).unwrap();
    write_through_node_2(&mut cluster, 20, 100);
    let body = cluster
        .wait_for("node 1's /health to say its storage failed", |d| {
            let r = d
                .client
                .request(d.http[&1], "GET", "/health", "", Duration::from_secs(2))
                .ok()?;
            (r.status == 503).then_some(r.body)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log(1)));
    assert_eq!(body["fault"]["kind"], "storage", "{body}");
    let status = cluster.status(1).unwrap();
    assert_eq!(status["fault"]["kind"], "storage", "{status}");
    // With no grace, it exits at once with the code a supervisor restarts on.
    cluster.kill(1);
    set_grace(&cluster, 1, 0);
    cluster.spawn_with_env(1, &[FAILPOINT]).unwrap();
    write_through_node_2(&mut cluster, 120, 100);
    assert_eq!(cluster.exit_code(1), Some(EXIT_FAULT), "{}", cluster.log(1));
    // Restarted on a working disk: every acknowledged write.
    cluster.spawn(1).unwrap();
    cluster
        .wait_for("every acknowledged write on node 1", |d| {
            d.verify_on(1).ok()
        })
        .unwrap();
}
