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
