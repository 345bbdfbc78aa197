//! Who a request comes from, and the routes that manage users, roles and tokens.
//!
//! A request names its principal with a client certificate (`node-<pid>`: a node;
//! `client-<user>`: a user) or `Authorization: Bearer <token>` (`POST /auth/token`). Without
//! either, every route answers `401` but `GET /health`, the dashboard's page `GET /` (which
//! holds no data and asks for a token) and `POST /auth/token`; `GET /metrics` too unless the
//! config opens it. What a principal may do is checked by each route ([`crate::auth::Access`]):
//! key reads at the read point they are served at, writes and auth changes by the state
//! machine where they are decided. Every refusal is logged with the principal and the route,
//! at most once per pair every [`AUDIT_EVERY`].

use crate::auth::{AuthOp, Principal, Refused, Role};
use crate::http::error;
use crate::http_server::ClientCert;
use crate::node::{Node, RequestError};
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the same principal's refusals on the same route are logged.
pub const AUDIT_EVERY: Duration = Duration::from_secs(10);
/// Password hashes computed at once (each takes ~20 MiB and tens of ms of a core, on
/// purpose): a flood of `POST /auth/token` waits for its turn, never exhausts memory.
pub const CONCURRENT_HASHES: usize = 2;
/// How long a request waits for its turn to hash a password before `503`.
pub const HASH_WAIT: Duration = Duration::from_secs(2);

/// What the authentication middleware needs.
pub struct Gate {
    pub node: Arc<Node>,
    /// `GET /metrics` without credentials.
    pub metrics_open: bool,
    /// How long a token is valid.
    pub token_ttl: Duration,
    audited: Mutex<HashMap<(String, String), Instant>>,
    hashing: tokio::sync::Semaphore,
}

impl Gate {
    pub fn new(node: Arc<Node>, metrics_open: bool, token_ttl: Duration) -> Self {
        Self {
            node,
            metrics_open,
            token_ttl,
            audited: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
        }
    }

    /// A turn to hash or check a password, or the `503` answer if none comes in time.
    async fn hashing_turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Response> {
        match tokio::time::timeout(HASH_WAIT, self.hashing.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many password checks at once: try again",
            )),
        }
    }

    /// Logs a refusal once per principal and route every [`AUDIT_EVERY`].
    fn audit(&self, who: &str, method: &Method, route: &str, status: StatusCode) {
        let mut audited = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        let key = (who.to_string(), route.to_string());
        if audited.get(&key).is_some_and(|t| t.elapsed() < AUDIT_EVERY) {
            return;
        }
        if audited.len() > 10_000 {
            audited.retain(|_, t| t.elapsed() < AUDIT_EVERY);
        }
        audited.insert(key, Instant::now());
        tracing::warn!(who, %method, route, status = status.as_u16(), "request refused");
    }
}

/// The routes that need no credentials.
fn is_open(gate: &Gate, method: &Method, path: &str) -> bool {
    match (method, path) {
        (&Method::GET, "/health" | "/") => true,
        (&Method::POST, "/auth/token") => true,
        (&Method::GET, "/metrics") => gate.metrics_open,
        _ => false,
    }
}

/// The middleware (see the module docs).
pub async fn authenticate(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let (method, route) = (
        req.method().clone(),
        crate::telemetry::route_of(req.uri().path()),
    );
    let from_cert = req.extensions().get::<ClientCert>().map(|c| match c {
        ClientCert::Node(pid) => Principal::Node(*pid),
        ClientCert::User(name) => Principal::User {
            name: name.clone(),
            generation: None,
        },
    });
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let principal = match (from_cert, token) {
        (Some(p), _) => Some(p),
        (None, Some(token)) => match gate.node.token_principal(&token) {
            Ok(p) => Some(p),
            Err(r) => {
                gate.audit("(bad token)", &method, route, StatusCode::UNAUTHORIZED);
                return refused(&r);
            }
        },
        (None, None) => None,
    };
    let Some(principal) = principal else {
        if is_open(&gate, &method, req.uri().path()) {
            return next.run(req).await;
        }
        gate.audit("(anonymous)", &method, route, StatusCode::UNAUTHORIZED);
        return error(
            StatusCode::UNAUTHORIZED,
            "credentials required: a client certificate, or Authorization: Bearer <token> from POST /auth/token",
        );
    };
    let who = principal.name();
    // The cluster's status pages: any principal that exists (as far as this node applied).
    if matches!(route, "/status" | "/cluster" | "/history" | "/metrics") {
        if let Err(e) = gate
            .node
            .check_here(&principal, crate::auth::Access::Status)
        {
            gate.audit(&who, &method, route, StatusCode::UNAUTHORIZED);
            return failed(e);
        }
    }
    req.extensions_mut().insert(principal);
    let response = next.run(req).await;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        gate.audit(&who, &method, route, status);
    }
    response
}

