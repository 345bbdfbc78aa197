//! What every request passes before a route sees it, and what every error answer looks like.
//!
//! - **Browsers cannot be used against the node.** A request whose `Host` is a name the node
//!   does not answer to is refused (`403`): a page whose name was made to resolve to the node
//!   (DNS rebinding) cannot reach it. Requests that change state (any method but `GET`, `HEAD`,
//!   `OPTIONS`) with an `Origin` other than the node's own are refused (`403`), and `POST`
//!   bodies must be `application/json` (`415`): the one kind of cross-origin write a page can
//!   send without asking first is a form-like `POST` (`text/plain`, form encodings). `PUT` and
//!   `DELETE` from another origin need the browser's preflight, which the node never grants
//!   (it sends no CORS headers).
//! - **Bounded input.** A URI of at most [`MAX_URI_BYTES`] (`414`); a body of at most
//!   [`MAX_BODY_BYTES`] (`413`), read within [`BODY_TIMEOUT`] of the headers (`408`, and the
//!   connection is closed).
//! - **Every error is JSON**, `{"error": "..."}`, also those a route did not write (`405`,
//!   extractor rejections).

use crate::http::error;
use crate::http_server::BODY_TIMEOUT;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;
use std::sync::Arc;

/// The longest request URI.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The largest request body (a value with its key fits many times over).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The names this node answers to.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The port clients reach the node on.
    pub port: u16,
    /// Host names (besides IP addresses and `localhost`) clients may use for the node.
    pub host_names: Vec<String>,
}

impl Guard {
    /// Whether `host` (a `Host` header's value) names this node: an IP address, `localhost`
    /// or a configured name, with this node's port or none.
    fn answers_to(&self, host: &str) -> bool {
        let (name, port) = split_host(host);
        let port_ok = port.is_none_or(|p| p == self.port);
        let name_ok = name.eq_ignore_ascii_case("localhost")
            || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
            || self.host_names.iter().any(|n| n.eq_ignore_ascii_case(name));
        port_ok && name_ok
    }
}

/// `name` and port of a `Host` value (`[::1]:8000`, `10.0.0.1:8000`, `kv.example`).
fn split_host(host: &str) -> (&str, Option<u16>) {
    let (name, port) = match host.rfind(':') {
        // An IPv6 address without a port has colons but ends in `]`.
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    // A port that is not a number is a host no node answers to.
    let port = port.map(|p| p.parse().unwrap_or(0));
    (name, port)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware (see the module docs).
pub async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Some(refused) = refuse(&guard, &req) {
        return refused;
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => {
            return closing(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a request body may have at most {MAX_BODY_BYTES} bytes"),
            ))
        }
        Ok(Err(e)) => {
            return closing(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ))
        }
        Err(_) => {
            return closing(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    as_json(response)
}

/// The refusal of a request its headers alone rule out.
fn refuse(guard: &Guard, req: &Request) -> Option<Response> {
    // Measured without writing the URI out (every request passes here).
    let uri = req.uri();
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Some(error(
            StatusCode::URI_TOO_LONG,
            format!("a URI may have at most {MAX_URI_BYTES} bytes"),
        ));
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header(header::HOST);
    if let Some(host) = host {
        if !guard.answers_to(host) {
            return Some(error(
                StatusCode::FORBIDDEN,
                format!(
                    "this node does not answer to the host name {host:?} \
                     (list the names clients use under http_hosts in [node])"
                ),
            ));
        }
    }
    if is_safe(req.method()) {
        return None;
    }
    if let Some(origin) = header(header::ORIGIN) {
        let own = host
            .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
        if !own {
            return Some(error(
                StatusCode::FORBIDDEN,
                format!("requests that change state are refused from the origin {origin:?}"),
            ));
        }
    }
    if req.method() == Method::POST {
        let json = header(header::CONTENT_TYPE).is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Some(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a POST body must be sent as Content-Type: application/json",
            ));
        }
    }
    None
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// `response`, after which the connection closes (the rest of its request was not read).
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An error answer that is not JSON yet (written by the router or an extractor) as
/// `{"error": "..."}`, its status and other headers kept.
fn as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let replaced = error(status, reason);
    parts.headers.remove(header::CONTENT_LENGTH);
    let (new_parts, body) = replaced.into_parts();
    for (name, value) in new_parts.headers.iter() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            port: 8001,
            host_names: vec!["kv1.example".into()],
        }
    }

    #[test]
    fn hosts_the_node_answers_to() {
        let g = guard();
        for host in [
            "127.0.0.1:8001",
            "localhost:8001",
            "[::1]:8001",
            "10.1.2.3",
            "KV1.example:8001",
        ] {
            assert!(g.answers_to(host), "{host}");
        }
        for host in [
            "evil.example:8001",
            "127.0.0.1:8002",
            "kv1.example:x",
            "localhost.evil:8001",
        ] {
            assert!(!g.answers_to(host), "{host}");
        }
    }
}
