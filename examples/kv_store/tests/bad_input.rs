//! Bad input: malformed requests, unknown keys and routes, a request when no quorum can decide,
//! frames from unknown peers and oversized frames, and broken config files.

use kv_store::client::key_path;
use kv_store::demo::Demo;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))
}

#[test]
fn malformed_requests_and_unknown_keys() {
    let cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let addr = cluster.http[&1];
    let t = Duration::from_secs(10);
    let r = cluster
        .client
        .request(addr, "GET", &key_path("missing"), "", t)
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body["error"].as_str().unwrap().contains("no such key"));
    let r = cluster
        .client
        .request(addr, "DELETE", &key_path("missing"), "", t)
        .unwrap();
    assert_eq!(r.status, 404);
    let r = cluster
        .client
        .request(addr, "GET", "/nothing/here", "", t)
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body["error"].is_string());
    let long = "k".repeat(2000);
    let r = cluster
        .client
        .request(addr, "PUT", &key_path(&long), "v", t)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    // A body that is not UTF-8.
    let (status, body) = cluster
        .client
        .request_bytes(addr, "PUT", "/kv/x", b"\xff\xfe", t)
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("UTF-8"));
    // And the cluster still works.
    let r = cluster
        .client
        .request(addr, "PUT", &key_path("fine"), "yes", t)
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_request_without_a_quorum_gets_503_in_bounded_time() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    cluster.kill(2);
    cluster.kill(3);
    let started = std::time::Instant::now();
    let r = cluster
        .client
        .request(
            cluster.http[&1],
            "PUT",
            &key_path("k"),
            "v",
            Duration::from_secs(15),
        )
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("not decided"));
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn unknown_peers_and_oversized_frames_are_disconnected() {
    let cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let config = std::fs::read_to_string(cluster.dir().join("node1.toml")).unwrap();
    let peer_addr: std::net::SocketAddr = config
        .lines()
        .find_map(|l| l.strip_prefix("peer_addr = "))
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    // The runtime's frames: a 4-byte length (kind + body), a kind (0 = hello with the sender's
    // pid, 1 = a message), the body.
    let closed = |hello: u64, frame: &[u8]| {
        let mut s = TcpStream::connect(peer_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut bytes = 9u32.to_be_bytes().to_vec();
        bytes.push(0);
        bytes.extend_from_slice(&hello.to_be_bytes());
        bytes.extend_from_slice(frame);
        // The node may hang up before it read everything: a failed write is a closed
        // connection too.
        if s.write_all(&bytes).is_err() {
            return true;
        }
        // The node may answer with a TLS alert before it hangs up: read to the end.
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    assert!(closed(99, &[]), "a hello from pid 99 closes the connection");
    assert!(
        closed(2, &u32::MAX.to_be_bytes()),
        "an oversized frame closes the connection"
    );
    assert!(
        closed(2, &[0, 0, 0, 4, 1, 0xff, 0xff, 0xff]),
        "an undecodable frame closes the connection"
    );
    // The peer port speaks TLS: plain frames end at the handshake (tests/security.rs sends
    // the same frames through TLS with a certificate the cluster does not trust).
    let log = std::fs::read_to_string(cluster.dir().join("node1.log")).unwrap();
    assert!(log.contains("TLS handshake failed"), "logged: {log}");
    // The cluster is unaffected.
    let r = cluster
        .client
        .request(
            cluster.http[&1],
            "PUT",
            &key_path("ok"),
            "1",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn broken_config_files_exit_2_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |path: &std::path::Path| {
        let out = Command::new(exe())
            .args(["node", "--config"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let missing = dir.path().join("missing.toml");
    let (code, err) = run(&missing);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[cluster_config]\nconfiguration_id = 1\nnodes = [1, 2]\n[server_config]\npid = 1\n\
         [node]\npeer_addr = \"not an address\"\nhttp_addr = \"127.0.0.1:1\"\ndata_dir = \"d\"\n[peers]\n2 = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let (code, err) = run(&bad);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bad.toml") && err.contains("node.peer_addr"),
        "{err}"
    );

    // No [tls] table and no explicit insecure_peers: refused, saying how to fix it.
    let open = dir.path().join("open.toml");
    std::fs::write(
        &open,
        "[cluster_config]\nconfiguration_id = 1\nnodes = [1, 2]\n[server_config]\npid = 1\n\
         [node]\npeer_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\ndata_dir = \"d\"\n[peers]\n2 = \"127.0.0.1:3\"\n",
    )
    .unwrap();
    let (code, err) = run(&open);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("open.toml") && err.contains("`tls`") && err.contains("kv_store certs"),
        "{err}"
    );

    // A cluster where a node that fell behind could never fetch the state: refused.
    let stranded = dir.path().join("stranded.toml");
    std::fs::write(
        &stranded,
        "[cluster_config]\nconfiguration_id = 1\nnodes = [1, 2]\n[server_config]\npid = 1\n\
         [node]\npeer_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\ndata_dir = \"d\"\n\
         insecure_peers = true\nplain_http = true\n[peers]\n2 = \"127.0.0.1:3\"\n",
    )
    .unwrap();
    let (code, err) = run(&stranded);
    assert_eq!(code, Some(2));
    assert!(err.contains("http_peers.2"), "{err}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[cluster_config]\nconfiguration_id = \"one\"\n").unwrap();
    let (code, err) = run(&typo);
    assert_eq!(code, Some(2));
    assert!(err.contains("typo.toml"), "{err}");
}
