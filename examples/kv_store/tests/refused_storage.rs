//! A node whose stored state is damaged, or not its own, refuses to start (exit code 76, the
//! file and the offset in its log) rather than take part with less than it promised: the
//! cluster becomes unavailable, not wrong.

use kv_store::demo::Demo;
use kv_store::health::EXIT_CORRUPT;
use std::path::Path;

fn exe() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))
}

/// Flips one bit of the journal at `path`, `fraction` of the way into its records (the file
/// is allocated ahead: zeros follow them).
fn flip_in_records(path: &Path, fraction: f64) {
    let mut bytes = std::fs::read(path).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    let at = (end as f64 * fraction) as usize;
    bytes[at] ^= 0x08;
    std::fs::write(path, bytes).unwrap();
}

/// Damages node `pid`'s journal (stopped), starts it, and checks that it refuses to run
/// (exit 76); returns its log.
fn refused_after_damage(cluster: &mut Demo, pid: u64, fraction: f64) -> String {
    let journal = cluster.data_dir(pid).join("config-1").join("journal");
    flip_in_records(&journal, fraction);
    cluster.spawn(pid).unwrap();
    let code = cluster.exit_code(pid);
    let log = cluster.log(pid);
    assert_eq!(code, Some(EXIT_CORRUPT), "{log}");
    assert!(log.contains("corrupt at byte"), "{log}");
    log
}

#[test]
fn a_node_with_a_damaged_journal_refuses_to_start_and_the_cluster_waits() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.write_keys("before", 0, 50).unwrap();
    cluster.kill(1);
    cluster.kill(2);
    let log = refused_after_damage(&mut cluster, 1, 0.5);
    assert!(log.contains("journal"), "{log}");
    // Node 3 alone decides nothing: a write is not acknowledged.
    let put = cluster.client.request(
        cluster.http[&3],
        "PUT",
        &kv_store::client::key_path("after"),
        "never",
        std::time::Duration::from_secs(3),
    );
    assert!(
        put.is_err() || put.as_ref().is_ok_and(|r| r.status != 200),
        "{put:?}"
    );
}

/// Swaps the data directories of nodes `a` and `b` (both stopped).
fn swap_data_dirs(cluster: &Demo, a: u64, b: u64) {
    let (one, two) = (cluster.data_dir(a), cluster.data_dir(b));
    let aside = cluster.dir().join("aside");
    std::fs::rename(&one, &aside).unwrap();
    std::fs::rename(&two, &one).unwrap();
    std::fs::rename(&aside, &two).unwrap();
}

#[test]
fn a_node_started_on_another_nodes_directory_refuses_to_start() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.write_keys("before", 0, 5).unwrap();
    cluster.kill(1);
    cluster.kill(2);
    swap_data_dirs(&cluster, 1, 2);
    cluster.spawn(2).unwrap();
    assert_eq!(
        cluster.exit_code(2),
        Some(EXIT_CORRUPT),
        "{}",
        cluster.log(2)
    );
    assert!(
        cluster.log(2).contains("belongs to node 1"),
        "{}",
        cluster.log(2)
    );
    // Put back, both start and the cluster goes on with every key.
    swap_data_dirs(&cluster, 1, 2);
    cluster.spawn(1).unwrap();
    cluster.spawn(2).unwrap();
    cluster.wait_for("a leader", Demo::leader).unwrap();
    cluster.verify_on(2).unwrap();
}

/// The operator's bad day: node 3's journal damaged while node 2 is down. The cluster
/// waits; node 2 comes back; `kv_store client replace` puts a new node 4 in node 3's place
/// (it receives the state), and every acknowledged write is on nodes 1, 2 and 4.
#[test]
fn a_node_refused_for_corruption_is_replaced_by_one_command_and_nothing_is_lost() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.write_keys("before", 0, 40).unwrap();
    cluster.kill(2);
    cluster.kill(3);
    refused_after_damage(&mut cluster, 3, 0.33);
    cluster.spawn(2).unwrap();
    cluster
        .wait_for("a leader of nodes 1 and 2", |d| {
            let s = d.status(1)?;
            (s["leader_ready"] == true).then_some(())
        })
        .unwrap();
    cluster.write_keys("with node 3 refused", 40, 10).unwrap();
    cluster.spawn(4).unwrap();
    let certs = cluster.dir().join("certs");
    let output = std::process::Command::new(exe())
        .arg("client")
        .args(["--addr", &cluster.http[&1].to_string()])
        .arg("--cacert")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("client-root.pem"))
        .arg("--key")
        .arg(certs.join("client-root.key"))
        .args([
            "--server-name",
            "node-1",
            "replace",
            "--old",
            "3",
            "--new",
            "4",
        ])
        .args(["--peer", &cluster.peer[&4].to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    cluster
        .wait_for("configuration 2 on nodes 1, 2 and 4", |d| {
            [1, 2, 4]
                .iter()
                .all(|p| d.status(*p).is_some_and(|s| s["configuration_id"] == 2))
                .then_some(())
        })
        .unwrap();
    for pid in [1, 2, 4] {
        cluster
            .wait_for("every acknowledged write", |d| d.verify_on(pid).ok())
            .unwrap();
    }
}
