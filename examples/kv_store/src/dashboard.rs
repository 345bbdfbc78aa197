//! The dashboard: one page (`GET /`, no build step, nothing fetched from elsewhere) that polls
//! `GET /cluster` every second. `/cluster` is this node asking every node of its configuration
//! for `/status` and `/history` (itself directly, the others over HTTP at the addresses under
//! `[http_peers]`), so one open page shows the whole cluster: roles, ballots, indices, each
//! node's view of its links (the connectivity matrix), charts and recent events.

use crate::client;
use crate::http::App;
use crate::telemetry::Telemetry;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long `/cluster` waits for another node's answer: a node that does not answer in time is
/// shown as unreachable from here.
const PEER_TIMEOUT: Duration = Duration::from_millis(700);

/// The page itself.
const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

/// `GET /metrics`: every metric of the node in the OpenMetrics text format.
pub async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        telemetry.encode(),
    )
        .into_response()
}

/// `GET /history`: this node's samples and events.
pub async fn history(State(telemetry): State<Arc<Telemetry>>) -> Response {
    Json(telemetry.history()).into_response()
}

/// `GET /cluster`: every node of this node's configuration, as each one reports itself.
pub async fn cluster(State(app): State<App>) -> Response {
    let own = app.node.status().await;
    let me = own.pid;
    let mut fetches = Vec::new();
    for &pid in &own.nodes {
        if pid == me {
            continue;
        }
        let addr = app.http_addrs.get(&pid).copied();
        let client = app.node_client.for_node(pid);
        fetches.push((
            pid,
            addr,
            tokio::task::spawn_blocking(move || fetch(&client, addr)),
        ));
    }
    let mut nodes = vec![json!({
        "pid": me,
        "http": app.http_addrs.get(&me),
        "status": own,
        "history": app.telemetry.history(),
        "error": null,
    })];
    for (pid, addr, fetched) in fetches {
        let (status, history, error) = match fetched.await {
            Ok(Ok((status, history))) => (status, history, Value::Null),
            Ok(Err(e)) => (Value::Null, Value::Null, Value::String(e)),
            Err(e) => (Value::Null, Value::Null, Value::String(e.to_string())),
        };
        nodes.push(json!({
            "pid": pid,
            "http": addr,
            "status": status,
            "history": history,
            "error": error,
        }));
    }
    nodes.sort_by_key(|n| n["pid"].as_u64());
    Json(json!({ "via": me, "nodes": nodes })).into_response()
}

/// Another node's `/status` and `/history`.
fn fetch(client: &client::Client, addr: Option<SocketAddr>) -> Result<(Value, Value), String> {
    let addr = addr.ok_or("no HTTP address for it under [http_peers]")?;
    let get = |path: &str| {
        let r = client
            .request(addr, "GET", path, "", PEER_TIMEOUT)
            .map_err(|e| format!("{addr}{path}: {e}"))?;
        match r.status {
            200 => Ok(r.body),
            code => Err(format!("{addr}{path}: HTTP {code}")),
        }
    };
    Ok((get("/status")?, get("/history")?))
}
