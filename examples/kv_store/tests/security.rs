//! The attacks of "Closed to outsiders", each tried on a cluster of three kv_store processes
//! with mutual TLS between the nodes (as the demo runs), each asserted to fail: forged peer
//! messages (plain TCP claiming a pid, and TLS with a certificate of another CA), a stale or
//! cross-origin reconfiguration, a flood of connections announcing large frames, thousands of
//! idle HTTP connections, and slow clients.

use kv_store::client::{key_path, Client};
use kv_store::demo::Demo;
use kv_store::entry::{KvCommand, RequestId, Write, WriteOp};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::sequence_paxos::{Compaction, PaxosMessage, PaxosMsg, Prepare};
use omnipaxos::messages::Message;
use omnipaxos::storage::StopSign;
use omnipaxos::ClusterConfig;
use omnipaxos_runtime::transport::tcp::TcpTransport;
use omnipaxos_runtime::transport::{Inbox, Transport};
use omnipaxos_runtime::wire::{self, WireMessage};
use omnipaxos_runtime::NetworkConfig;
use std::io::{ErrorKind, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))
}

const T: Duration = Duration::from_secs(12);
/// A guard against a hang; every wait below ends much sooner when the node behaves.
const GUARD: Duration = Duration::from_secs(60);

/// Every forged message of the attacks, from `from` to `to` in configuration 1.
fn forged_messages(from: u64, to: u64) -> Vec<WireMessage<KvCommand>> {
    let top = Ballot::with(1, u32::MAX, u32::MAX, from);
    let forged_write = KvCommand::Write(Write {
        id: RequestId {
            node: from,
            life: 7,
            seq: 1,
        },
        done_below: 0,
        by: None,
        op: WriteOp::Put {
            key: "forged".into(),
            value: "by an outsider".into(),
        },
    });
    let paxos = |msg| WireMessage::Protocol {
        config_id: 1,
        msg: Message::SequencePaxos(PaxosMessage { from, to, msg }),
    };
    vec![
        paxos(PaxosMsg::ProposalForward(vec![forged_write])),
        paxos(PaxosMsg::Prepare(Prepare {
            n: top,
            decided_idx: 0,
            n_accepted: top,
            accepted_idx: 0,
        })),
        paxos(PaxosMsg::Compaction(Compaction::Snapshot(None))),
        paxos(PaxosMsg::ForwardStopSign(StopSign::with(
            ClusterConfig {
                configuration_id: 1,
                nodes: vec![1, 2, 3],
                flexible_quorum: None,
            },
            None,
        ))),
    ]
}

/// The runtime's frames: a length (kind + body), a kind (0 hello, 1 message), the body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// Sends a hello claiming `from` and `messages` on plain TCP; true if the node hung up.
fn send_plain(addr: SocketAddr, from: u64, messages: &[WireMessage<KvCommand>]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let mut bytes = frame(0, &from.to_be_bytes());
    for m in messages {
        let mut body = Vec::new();
        wire::encode(m, &mut body).unwrap();
        bytes.extend(frame(1, &body));
    }
    let _ = stream.write_all(&bytes);
    hung_up(&mut stream)
}

