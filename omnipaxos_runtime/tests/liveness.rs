//! A link that goes silent (no FIN, no RST: a pulled cable) is noticed by the transport's own
//! liveness checks, its queue dropped, and a new connection serves as soon as the link heals.

mod common;

use common::proxy::Proxy;
use common::*;
use omnipaxos_runtime::transport::tcp::TcpTransport;
use omnipaxos_runtime::transport::Transport;
use omnipaxos_runtime::NetworkConfig;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_cut_link_is_replaced_and_serves_again_after_the_heal() {
    let nodes = [1u64, 2, 3];
    let mut transports: Vec<TcpTransport<u64>> = nodes
        .iter()
        .map(|&pid| {
            let config = NetworkConfig::new("127.0.0.1:0".parse().expect("addr"), BTreeMap::new());
            TcpTransport::bind(pid, config).expect("bind")
        })
        .collect();
    let addrs: Vec<_> = transports
        .iter()
        .map(|t| t.local_addr().expect("bound"))
        .collect();
    // One proxy per direction of every link: proxies[(from, to)].
    let mut proxies = BTreeMap::new();
    for &from in &nodes {
        for &to in &nodes {
            if from != to {
                let proxy = Proxy::start(addrs[(to - 1) as usize]).await;
                transports[(from - 1) as usize].add_peer(to, Some(proxy.addr.to_string()));
                proxies.insert((from, to), proxy);
            }
        }
    }
    let handles = spawn_nodes(&nodes, transports);
    let leader = wait_leader(&handles).await;
    let cut = nodes.iter().copied().find(|p| *p != leader).unwrap_or(1);
    let handle = |pid: u64| handles[(pid - 1) as usize].clone();
    let mut ledger = Ledger::default();
    ledger.append_until_decided(&handle(cut), 1).await;

    // Pull the cable between the leader and `cut`: both directions go silent.
    proxies[&(leader, cut)].stall();
    proxies[&(cut, leader)].stall();
    wait_metrics(
        &handle(cut),
        "cut notices its connection to the leader is dead",
        |m| m.peers.get(&leader).is_some_and(|p| !p.connected),
    )
    .await;
    wait_metrics(&handle(leader), "the leader notices too", |m| {
        m.peers.get(&cut).is_some_and(|p| !p.connected)
    })
    .await;
    // The cluster keeps serving meanwhile (through whichever majority is connected).
    let third = nodes
        .iter()
        .copied()
        .find(|p| *p != leader && *p != cut)
        .unwrap_or(3);
    ledger.append_until_decided(&handle(third), 1000).await;

    // Heal: new connections come up and the cut-off node serves writes and reads again.
    proxies[&(leader, cut)].resume();
    proxies[&(cut, leader)].resume();
    wait_metrics(&handle(cut), "reconnected", |m| {
        m.peers.values().all(|p| p.connected)
    })
    .await;
    let (_, idx) = ledger.append_until_decided(&handle(cut), 2000).await;
    let read = within("read after the heal", handle(cut).read_linearizable())
        .await
        .expect("read index");
    assert!(read > idx);
    ledger.check(&handles).await;
    for h in &handles {
        h.shutdown().await;
    }
}
