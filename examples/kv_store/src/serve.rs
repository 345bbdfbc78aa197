//! Runs one node: binds the peer and HTTP listeners, opens the store, starts the transport and
//! the HTTP server, and runs the node's loop.

use crate::{config, http, net, node};
use std::time::Duration;

/// Runs the node described by `config` until its inputs close.
pub async fn serve(config: config::NodeConfig) -> Result<(), String> {
    let pid = config.omnipaxos.server_config.pid;
    let peer_listener = tokio::net::TcpListener::bind(config.peer_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.peer_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.http_addr))?;
    let (net_tx, net_rx) = tokio::sync::mpsc::channel(10_000);
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(10_000);
    let peers = net::connect_peers(pid, &config.peers, net_tx.clone());
    let node = node::Node::open(&config, peers)?;
    tokio::spawn(net::listen(
        peer_listener,
        pid,
        node.allowed_peers(),
        net_tx,
    ));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, http::router(req_tx)).await {
            tracing::error!("HTTP server stopped: {e}");
        }
    });
    tracing::info!(pid, peer = %config.peer_addr, http = %config.http_addr, "node started");
    node.run(Duration::from_millis(config.tick_ms), net_rx, req_rx)
        .await;
    Ok(())
}