/// Whether the node closed `stream` (after whatever it sent, e.g. a TLS alert) before the
/// read timeout.
fn hung_up(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn log_of(cluster: &Demo, pid: u64) -> String {
    std::fs::read_to_string(cluster.dir().join(format!("node{pid}.log"))).unwrap_or_default()
}

fn handshake_failures(cluster: &Demo, pid: u64) -> usize {
    log_of(cluster, pid).matches("TLS handshake failed").count()
}

fn assert_nobody_has_the_forged_key(cluster: &Demo) {
    for pid in cluster.live() {
        let r = cluster
            .client
            .request(cluster.http[&pid], "GET", &key_path("forged"), "", T)
            .unwrap();
        assert_eq!(r.status, 404, "node {pid} has the forged key: {}", r.body);
    }
}

fn assert_none_retired(cluster: &Demo) {
    for pid in cluster.live() {
        let status = cluster.wait_for("a status", |d| d.status(pid)).unwrap();
        assert_eq!(status["retired"], false, "node {pid} retired: {status}");
        assert_eq!(status["configuration_id"], 1, "node {pid}: {status}");
    }
}

#[test]
fn forged_peer_messages_change_nothing() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    cluster.write_keys("before the attacks", 0, 40).unwrap();

    // 1. Plain TCP claiming to be node 1 (then 2), to every node: the TLS port hangs up.
    for to in [1, 2, 3] {
        let from = if to == 1 { 2 } else { 1 };
        let before = handshake_failures(&cluster, to);
        assert!(send_plain(
            cluster.peer[&to],
            from,
            &forged_messages(from, to)
        ));
        cluster
            .wait_for("the refusal logged", |d| {
                (handshake_failures(d, to) > before).then_some(())
            })
            .unwrap();
    }

    // 2. TLS with a certificate for node-1 from a CA the cluster does not trust.
    let foreign = tempfile::tempdir().unwrap();
    kv_store::certs::write(foreign.path(), &[1]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let mut network = NetworkConfig::new("127.0.0.1:0".parse().unwrap(), Default::default());
    network.tls = Some(kv_store::certs::node_files(foreign.path(), 1));
    let mut impostor = TcpTransport::<KvCommand>::bind(1, network).unwrap();
    let before: Vec<usize> = [2, 3].map(|p| handshake_failures(&cluster, p)).to_vec();
    for p in [2, 3] {
        impostor.add_peer(p, Some(cluster.peer[&p].to_string()));
    }
    let (inbox, _events) = Inbox::new(64);
    impostor.start(1, inbox);
    cluster
        .wait_for("both refusals logged", |d| {
            let now = [2, 3].map(|p| handshake_failures(d, p));
            (now[0] > before[0] && now[1] > before[1]).then_some(())
        })
        .unwrap();
    for p in [2, 3] {
        assert!(!impostor.is_connected(p), "the impostor reached node {p}");
        impostor.send(p, &mut forged_messages(1, p));
    }
    rt.block_on(impostor.shutdown());

    // Nothing was written, nobody retired, and the cluster elects a new leader when the
    // current one dies (no server promised the forged top-of-range ballot).
    assert_nobody_has_the_forged_key(&cluster);
    assert_none_retired(&cluster);
    let leader = cluster.wait_for("a leader", |d| d.leader()).unwrap();
    cluster.kill(leader);
    let next = cluster.wait_for("a new leader", |d| d.leader()).unwrap();
    assert_ne!(next, leader);
    cluster.write_keys("after the leader died", 40, 20).unwrap();

    // kill -9 of every node, then all restart: every acknowledged write is still there (no
    // forged compaction passed a checkpoint).
    for pid in cluster.live() {
        cluster.kill(pid);
    }
    for pid in [1, 2, 3] {
        cluster.spawn(pid).unwrap();
    }
    cluster
        .wait_for("a leader after the restart", |d| d.leader())
        .unwrap();
    for pid in [1, 2, 3] {
        cluster.verify_on(pid).unwrap();
    }
    assert_nobody_has_the_forged_key(&cluster);
}

/// One raw HTTP request (`head`: its request line and extra header lines) through `client`'s
/// TLS connection (root's certificate); the status and the body.
fn raw_request(client: &Client, addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let out = raw_exchange(client, addr, request.as_bytes());
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Writes `bytes` on a TLS connection to `addr` and reads the answer to its end.
fn raw_exchange(client: &Client, addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = client.stream(addr, GUARD).unwrap();
    // The node may answer and hang up before it read everything (a body over the limit).
    let _ = stream.write_all(bytes).and_then(|()| stream.flush());
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn stale_invalid_and_cross_origin_reconfigurations_are_refused() {
    let mut cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let addr = cluster.http[&1];
    let json = "POST /reconfigure HTTP/1.1\r\nContent-Type: application/json";
    // The attack: the current configuration's id, which once retired every node for good.
    let stale = r#"{"configuration_id": 1, "nodes": [1, 2, 3]}"#;
    let (status, body) = raw_request(&cluster.client, addr, json, stale);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("greater than"), "{body}");
    for invalid in [
        r#"{"configuration_id": 2, "nodes": []}"#,
        r#"{"configuration_id": 2, "nodes": [1, 2, 2]}"#,
        r#"{"configuration_id": 0, "nodes": [1, 2]}"#,
        r#"{"configuration_id": 2, "nodes": [1, 2], "new_peers": {"9": "127.0.0.1:1"}}"#,
    ] {
        let (status, body) = raw_request(&cluster.client, addr, json, invalid);
        assert_eq!(status, 400, "{invalid}: {body}");
        assert!(body.starts_with("{\"error\""), "{body}");
    }
    // What a page of another origin can send without asking: a text/plain POST (403 for its
    // origin); without an origin, still not JSON (415).
    let attempt = r#"{"configuration_id": 2, "nodes": [1]}"#;
    for (head, expected) in [
        (
            "POST /reconfigure HTTP/1.1\r\nContent-Type: text/plain\r\nOrigin: http://evil.example",
            403,
        ),
        (
            "POST /reconfigure HTTP/1.1\r\nContent-Type: text/plain",
            415,
        ),
    ] {
        let (status, body) = raw_request(&cluster.client, addr, head, attempt);
        assert_eq!(status, expected, "{head}: {body}");
    }
    // A name made to resolve to the node (DNS rebinding) is not the node's.
    let rebound = "GET /status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let out = raw_exchange(&cluster.client, addr, rebound.as_bytes());
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    // A PUT from another origin (a page would need a preflight the node never grants).
    let put = "PUT /kv/csrf HTTP/1.1\r\nOrigin: http://evil.example";
    let (status, _) = raw_request(&cluster.client, addr, put, "x");
    assert_eq!(status, 403);
    // Every error is JSON, also the router's own.
    let (status, body) = raw_request(&cluster.client, addr, "PATCH /kv/a HTTP/1.1", "");
    assert_eq!(status, 405);
    assert!(body.starts_with("{\"error\""), "{body}");
    let long = format!("GET /kv/{} HTTP/1.1", "k".repeat(9000));
    let (status, body) = raw_request(&cluster.client, addr, &long, "");
    assert_eq!(status, 414, "{body}");
    assert!(body.starts_with("{\"error\""), "{body}");
    let big = "x".repeat(kv_store::http_guard::MAX_BODY_BYTES + 1);
    let (status, body) = raw_request(&cluster.client, addr, "PUT /kv/big HTTP/1.1", &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.starts_with("{\"error\""), "{body}");

    // Nothing changed: nobody retired, also after a restart of every node, and it writes.
    assert_none_retired(&cluster);
    for pid in [1, 2, 3] {
        cluster.kill(pid);
        cluster.spawn(pid).unwrap();
    }
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    assert_none_retired(&cluster);
    assert_eq!(
        cluster
            .client
            .request(addr, "GET", &key_path("csrf"), "", T)
            .unwrap()
            .status,
        404
    );
    cluster.write_keys("after the attempts", 0, 10).unwrap();
}

/// Resident memory of process `os_pid`, in bytes.
fn rss(os_pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{os_pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Opens up to `n` connections to `addr` (fewer if this process runs out of descriptors).
fn open_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => held.push(s),
            Err(e) if e.raw_os_error() == Some(24) => {
                eprintln!(
                    "stopped at {} connections: this process's file limit",
                    held.len()
                );
                break;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    held
}

#[test]
fn floods_of_connections_leave_the_node_serving() {
    // 64 HTTP connections per node: the flood below is thirty times that.
    let mut cluster = Demo::start_with_http_limit(exe(), 64).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    cluster.write_keys("before the floods", 0, 20).unwrap();
    let os_pid = cluster.os_pid(1).unwrap();
    let baseline = rss(os_pid);

    // 200 connections to the peer port, each sending the 5 bytes of a frame header that
    // announces 16 MiB, then waiting.
    let mut header = (16u32 << 20).to_be_bytes().to_vec();
    header.push(0);
    let mut announcing = open_connections(cluster.peer[&1], 200);
    for s in &mut announcing {
        let _ = s.write_all(&header);
    }
    cluster.write_keys("during the peer flood", 20, 10).unwrap();
    let during = rss(os_pid);
    assert!(
        during < baseline + (64 << 20),
        "RSS went from {baseline} to {during} bytes"
    );
    drop(announcing);

    // 2,000 idle HTTP connections to node 1.
    let mut idle = open_connections(cluster.http[&1], 2000);
    // The cluster goes on (through the others), node 1's storage stays healthy, and node 1
    // serves again once the idle connections reach the header timeout.
    cluster.write_keys("during the HTTP flood", 30, 10).unwrap();
    cluster
        .wait_for("node 1 serving", |d| {
            let r = d
                .client
                .request(d.http[&1], "PUT", &key_path("after-flood"), "1", T)
                .ok()?;
            (r.status == 200).then_some(())
        })
        .unwrap();
    let metrics = cluster
        .client
        .request(cluster.http[&1], "GET", "/metrics", "", T)
        .unwrap();
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("omnipaxos_storage_failed") && l.ends_with(" 0")),
        "node 1's storage failed: {text}"
    );
    let mut closed_by_node = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        closed_by_node += usize::from(hung_up(s));
    }
    assert!(
        closed_by_node >= idle.len().saturating_sub(64),
        "only {closed_by_node} of {} idle connections were closed or refused",
        idle.len()
    );
    drop(idle);
    cluster.verify_on(1).unwrap();
}

#[test]
fn slow_clients_are_cut_off() {
    let cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let addr = cluster.http[&1];
    // Headers one byte a second: 60 bytes would take a minute.
    let client = cluster.client.clone();
    let headers = std::thread::spawn(move || {
        let mut s = client.stream(addr, GUARD).unwrap();
        let head = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaa\r\n\r\n";
        s.tcp()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        for b in head.iter() {
            if s.write_all(&[*b]).and_then(|()| s.flush()).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
            let mut buf = [0u8; 1];
            match s.read(&mut buf) {
                Ok(0) => return true,
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return true
                }
                _ => {}
            }
        }
        false
    });
    // A body of 100 bytes, one a second: answered 408 long before its end.
    let client = cluster.client.clone();
    let body = std::thread::spawn(move || {
        let mut s = client.stream(addr, GUARD).unwrap();
        s.write_all(b"PUT /kv/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n")
            .unwrap();
        s.flush().unwrap();
        s.tcp()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        for _ in 0..100 {
            if s.write_all(b"x").and_then(|()| s.flush()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            let mut buf = [0u8; 256];
            if let Ok(n) = s.read(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).to_string();
            }
        }
        String::new()
    });
    assert!(
        headers.join().unwrap(),
        "the slow headers were never cut off"
    );
    let answer = body.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(
        cluster
            .client
            .request(addr, "GET", &key_path("slow"), "", T)
            .unwrap()
            .status,
        404
    );
}