/// The answer to a refusal: 401, 403 or 400.
pub fn refused(r: &Refused) -> Response {
    let status = match r {
        Refused::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Refused::Forbidden(_) => StatusCode::FORBIDDEN,
        Refused::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, r.to_string())
}

/// The answer to a request that failed.
pub fn failed(e: RequestError) -> Response {
    match e {
        RequestError::Refused(r) => refused(&r),
        other => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct Credentials {
    user: String,
    password: String,
}

/// `POST /auth/token`: `{"user", "password"}` → `{"token", "expires"}`.
pub async fn token(State(gate): State<Arc<Gate>>, body: axum::body::Bytes) -> Response {
    let Ok(c) = serde_json::from_slice::<Credentials>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"expected {"user": "...", "password": "..."}"#,
        );
    };
    match gate
        .node
        .issue_token(&c.user, c.password, gate.token_ttl)
        .await
    {
        Ok((token, expires)) => Json(json!({ "token": token, "expires": expires })).into_response(),
        Err(e) => {
            gate.audit(
                &c.user,
                &Method::POST,
                "/auth/token",
                StatusCode::UNAUTHORIZED,
            );
            failed(e)
        }
    }
}

/// `GET /auth/users`: users with their roles, and the roles (admin).
pub async fn listing(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
) -> Response {
    match gate.node.auth_listing(&who).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct NewUser {
    password: Option<String>,
}

/// `PUT /auth/users/{name}`, body `{"password": "..."}` (none: certificate only).
pub async fn put_user(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let user: NewUser = match body.is_empty() {
        true => NewUser::default(),
        false => match serde_json::from_slice(&body) {
            Ok(u) => u,
            Err(_) => return error(StatusCode::BAD_REQUEST, r#"expected {"password": "..."}"#),
        },
    };
    let _turn = match gate.hashing_turn().await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    let password_hash = match user.password {
        None => None,
        Some(p) => {
            match tokio::task::spawn_blocking(move || crate::auth::hash_password(&p)).await {
                Ok(Ok(hash)) => Some(hash),
                _ => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot hash the password",
                    )
                }
            }
        }
    };
    change(
        &gate,
        who,
        AuthOp::PutUser {
            name,
            password_hash,
        },
    )
    .await
}

pub async fn delete_user(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    change(&gate, who, AuthOp::DeleteUser { name }).await
}

/// `PUT /auth/roles/{name}`, body `{"read": ["prefix", ...], "write": [...]}`.
pub async fn put_role(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(role) = serde_json::from_slice::<Role>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"expected {"read": ["prefix"], "write": ["prefix"]}"#,
        );
    };
    change(&gate, who, AuthOp::PutRole { name, role }).await
}

pub async fn delete_role(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    change(&gate, who, AuthOp::DeleteRole { name }).await
}

/// `PUT /auth/users/{user}/roles/{role}`: grants the role.
pub async fn grant(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
    Path((user, role)): Path<(String, String)>,
) -> Response {
    change(&gate, who, AuthOp::Grant { user, role }).await
}

/// `DELETE /auth/users/{user}/roles/{role}`: revokes the role.
pub async fn revoke(
    State(gate): State<Arc<Gate>>,
    Extension(who): Extension<Principal>,
    Path((user, role)): Path<(String, String)>,
) -> Response {
    change(&gate, who, AuthOp::Revoke { user, role }).await
}

/// Proposes `op` for `who`; answered once applied here (decided, and in force for every
/// request served at a later read point on any node).
async fn change(gate: &Gate, who: Principal, op: AuthOp) -> Response {
    let what = op.describe();
    match gate.node.change_auth(who, op).await {
        Ok(_) => Json(json!({ "changed": what })).into_response(),
        Err(e) => failed(e),
    }
}
