//! The client API: `PUT /kv/{key}` (body: the value), `GET /kv/{key}`, `DELETE /kv/{key}`,
//! `GET /status`, `POST /reconfigure`, `GET /handover`. Every answer is JSON; errors are
//! `{"error": "..."}` with 400 (malformed), 404 (no such key or route), 409 (a reconfiguration
//! refused) or 503 (no decision in time, or this node left the cluster).
//!
//! Between nodes: `POST /state/chunk` (one chunk of a state transfer, [`crate::transfer`]).
//!
//! And for people and monitoring ([`crate::dashboard`]): `GET /` (the dashboard page),
//! `GET /cluster`, `GET /history`, `GET /metrics` (Prometheus text).

use crate::auth::{Access, Principal};
use crate::http_auth::failed;
use crate::machine::Outcome;
use crate::node::{Node, ReconfigureRefused};
use crate::telemetry::{self, Telemetry};
use crate::{dashboard, http_auth, http_guard};
use axum::body::Bytes;
use axum::extract::FromRef;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Keys longer than this are refused.
const MAX_KEY: usize = 1024;

type Shared = State<Arc<Node>>;

/// What every handler may use.
#[derive(Clone)]
pub struct App {
    pub node: Arc<Node>,
    pub telemetry: Arc<Telemetry>,
    /// This node's HTTP address and the other nodes' (for the dashboard's cluster view).
    pub http_addrs: Arc<BTreeMap<u64, SocketAddr>>,
    /// The names this node answers to ([`crate::http_guard`]).
    pub guard: Arc<http_guard::Guard>,
    /// Authentication ([`crate::http_auth`]).
    pub gate: Arc<http_auth::Gate>,
    /// This node's own client (its node certificate), for the other nodes' status.
    pub node_client: crate::client::Client,
}

impl FromRef<App> for Arc<http_auth::Gate> {
    fn from_ref(app: &App) -> Self {
        app.gate.clone()
    }
}

impl FromRef<App> for Arc<Node> {
    fn from_ref(app: &App) -> Self {
        app.node.clone()
    }
}

impl FromRef<App> for Arc<Telemetry> {
    fn from_ref(app: &App) -> Self {
        app.telemetry.clone()
    }
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/status", get(status))
        .route("/handover", get(handover))
        .route("/digests", get(digests))
        .route("/reconfigure", axum::routing::post(reconfigure))
        .route("/state/chunk", axum::routing::post(state_chunk))
        .route("/", get(dashboard::page))
        .route("/cluster", get(dashboard::cluster))
        .route("/history", get(dashboard::history))
        .route("/metrics", get(dashboard::metrics))
        .route("/health", get(health))
        .route("/auth/token", axum::routing::post(http_auth::token))
        .route("/auth/users", get(http_auth::listing))
        .route(
            "/auth/users/{name}",
            axum::routing::put(http_auth::put_user).delete(http_auth::delete_user),
        )
        .route(
            "/auth/users/{name}/roles/{role}",
            axum::routing::put(http_auth::grant).delete(http_auth::revoke),
        )
        .route(
            "/auth/roles/{name}",
            axum::routing::put(http_auth::put_role).delete(http_auth::delete_role),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            app.gate.clone(),
            http_auth::authenticate,
        ))
        // The guard reads the body (bounded in size and time) before any route does.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            app.guard.clone(),
            http_guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.telemetry.clone(),
            telemetry::track,
        ))
        .with_state(app)
}

pub(crate) fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

fn bad_key(key: &str) -> Option<Response> {
    // A NUL first byte is the state machine's own (the auth state), never a client's.
    (key.is_empty() || key.len() > MAX_KEY || key.starts_with('\0')).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("a key must have 1 to {MAX_KEY} bytes and not start with a NUL byte"),
        )
    })
}

async fn put_key(
    State(node): Shared,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = bad_key(&key) {
        return r;
    }
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the value must be UTF-8 text");
    };
    match node.put(who, key.clone(), value.clone()).await {
        Ok(_) => Json(json!({ "key": key, "value": value })).into_response(),
        Err(e) => failed(e),
    }
}

async fn get_key(
    State(node): Shared,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> Response {
    if let Some(r) = bad_key(&key) {
        return r;
    }
    match node.get(&who, &key).await {
        Ok(Some(value)) => Json(json!({ "key": key, "value": value })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no such key: {key}")),
        Err(e) => failed(e),
    }
}

async fn delete_key(
    State(node): Shared,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> Response {
    if let Some(r) = bad_key(&key) {
        return r;
    }
    match node.delete(who, key.clone()).await {
        Ok(Outcome::Deleted(true)) => Json(json!({ "key": key, "deleted": true })).into_response(),
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no such key: {key}")),
        Err(e) => failed(e),
    }
}

/// `GET /health`: open to anyone; 200 while this node takes part, 503 with the fault if not.
async fn health(State(node): Shared) -> Response {
    let (code, body) = node.health().answer(node.auth_is_set_up());
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (code, Json(body)).into_response()
}

async fn status(State(node): Shared) -> Response {
    Json(node.status().await).into_response()
}

/// `GET /digests`: for admins and nodes: the digests of this node's keys at recent agreed
/// positions, `[[[configuration, index], digest], ...]` (`crate::divergence`).
async fn digests(State(node): Shared, Extension(who): Extension<Principal>) -> Response {
    if !matches!(who, Principal::Node(_)) {
        if let Err(e) = node.at_read_point(&who, Access::Admin).await {
            return failed(e);
        }
    }
    Json(node.digests()).into_response()
}

/// `GET /handover`: for admins, and for nodes (a joining node's state).
async fn handover(State(node): Shared, Extension(who): Extension<Principal>) -> Response {
    if !matches!(who, Principal::Node(_)) {
        if let Err(e) = node.at_read_point(&who, Access::Admin).await {
            return failed(e);
        }
    }
    match node.handover().await {
        Some(h) => Json(h).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no configuration has ended on this node yet",
        ),
    }
}

/// One chunk of a state transfer to another node (`crate::transfer`): nodes only.
async fn state_chunk(
    State(node): Shared,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Response {
    if let Err(e) = node.check_here(&who, Access::Node) {
        return failed(e);
    }
    let Ok(request) = serde_json::from_slice::<crate::transfer::ChunkRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected a chunk request");
    };
    match node.serve_chunk(request).await {
        Ok(chunk) => ([(header::CONTENT_TYPE, "application/json")], chunk).into_response(),
        Err(e @ crate::node::ChunkRefused::NotNow(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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

async fn reconfigure(
    State(node): Shared,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Response {
    if let Err(e) = node.at_read_point(&who, Access::Admin).await {
        return failed(e);
    }
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
    match node.reconfigure(next, r.new_peers).await {
        Ok(()) => Json(json!({ "proposed": true })).into_response(),
        Err(e @ ReconfigureRefused::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ ReconfigureRefused::Conflict(_)) => error(StatusCode::CONFLICT, e.to_string()),
    }
}
