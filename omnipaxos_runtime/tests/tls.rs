//! Mutual TLS: a cluster whose certificates come from one CA works; a node with a certificate
//! from another CA, and a plain TCP client sending a valid frame, are refused and change nothing.

mod common;

use common::*;
use omnipaxos_runtime::config::TlsFiles;
use omnipaxos_runtime::transport::tcp::TcpTransport;
use omnipaxos_runtime::transport::Transport;
use omnipaxos_runtime::{wire, NetworkConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::Path;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn new_ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    Ca { cert, key }
}

/// Writes the CA, and a certificate and key for `node-<pid>` signed by it, into `dir`.
fn tls_files(dir: &Path, ca: &Ca, pid: u64, tag: &str) -> TlsFiles {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec![format!("node-{pid}")]).expect("params");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    let files = TlsFiles {
        ca: dir.join(format!("{tag}-ca.pem")),
        cert: dir.join(format!("{tag}-node-{pid}.pem")),
        key: dir.join(format!("{tag}-node-{pid}.key")),
    };
    std::fs::write(&files.ca, ca.cert.pem()).expect("write");
    std::fs::write(&files.cert, cert.pem()).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_with_the_clusters_certificates_get_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    let nodes = [1, 2, 3];
    let transports = tcp_transports(&nodes, |pid, c| {
        c.tls = Some(tls_files(dir.path(), &ca, pid, "cluster"));
    });
    let addresses: Vec<_> = transports
        .iter()
        .map(|t| t.local_addr().expect("bound"))
        .collect();
    let handles = spawn_nodes(&nodes, transports);
    let leader = wait_leader(&handles).await;
    let (_, idx) = Ledger::default().append_until_decided(&handles[2], 1).await;
    let target = &handles[(leader - 1) as usize];
    let ballot = target.metrics().borrow().ballot;
    let leader_addr = addresses[(leader - 1) as usize].to_string();

    // An impostor: pid 2's name, but a certificate from another CA. It runs a real transport
    // and sends a valid append for the leader.
    let rogue_ca = new_ca();
    let mut config = NetworkConfig::new("127.0.0.1:0".parse().expect("addr"), Default::default());
    let rogue_files = tls_files(dir.path(), &rogue_ca, 2, "rogue");
    // It trusts the cluster's CA, so it accepts the leader's certificate: only its own is wrong.
    std::fs::write(&rogue_files.ca, ca.cert.pem()).expect("write");
    config.tls = Some(rogue_files);
    let mut rogue: TcpTransport<u64> = TcpTransport::bind(2, config).expect("bind");
    rogue.add_peer(leader, Some(leader_addr.clone()));
    let before = target.metrics().borrow().frames_refused;
    let (inbox_probe, _events) = probe_inbox();
    rogue.start(2, inbox_probe);
    let mut msgs = vec![wire::WireMessage::Append {
        incarnation: 1,
        ballot,
        entries: vec![(1, 666u64)],
    }];
    rogue.send(leader, &mut msgs);
    wait_metrics(target, "the impostor refused", |m| {
        m.frames_refused > before
    })
    .await;
    rogue.shutdown().await;

    // A plain TCP client with a well-formed hello and append.
    let before = target.metrics().borrow().frames_refused;
    let mut body = Vec::new();
    wire::encode(
        &wire::WireMessage::Append {
            incarnation: 1,
            ballot,
            entries: vec![(2, 667u64)],
        },
        &mut body,
    )
    .expect("encode");
    let leader_socket = leader_addr.parse().expect("address");
    send_raw(
        leader_socket,
        &[(0, 3u64.to_be_bytes().to_vec()), (1, body)],
    )
    .await;
    wait_metrics(target, "the plain client refused", |m| {
        m.frames_refused > before
    })
    .await;

    let (_, idx2) = Ledger::default().append_until_decided(&handles[0], 2).await;
    assert!(idx2 > idx);
    for h in &handles {
        wait_decided(h, idx2 + 1).await;
        let log = decided_log(h).await;
        assert!(
            !log.contains(&Some(666)) && !log.contains(&Some(667)),
            "a stranger's entry was appended: {log:?}"
        );
    }
    for h in &handles {
        h.shutdown().await;
    }
}

/// An inbox for a transport driven by hand.
fn probe_inbox() -> (
    omnipaxos_runtime::transport::Inbox<u64>,
    tokio::sync::mpsc::Receiver<omnipaxos_runtime::transport::TransportEvent<u64>>,
) {
    omnipaxos_runtime::transport::Inbox::new(1024)
}

