//! The client API: `PUT /kv/{key}` (body: the value), `GET /kv/{key}`, `DELETE /kv/{key}`,
//! `GET /status`. Every answer is JSON; errors are `{"error": "..."}` with 400 (malformed), 404
//! (no such key or route) or 503 (not decided in time).
// Handlers return axum's `Response` as the error side of their `Result`s; it is what they send.
#![allow(clippy::result_large_err)]

use crate::entry::Outcome;
use crate::node::{KvCommandKind, Request, REQUEST_TIMEOUT};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// Keys longer than this are refused.
const MAX_KEY: usize = 1024;

pub fn router(requests: mpsc::Sender<Request>) -> Router {
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/status", get(status))
        .route("/handover", get(handover))
        .route("/reconfigure", axum::routing::post(reconfigure))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(requests)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

fn check_key(key: &str) -> Result<(), Response> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("a key must have 1 to {MAX_KEY} bytes"),
        ));
    }
    Ok(())
}

async fn propose(
    requests: &mpsc::Sender<Request>,
    kind: KvCommandKind,
) -> Result<Outcome, Response> {
    let (tx, rx) = oneshot::channel();
    requests
        .send(Request::Propose(kind, tx))
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down"))?;
    match tokio::time::timeout(REQUEST_TIMEOUT * 2, rx).await {
        Ok(Ok(Ok(outcome))) => Ok(outcome),
        Ok(Ok(Err(message))) => Err(error(StatusCode::SERVICE_UNAVAILABLE, message)),
        _ => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the node",
        )),
    }
}

async fn put_key(
    State(requests): State<mpsc::Sender<Request>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = check_key(&key) {
        return r;
    }
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the value must be UTF-8 text");
    };
    match propose(
        &requests,
        KvCommandKind::Put {
            key: key.clone(),
            value: value.clone(),
        },
    )
    .await
    {
        Ok(_) => Json(json!({ "key": key, "value": value })).into_response(),
        Err(r) => r,
    }
}

async fn get_key(
    State(requests): State<mpsc::Sender<Request>>,
    Path(key): Path<String>,
) -> Response {
    if let Err(r) = check_key(&key) {
        return r;
    }
    match propose(&requests, KvCommandKind::Read { key: key.clone() }).await {
        Ok(Outcome::Read(Some(value))) => {
            Json(json!({ "key": key, "value": value })).into_response()
        }
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no such key: {key}")),
        Err(r) => r,
    }
}

async fn delete_key(
    State(requests): State<mpsc::Sender<Request>>,
    Path(key): Path<String>,
) -> Response {
    if let Err(r) = check_key(&key) {
        return r;
    }
    match propose(&requests, KvCommandKind::Delete { key: key.clone() }).await {
        Ok(Outcome::Deleted(true)) => Json(json!({ "key": key, "deleted": true })).into_response(),
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no such key: {key}")),
        Err(r) => r,
    }
}

async fn status(State(requests): State<mpsc::Sender<Request>>) -> Response {
    let (tx, rx) = oneshot::channel();
    if requests.send(Request::Status(tx)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    match rx.await {
        Ok(status) => Json(status).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "no answer from the node"),
    }
}

async fn handover(State(requests): State<mpsc::Sender<Request>>) -> Response {
    let (tx, rx) = oneshot::channel();
    if requests.send(Request::Handover(tx)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    match rx.await {
        Ok(Some(h)) => Json(h).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no configuration has ended on this node yet",
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "no answer from the node"),
    }
}

/// The body of `POST /reconfigure`.
#[derive(serde::Deserialize)]
struct Reconfigure {
    configuration_id: u32,
    nodes: Vec<u64>,
    /// Peer addresses of the nodes that join.
    #[serde(default)]
    new_peers: std::collections::BTreeMap<u64, std::net::SocketAddr>,
}

async fn reconfigure(State(requests): State<mpsc::Sender<Request>>, body: Bytes) -> Response {
    let Ok(r) = serde_json::from_slice::<Reconfigure>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"expected {"configuration_id": 2, "nodes": [1, 2, 4], "new_peers": {"4": "host:port"}}"#,
        );
    };
    let next = omnipaxos::ClusterConfig {
        configuration_id: r.configuration_id,
        nodes: r.nodes,
        flexible_quorum: None,
    };
    let (tx, rx) = oneshot::channel();
    if requests
        .send(Request::Reconfigure(next, r.new_peers, tx))
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    match rx.await {
        Ok(Ok(())) => Json(json!({ "proposed": true })).into_response(),
        Ok(Err(message)) => error(StatusCode::CONFLICT, message),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "no answer from the node"),
    }
}
