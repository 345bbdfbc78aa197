//! The HTTP listener: what a connection may cost the node before it sends a complete request.
//!
//! - **Connections**: at most `max_connections` at once, below the process's file limit so that
//!   the node's storage and peers always find a descriptor; one more is answered `503` (JSON)
//!   and closed at once.
//! - **Time**: the request line and headers must arrive within [`HEADER_TIMEOUT`] of the
//!   connection's start or of the previous response (hyper's header timer); a request body
//!   within [`BODY_TIMEOUT`] (`408`, [`crate::http_guard`]); a connection with no byte in
//!   either direction for [`IDLE_TIMEOUT`] is closed, whatever it is waiting for.
//! - **Size**: headers of at most [`MAX_HEADER_BYTES`] (hyper answers `431` above), a URI of at
//!   most [`crate::http_guard::MAX_URI_BYTES`] (`414`), a body of at most
//!   [`crate::http_guard::MAX_BODY_BYTES`] (`413`).
//!
//! An error of `accept` itself (no descriptor left: EMFILE) is logged and waited out; it
//! never stops the listener.
//!
//! **HTTPS.** With a TLS acceptor (the node's certificate, client certificates optional), the
//! handshake must end within [`HEADER_TIMEOUT`], and a client certificate the CA signed names
//! who the client is for every request on the connection ([`ClientCert`]): `node-<pid>` a node
//! of the cluster, `client-<user>` a user.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Time to send a request's line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a request's body, from the end of its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent both ways for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request line plus headers.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Connections when the file limit cannot be read.
const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The answer to a connection beyond the limit.
fn too_many_connections() -> Vec<u8> {
    let body = r#"{"error":"too many connections"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// At most this many HTTP connections: half of the process's soft limit on open files (the
/// other half is the node's: storage, peers, state transfers), and never more than 4096.
pub fn default_max_connections() -> usize {
    match open_files_limit() {
        Some(limit) => (limit / 2).clamp(16, 4096),
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    match soft {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

/// Who a client certificate says the client is, set on every request of its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCert {
    /// `node-<pid>`: a node of the cluster.
    Node(u64),
    /// `client-<name>`: a user.
    User(String),
}

impl ClientCert {
    /// What a certificate's DNS names say (a node name first).
    fn of_names(names: &[String]) -> Option<Self> {
        let node = names
            .iter()
            .find_map(|n| omnipaxos_runtime::transport::tls::pid_of_name(n));
        let user = || {
            names
                .iter()
                .find_map(|n| n.strip_prefix("client-"))
                .filter(|n| crate::auth::valid_name(n))
                .map(|n| ClientCert::User(n.to_string()))
        };
        node.map(ClientCert::Node).or_else(user)
    }
}

/// Serves `router` on `listener` until the task is dropped; over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let refusal = too_many_connections();
    let mut refusals_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // No descriptor left (or another passing error): wait it out; nothing latches.
                tracing::warn!("HTTP accept failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let _ = stream.try_write(&refusal);
            if refusals_logged.elapsed() >= Duration::from_secs(10) {
                refusals_logged = Instant::now();
                tracing::warn!(%remote, max_connections, "HTTP connections at the limit: refusing new ones");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::new());
            let watched = Watched {
                inner: stream,
                activity: activity.clone(),
            };
            let served = async {
                match tls {
                    None => serve_connection(watched, router, None).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(watched));
                        let Ok(Ok(stream)) = handshake.await else {
                            tracing::debug!(%remote, "TLS handshake failed or timed out");
                            return;
                        };
                        let names = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(omnipaxos_runtime::transport::tls::dns_names)
                            .unwrap_or_default();
                        serve_connection(stream, router, ClientCert::of_names(&names)).await
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = activity.silent_for(IDLE_TIMEOUT) => {
                    tracing::debug!(%remote, "closed an idle HTTP connection");
                }
            }
            drop(slot);
        });
    }
}

/// Serves HTTP/1.1 on one connection; every request carries `cert` (if any) as an extension.
async fn serve_connection<S>(stream: S, router: Router, cert: Option<ClientCert>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let service = router.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        req
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .await;
}

/// When a connection last moved a byte, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `limit`.
    async fn silent_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let silent = self.opened.elapsed().saturating_sub(last);
            if silent >= limit {
                return;
            }
            tokio::time::sleep(limit - silent).await;
        }
    }
}

/// A TCP stream that notes every byte it moves.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