/// Signs a certificate for `names` with `issuer`'s key, made by `edit` from the defaults.
fn signed(
    names: Vec<String>,
    issuer: &rcgen::Certificate,
    issuer_key: &KeyPair,
    edit: impl FnOnce(&mut CertificateParams),
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names).expect("params");
    edit(&mut params);
    let cert = params.signed_by(&key, issuer, issuer_key).expect("signed");
    (cert, key)
}

/// Writes an impostor's files: `chain` (its certificate first) and `key`, trusting the
/// cluster's CA (so that only its own certificate is wrong).
fn impostor_files(
    dir: &Path,
    tag: &str,
    ca: &Ca,
    chain: &[&rcgen::Certificate],
    key: &KeyPair,
) -> TlsFiles {
    let files = TlsFiles {
        ca: dir.join(format!("{tag}-ca.pem")),
        cert: dir.join(format!("{tag}.pem")),
        key: dir.join(format!("{tag}.key")),
    };
    std::fs::write(&files.ca, ca.cert.pem()).expect("write");
    let pem: String = chain.iter().map(|c| c.pem()).collect();
    std::fs::write(&files.cert, pem).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_prove_the_claimed_pid_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    // Node 1, alone, with peers 2 and 3 configured (at ports nobody listens on).
    let mut config = NetworkConfig::new("127.0.0.1:0".parse().expect("addr"), Default::default());
    config.tls = Some(tls_files(dir.path(), &ca, 1, "cluster"));
    let mut node: TcpTransport<u64> = TcpTransport::bind(1, config).expect("bind");
    node.add_peer(2, Some("127.0.0.1:9".into()));
    node.add_peer(3, Some("127.0.0.1:9".into()));
    let node_addr = node.local_addr().expect("bound").to_string();
    let (inbox, mut events) = probe_inbox();
    node.start(1, inbox);

    let (node3, node3_key) = signed(vec!["node-3".into()], &ca.cert, &ca.key, |_| {});
    let self_key = KeyPair::generate().expect("key");
    let self_signed = CertificateParams::new(vec!["node-2".to_string()])
        .expect("params")
        .self_signed(&self_key)
        .expect("self-signed");
    let (expired, expired_key) = signed(vec!["node-2".into()], &ca.cert, &ca.key, |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    // Node 3's certificate used as a CA for a certificate naming node 2.
    let (by_leaf, by_leaf_key) = signed(vec!["node-2".into()], &node3, &node3_key, |_| {});
    let (leading_zero, leading_zero_key) =
        signed(vec!["node-02".into()], &ca.cert, &ca.key, |_| {});
    let impostors = [
        (
            "node 3's certificate claiming pid 2",
            impostor_files(dir.path(), "n3", &ca, &[&node3], &node3_key),
        ),
        (
            "a self-signed certificate",
            impostor_files(dir.path(), "self", &ca, &[&self_signed], &self_key),
        ),
        (
            "an expired certificate",
            impostor_files(dir.path(), "old", &ca, &[&expired], &expired_key),
        ),
        (
            "a certificate issued by a leaf",
            impostor_files(dir.path(), "leaf", &ca, &[&by_leaf, &node3], &by_leaf_key),
        ),
        (
            "a certificate naming node-02",
            impostor_files(dir.path(), "zero", &ca, &[&leading_zero], &leading_zero_key),
        ),
    ];
    for (what, files) in impostors {
        let before = node.stats().refused_frames;
        let mut config =
            NetworkConfig::new("127.0.0.1:0".parse().expect("addr"), Default::default());
        config.tls = Some(files);
        let mut impostor: TcpTransport<u64> = TcpTransport::bind(2, config).expect("bind");
        impostor.add_peer(1, Some(node_addr.clone()));
        let (probe, _probe_events) = probe_inbox();
        impostor.start(2, probe);
        let mut msgs = vec![wire::WireMessage::Hello { incarnation: 9 }];
        impostor.send(1, &mut msgs);
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while node.stats().refused_frames <= before {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} was not refused"));
        impostor.shutdown().await;
    }
    // Node 1 never heard a message from anyone.
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                omnipaxos_runtime::transport::TransportEvent::Message { .. }
            ),
            "an impostor got a message in: {event:?}"
        );
    }
    node.shutdown().await;
}
