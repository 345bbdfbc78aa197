//! The TCP transport: one connection per peer and direction (this node writes its messages on
//! the connections it opens, and reads its peers' on the ones it accepts).
//!
//! Frames are a 4-byte big-endian length, a 1-byte kind and a body: `HELLO` (the sender's pid,
//! the first frame of a connection), `DATA` (one bincode-encoded [`WireMessage`]), `PING` and
//! `PONG`. Everything queued for a peer when its writer wakes up is encoded into one buffer and
//! written at once: many messages per system call.
//!
//! **Liveness.** A writer pings every quarter of `peer_timeout` and the peer answers on the same
//! connection. A connection that brings back nothing for `peer_timeout`, or whose write does
//! not complete within it, is dead: it is dropped together with what was queued on it (late
//! messages are worse than lost ones: the protocol resends), the node hears `Disconnected`, and
//! a new connection is tried at once and then with a backoff of at most `max_backoff`. So a
//! silently cut link is noticed within `peer_timeout` and a healed one serves again within
//! about `max_backoff`. Accepted connections that stay silent for `peer_timeout` are closed.
//!
//! **Authentication.** Without TLS, a connection is accepted from a configured peer's pid as
//! it claims in its `HELLO`: anyone who can reach the port can pretend to be a peer, so use
//! plain TCP only on a network you trust. With `tls` (feature `tls`), both ends present
//! certificates signed by the cluster's CA, and the pid in the `HELLO` must be the one the
//! certificate names (`node-<pid>`); anything else is refused before a message is read.
//! Frames above `max_frame_bytes`, undecodable frames and frames from unknown pids close the
//! connection, with a log line, and change nothing.
//!
//! **Large messages.** A message whose encoding is larger than `max_frame_bytes` (a log
//! synchronisation with a large snapshot) travels as `PART` frames of at most 1 MiB, one
//! per write, with heartbeats let through between them (the private `transport::parts`); one above
//! `max_message_bytes` is not sent.

use super::parts::{may_be_large, may_overtake, Outgoing, Reassembly, PART_BYTES, PART_HEADER};
use super::{count, Inbox, Transport, TransportEvent, TransportStats};
use crate::config::NetworkConfig;
use crate::wire::{self, NodeId, RuntimeEntry, WireMessage};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

const HELLO: u8 = 0;
const DATA: u8 = 1;
const PING: u8 = 2;
const PONG: u8 = 3;
const PART: u8 = 4;
/// A `HELLO` frame: length (4 bytes), kind, pid (8 bytes).
const HELLO_FRAME_BYTES: usize = 13;
/// Connections from one address that have not yet proved who they are (TLS handshake and
/// `HELLO`); more are closed at once. Every peer keeps at most one connection to this node, so
/// a handful per address is plenty, even for several nodes on one host.
const MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 16;
/// Bytes a frame body gets room for before any of them arrived.
const FIRST_READ: usize = 64 * 1024;
/// Connections from all addresses together that have not yet proved who they are.
const MAX_UNAUTHENTICATED: usize = 256;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 10_000;
/// Messages taken from a peer's queue for one write.
const WRITE_BATCH: usize = 1024;

/// A byte stream a connection runs on: plain TCP or TLS over it.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for C {}

type Stats = Arc<Mutex<TransportStats>>;

fn lock(stats: &Stats) -> MutexGuard<'_, TransportStats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

struct Peer<T: RuntimeEntry> {
    queue: mpsc::Sender<WireMessage<T>>,
    connected: Arc<AtomicBool>,
}

/// What the connection tasks share.
struct Shared {
    me: NodeId,
    config: NetworkConfig,
    allowed: RwLock<BTreeSet<NodeId>>,
    stats: Stats,
    #[cfg(feature = "tls")]
    tls: Option<super::tls::TlsContext>,
}

/// The TCP transport (see the module docs).
pub struct TcpTransport<T: RuntimeEntry> {
    shared: Arc<Shared>,
    listener: Option<std::net::TcpListener>,
    peers: BTreeMap<NodeId, Peer<T>>,
    inbox: Option<Inbox<T>>,
    /// Peers added before the node started, connected on start.
    added: Vec<(NodeId, String)>,
    tasks: JoinSet<()>,
    /// Tells every task to end (they finish their own sub-tasks first).
    stop: watch::Sender<bool>,
}

impl<T: RuntimeEntry> TcpTransport<T> {
    /// Binds `config.listen` (so that a taken port is reported here) and loads the TLS files
    /// if configured. Connections start when the node starts. `me` is this node's pid.
    pub fn bind(me: NodeId, config: NetworkConfig) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(files) => Some(super::tls::TlsContext::load(files)?),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        if config.tls.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS files are configured but omnipaxos_runtime was built without its `tls` feature",
            ));
        }
        let allowed = RwLock::new(config.peers.keys().copied().collect());
        Ok(Self {
            shared: Arc::new(Shared {
                me,
                config,
                allowed,
                stats: Stats::default(),
                #[cfg(feature = "tls")]
                tls,
            }),
            listener: Some(listener),
            peers: BTreeMap::new(),
            inbox: None,
            added: Vec::new(),
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    fn connect_to(&mut self, pid: NodeId, address: String) {
        if pid == self.shared.me || self.peers.contains_key(&pid) {
            return;
        }
        if let Ok(mut allowed) = self.shared.allowed.write() {
            allowed.insert(pid);
        }
        let Some(inbox) = self.inbox.clone() else {
            self.added.push((pid, address));
            return;
        };
        let (queue, rx) = mpsc::channel(PEER_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let link = Link {
            pid,
            address,
            inbox,
            connected: connected.clone(),
            stop: self.stop.subscribe(),
        };
        let task = outbound(self.shared.clone(), link, rx);
        self.tasks.spawn(task);
        self.peers.insert(pid, Peer { queue, connected });
    }
}

impl<T: RuntimeEntry> Transport<T> for TcpTransport<T> {
    fn start(&mut self, _me: NodeId, inbox: Inbox<T>) {
        self.inbox = Some(inbox.clone());
        if let Some(listener) = self.listener.take() {
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    let stop = self.stop.subscribe();
                    self.tasks
                        .spawn(listen(self.shared.clone(), listener, inbox, stop));
                }
                Err(e) => tracing::error!(pid = self.shared.me, "cannot listen: {e}"),
            }
        }
        let peers: Vec<(NodeId, String)> = self
            .shared
            .config
            .peers
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .chain(std::mem::take(&mut self.added))
            .collect();
        for (pid, address) in peers {
            self.connect_to(pid, address);
        }
    }

    fn send(&mut self, to: NodeId, messages: &mut Vec<WireMessage<T>>) {
        let mut dropped = 0;
        match self.peers.get(&to) {
            Some(peer) if peer.connected.load(Ordering::Relaxed) => {
                for msg in messages.drain(..) {
                    if peer.queue.try_send(msg).is_err() {
                        dropped += 1;
                    }
                }
            }
            _ => {
                dropped = messages.len() as u64;
                messages.clear();
            }
        }
        if dropped > 0 {
            lock(&self.shared.stats).dropped += dropped;
        }
    }

    fn is_connected(&self, to: NodeId) -> bool {
        self.peers
            .get(&to)
            .is_some_and(|p| p.connected.load(Ordering::Relaxed))
    }

    /// Also before the node starts (e.g. when every node listens on port 0 first).
    fn add_peer(&mut self, pid: NodeId, address: Option<String>) {
        if let Some(address) = address {
            self.connect_to(pid, address);
        }
    }

    fn stats(&self) -> TransportStats {
        lock(&self.shared.stats).clone()
    }

    async fn shutdown(&mut self) {
        self.peers.clear();
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Writes one frame header and body into `out`.
fn put_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// Reads one frame; refuses (with an error) one above `max` bytes before reading its body.
/// The body grows as its bytes arrive (room for 64 KiB at first, never the announced length up
/// front), so a peer that announces a large frame and sends nothing holds little memory.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    body: &mut Vec<u8>,
) -> io::Result<u8> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 || len > max + 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    body.clear();
    let want = len - 1;
    // Room for at most FIRST_READ bytes before any arrived (one read for a small frame), then
    // doubled as they arrive, never past what the frame still misses.
    body.reserve(want.min(FIRST_READ));
    while body.len() < want {
        let missing = want - body.len();
        if body.capacity() == body.len() {
            body.reserve(missing.min(body.len()));
        }
        if (&mut *r).take(missing as u64).read_buf(body).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("a frame cut after {} of {want} bytes", body.len()),
            ));
        }
    }
    Ok(header[4])
}

/// Reads the first frame of a connection, which must be a `HELLO`: its 5-byte header is
/// checked before anything else is read, and the pid goes into 8 bytes of its own, whatever
/// length the header announced. Returns the pid it claims.
async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<NodeId> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len != HELLO_FRAME_BYTES - 4 || header[4] != HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the first frame is not a hello (kind {}, {len} bytes)",
                header[4]
            ),
        ));
    }
    let mut pid = [0u8; 8];
    r.read_exact(&mut pid).await?;
    Ok(NodeId::from_be_bytes(pid))
}

async fn sleep_backoff(backoff: &mut Duration, max: Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(max);
}

/// Resolves once the transport is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One outbound connection's fixed parts.
struct Link<T: RuntimeEntry> {
    pid: NodeId,
    address: String,
    inbox: Inbox<T>,
    connected: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
}

/// Keeps a connection to `link.pid` and writes its queue on it, until told to stop.
async fn outbound<T: RuntimeEntry>(
    shared: Arc<Shared>,
    mut link: Link<T>,
    mut queue: mpsc::Receiver<WireMessage<T>>,
) {
    let timeout = shared.config.peer_timeout;
    let pid = link.pid;
    let mut backoff = Duration::from_millis(10);
    loop {
        let attempt = tokio::time::timeout(timeout, connect(&shared, pid, &link.address));
        let conn = tokio::select! {
            _ = stopped(&mut link.stop) => return,
            attempt = attempt => attempt,
        };
        let conn = match conn {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(pid = shared.me, peer = pid, "cannot connect: {e}");
                tokio::select! {
                    _ = stopped(&mut link.stop) => return,
                    _ = sleep_backoff(&mut backoff, shared.config.max_backoff) => {}
                }
                continue;
            }
            Err(_) => continue,
        };
        let (reason, was_up) = write_loop(&shared, conn, &mut queue, &mut link).await;
        link.connected.store(false, Ordering::Relaxed);
        let Some(reason) = reason else {
            return;
        };
        if was_up {
            // Only a peer that took the hello and answered resets the backoff: one that
            // refuses this node (a certificate it does not accept) is tried ever more rarely.
            backoff = Duration::from_millis(10);
        } else {
            // The peer never answered on it: not a connection that was up and went down.
            tokio::select! {
                _ = stopped(&mut link.stop) => return,
                _ = sleep_backoff(&mut backoff, shared.config.max_backoff) => {}
            }
            continue;
        }
        let mut dropped = 0;
        while queue.try_recv().is_ok() {
            dropped += 1;
        }
        lock(&shared.stats).dropped += dropped;
        tracing::info!(
            pid = shared.me,
            peer = pid,
            dropped,
            "connection lost: {reason}"
        );
        link.inbox.deliver(TransportEvent::Disconnected(pid));
    }
}

async fn connect(shared: &Shared, pid: NodeId, address: &str) -> io::Result<Box<dyn ConnBox>> {
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    #[cfg(feature = "tls")]
    let mut conn: Box<dyn ConnBox> = match &shared.tls {
        Some(tls) => Box::new(tls.connect(pid, tcp).await?),
        None => Box::new(tcp),
    };
    #[cfg(not(feature = "tls"))]
    let mut conn: Box<dyn ConnBox> = {
        let _ = pid;
        Box::new(tcp)
    };
    let mut hello = Vec::with_capacity(13);
    put_frame(&mut hello, HELLO, &shared.me.to_be_bytes());
    conn.write_all(&hello).await?;
    Ok(conn)
}

/// A boxed connection.
pub(crate) trait ConnBox: AsyncRead + AsyncWrite + Send + Unpin {}
impl<C: Conn> ConnBox for C {}

/// Writes the queue on `conn` until the connection fails or goes silent (returns why) or the
/// transport stops (returns `None`); also whether the connection was ever up. A connection is
/// up, and the node told `Connected`, only once the peer answered on it: a TCP handshake alone
/// (a proxy, a backlog) proves nothing.
async fn write_loop<T: RuntimeEntry>(
    shared: &Shared,
    conn: Box<dyn ConnBox>,
    queue: &mut mpsc::Receiver<WireMessage<T>>,
    link: &mut Link<T>,
) -> (Option<String>, bool) {
    let stop = &mut link.stop;
    let mut up = false;
    let answered = Arc::new(tokio::sync::Notify::new());
    let answered_by_reader = answered.clone();
    let timeout = shared.config.peer_timeout;
    let (mut reader, mut writer) = tokio::io::split(conn);
    let start = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let heard_by_reader = heard.clone();
    let max = shared.config.max_frame_bytes;
    // The reader only watches for life (pongs); it ends when the connection does.
    let mut read_task = tokio::spawn(async move {
        let mut body = Vec::new();
        while read_frame(&mut reader, max, &mut body).await.is_ok() {
            heard_by_reader.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            answered_by_reader.notify_one();
        }
    });
    let mut ping = tokio::time::interval(timeout / 4);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut buf = Vec::new();
    let mut reader_done = false;
    // A message larger than a frame being sent, part by part.
    let mut large: Option<Outgoing<T>> = None;
    let part_bytes = max.saturating_sub(PART_HEADER).clamp(1, PART_BYTES);
    let mut part = Vec::new();
    let reason = loop {
        buf.clear();
        tokio::select! {
            _ = stopped(stop) => break None,
            _ = answered.notified(), if !up => {
                up = true;
                // Anything queued while there was no connection is stale.
                while queue.try_recv().is_ok() {}
                link.connected.store(true, Ordering::Relaxed);
                link.inbox.deliver(TransportEvent::Connected(link.pid));
            }
            n = queue.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    break None;
                }
                encode_batch(shared, link.pid, &mut batch, &mut buf, &mut large);
            }
            _ = ping.tick() => {
                let silent = (start.elapsed().as_millis() as u64).saturating_sub(heard.load(Ordering::Relaxed));
                if start.elapsed() > timeout && silent > timeout.as_millis() as u64 {
                    break Some(format!("nothing heard for {silent} ms"));
                }
                put_frame(&mut buf, PING, &[]);
            }
            _ = &mut read_task => {
                reader_done = true;
                break Some("closed by the peer".to_string());
            }
            _ = std::future::ready(()), if large.as_ref().is_some_and(|l| !l.is_encoding()) => {}
            // An encoding on the blocking pool is looked at every millisecond.
            _ = tokio::time::sleep(Duration::from_millis(1)), if large.as_ref().is_some_and(|l| l.is_encoding()) => {}
        }
        if let Some(pending) = &mut large {
            if let Some((kind, encoded)) = pending.encoded().await {
                let framed = encoded.map(|body| {
                    let stats = &mut lock(&shared.stats);
                    frame_or_parts(shared, stats, link.pid, kind, body, &mut buf)
                });
                match framed {
                    Ok(Some(body)) => pending.start_sending(body),
                    Ok(None) => {}
                    Err(e) => tracing::error!(pid = shared.me, "cannot encode a {kind}: {e}"),
                }
            }
        }
        // One part per write, after whatever else this pass had to send.
        if let Some(sending) = &mut large {
            if sending.next_part(part_bytes, &mut part) {
                put_frame(&mut buf, PART, &part);
                note_frame(&mut lock(&shared.stats), part.len());
            }
        }
        // Done (sent, or encoded small, or failed): what waited behind it goes now.
        if large
            .as_ref()
            .is_some_and(|l| !l.is_encoding() && !l.is_sending())
        {
            let held = large.take().map(|done| done.held).unwrap_or_default();
            batch.extend(held);
            encode_batch(shared, link.pid, &mut batch, &mut buf, &mut large);
        }
        if buf.is_empty() {
            continue;
        }
        match tokio::time::timeout(timeout, writer.write_all(&buf)).await {
            Ok(Ok(())) => lock(&shared.stats).writes += 1,
            Ok(Err(e)) => break Some(format!("write failed: {e}")),
            Err(_) => break Some(format!("a write took over {} ms", timeout.as_millis())),
        }
    };
    // No reader outlives its connection.
    if !reader_done {
        read_task.abort();
        let _ = read_task.await;
    }
    (reason, up)
}

/// Encodes `batch` into frames in `buf`. A message of a kind that may be large (a log
/// synchronisation, a handover) becomes `large`: encoded on the blocking pool, then sent by the
/// caller, in parts if above the frame limit; while it is, messages other than heartbeats are
/// held behind it.
fn encode_batch<T: RuntimeEntry>(
    shared: &Shared,
    to: NodeId,
    batch: &mut Vec<WireMessage<T>>,
    buf: &mut Vec<u8>,
    large: &mut Option<Outgoing<T>>,
) {
    // One lock for the batch: what is encoded here is small (the kinds that may be large are
    // encoded on the blocking pool), so the node's thread, which reads the counters, never
    // waits long for it.
    let mut stats = lock(&shared.stats);
    for msg in batch.drain(..) {
        if let Some(pending) = large.as_mut() {
            if !may_overtake(&msg) {
                if pending.held.len() < PEER_QUEUE {
                    pending.held.push_back(msg);
                } else {
                    stats.dropped += 1;
                }
                continue;
            }
        }
        if may_be_large(&msg) {
            *large = Some(Outgoing::encode(msg));
            continue;
        }
        let mut body = Vec::new();
        if let Err(e) = wire::encode(&msg, &mut body) {
            tracing::error!(pid = shared.me, "cannot encode a {}: {e}", msg.kind());
            continue;
        }
        if let Some(body) = frame_or_parts(shared, &mut stats, to, msg.kind(), body, buf) {
            // Only kinds that may be large get here large; send it in parts all the same.
            *large = Some(Outgoing::send(body));
        }
    }
}

/// An encoded message: dropped if above `max_message_bytes`, else counted and framed into
/// `buf`, or returned if it must go in parts.
fn frame_or_parts(
    shared: &Shared,
    stats: &mut TransportStats,
    to: NodeId,
    kind: &'static str,
    body: Vec<u8>,
    buf: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    if body.len() > shared.config.max_message_bytes {
        tracing::error!(
            pid = shared.me,
            "not sending a {kind} of {} bytes: above max_message_bytes ({})",
            body.len(),
            shared.config.max_message_bytes
        );
        stats.dropped += 1;
        return None;
    }
    count(stats, to, kind, true, body.len() as u64 + 5);
    if body.len() > shared.config.max_frame_bytes {
        tracing::debug!(
            pid = shared.me,
            "sending a {kind} of {} bytes in parts",
            body.len()
        );
        return Some(body);
    }
    put_frame(buf, DATA, &body);
    note_frame(stats, body.len());
    None
}

/// Keeps the largest frame seen (a frame: its body and 5 bytes of length and kind).
fn note_frame(stats: &mut TransportStats, body_len: usize) {
    stats.largest_frame_bytes = stats.largest_frame_bytes.max(body_len as u64 + 5);
}

/// Accepts peers' connections.
async fn listen<T: RuntimeEntry>(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbox: Inbox<T>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut handles: BTreeMap<tokio::task::Id, tokio::task::AbortHandle> = BTreeMap::new();
    let mut by_peer: BTreeMap<NodeId, tokio::task::AbortHandle> = BTreeMap::new();
    let (claimed_tx, mut claimed_rx) = mpsc::unbounded_channel::<(NodeId, tokio::task::Id)>();
    let unauthenticated = UnauthenticatedCounts::default();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => {
                connections.shutdown().await;
                return;
            }
            accepted = listener.accept() => {
                let Ok((tcp, remote)) = accepted else { continue };
                let Some(unproven) = Unauthenticated::admit(&unauthenticated, remote.ip()) else {
                    lock(&shared.stats).refused_frames += 1;
                    tracing::debug!(pid = shared.me, %remote, "refused a connection: too many unauthenticated ones");
                    continue;
                };
                let shared = shared.clone();
                let inbox = inbox.clone();
                let claimed = claimed_tx.clone();
                let handle = connections.spawn(async move {
                    if let Err(reason) = inbound(&shared, tcp, unproven, inbox, claimed).await {
                        lock(&shared.stats).refused_frames += 1;
                        tracing::warn!(pid = shared.me, %remote, "closed a peer connection: {reason}");
                    }
                });
                handles.insert(handle.id(), handle);
            }
            Some((pid, id)) = claimed_rx.recv() => {
                // One connection per peer: a new one from the same peer replaces the old.
                if let Some(handle) = handles.get(&id) {
                    if let Some(old) = by_peer.insert(pid, handle.clone()) {
                        if old.id() != id {
                            old.abort();
                        }
                    }
                }
            }
            Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                handles.remove(&id);
                by_peer.retain(|_, h| h.id() != id);
            }
        }
    }
}

/// Connections not yet authenticated, per remote address.
type UnauthenticatedCounts = Arc<Mutex<BTreeMap<std::net::IpAddr, usize>>>;

/// One connection counted as not yet authenticated, until it is dropped.
struct Unauthenticated {
    counts: UnauthenticatedCounts,
    ip: std::net::IpAddr,
}

impl Unauthenticated {
    /// Counts a new connection from `ip`, or refuses it if its address or everyone together
    /// already has as many as allowed.
    fn admit(counts: &UnauthenticatedCounts, ip: std::net::IpAddr) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = map.values().sum();
        let mine = map.entry(ip).or_insert(0);
        if *mine >= MAX_UNAUTHENTICATED_PER_ADDRESS || total >= MAX_UNAUTHENTICATED {
            return None;
        }
        *mine += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves one accepted connection; `Err` says why it was refused or closed.
async fn inbound<T: RuntimeEntry>(
    shared: &Shared,
    tcp: TcpStream,
    unproven: Unauthenticated,
    inbox: Inbox<T>,
    claimed: mpsc::UnboundedSender<(NodeId, tokio::task::Id)>,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let timeout = shared.config.peer_timeout;
    #[cfg(feature = "tls")]
    let (conn, names): (Box<dyn ConnBox>, Option<Vec<NodeId>>) = match &shared.tls {
        Some(tls) => {
            let (conn, names) = tokio::time::timeout(timeout, tls.accept(tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            (Box::new(conn), Some(names))
        }
        None => (Box::new(tcp), None),
    };
    #[cfg(not(feature = "tls"))]
    let (conn, names): (Box<dyn ConnBox>, Option<Vec<NodeId>>) = (Box::new(tcp), None);
    let (mut reader, mut writer) = tokio::io::split(conn);
    let mut body = Vec::new();
    let max = shared.config.max_frame_bytes;
    let pid = tokio::time::timeout(timeout, read_hello(&mut reader))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| format!("no hello: {e}"))?;
    let known = shared
        .allowed
        .read()
        .map(|a| a.contains(&pid))
        .unwrap_or(false);
    if !known {
        return Err(format!("hello from pid {pid}, which is not a peer"));
    }
    if let Some(names) = names {
        if !names.contains(&pid) {
            return Err(format!(
                "hello from pid {pid} with a certificate for {names:?}"
            ));
        }
    }
    // The peer proved who it is: it no longer counts against its address.
    drop(unproven);
    if let Some(id) = tokio::task::try_id() {
        let _ = claimed.send((pid, id));
    }
    let mut pong = Vec::new();
    put_frame(&mut pong, PONG, &[]);
    let mut parts = Reassembly::default();
    // A large message being decoded off this task, so that the heartbeats behind it are read
    // (and delivered) meanwhile; other messages wait for it, in order.
    let mut decoding: Option<Decoding<T>> = None;
    let outcome = loop {
        let kind =
            match tokio::time::timeout(timeout, read_frame(&mut reader, max, &mut body)).await {
                Err(_) => break Err(format!("nothing from {pid} for {} ms", timeout.as_millis())),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
                Ok(Err(e)) => break Err(format!("from {pid}: {e}")),
                Ok(Ok(kind)) => kind,
            };
        match kind {
            PING => {
                if tokio::time::timeout(timeout, writer.write_all(&pong))
                    .await
                    .is_err()
                {
                    break Err(format!("cannot answer {pid}'s ping"));
                }
            }
            DATA => {
                let msg = match decode_counted(shared, pid, &body) {
                    Ok(msg) => msg,
                    Err(e) => break Err(e),
                };
                match &mut decoding {
                    Some(d) if !may_overtake(&msg) => d.hold(shared, msg),
                    _ => {
                        inbox.deliver(TransportEvent::Message { from: pid, msg });
                    }
                }
            }
            PART => {
                note_frame(&mut lock(&shared.stats), body.len());
                let whole = match parts.add(&body, shared.config.max_message_bytes) {
                    Ok(whole) => whole,
                    Err(e) => break Err(format!("from {pid}: {e}")),
                };
                if let Some(whole) = whole {
                    // Two large messages in a row: the first goes first.
                    if let Some(d) = decoding.take() {
                        if let Err(e) = d.finish(shared, &inbox, pid).await {
                            break Err(e);
                        }
                    }
                    decoding = Some(Decoding::start(whole));
                }
            }
            other => break Err(format!("unexpected frame kind {other} from {pid}")),
        }
        // Checked after every frame; the sender pings at least every quarter of
        // `peer_timeout`, so a finished decoding waits at most that long to be delivered.
        if decoding.as_ref().is_some_and(|d| d.task.is_finished()) {
            if let Some(d) = decoding.take() {
                if let Err(e) = d.finish(shared, &inbox, pid).await {
                    break Err(e);
                }
            }
        }
        if inbox.is_closed() {
            break Ok(());
        }
    };
    // A message that arrived whole is delivered even if the connection then ended.
    if let Some(d) = decoding {
        d.finish(shared, &inbox, pid).await?;
    }
    outcome
}

/// A large message decoded on Tokio's blocking pool, and the messages that arrived after it
/// (heartbeats excepted), to be delivered after it.
struct Decoding<T: RuntimeEntry> {
    task: tokio::task::JoinHandle<(usize, Result<WireMessage<T>, String>)>,
    after: std::collections::VecDeque<WireMessage<T>>,
}

impl<T: RuntimeEntry> Decoding<T> {
    fn start(bytes: Vec<u8>) -> Self {
        let task = tokio::task::spawn_blocking(move || (bytes.len(), wire::decode(&bytes)));
        Self {
            task,
            after: Default::default(),
        }
    }

    fn hold(&mut self, shared: &Shared, msg: WireMessage<T>) {
        if self.after.len() < PEER_QUEUE {
            self.after.push_back(msg);
        } else {
            lock(&shared.stats).dropped += 1;
        }
    }

    /// Waits for the decoding, then delivers the message and those held behind it.
    async fn finish(self, shared: &Shared, inbox: &Inbox<T>, pid: NodeId) -> Result<(), String> {
        let (len, decoded) = self
            .task
            .await
            .map_err(|e| format!("decoding a message from {pid} failed: {e}"))?;
        let msg = decoded.map_err(|e| format!("undecodable message from {pid}: {e}"))?;
        count(
            &mut lock(&shared.stats),
            pid,
            msg.kind(),
            false,
            len as u64 + 5,
        );
        inbox.deliver(TransportEvent::Message { from: pid, msg });
        for msg in self.after {
            inbox.deliver(TransportEvent::Message { from: pid, msg });
        }
        Ok(())
    }
}

/// Decodes one `DATA` frame's message from `pid` and counts it (and the frame).
fn decode_counted<T: RuntimeEntry>(
    shared: &Shared,
    pid: NodeId,
    bytes: &[u8],
) -> Result<WireMessage<T>, String> {
    let msg: WireMessage<T> =
        wire::decode(bytes).map_err(|e| format!("undecodable message from {pid}: {e}"))?;
    let mut stats = lock(&shared.stats);
    note_frame(&mut stats, bytes.len());
    count(&mut stats, pid, msg.kind(), false, bytes.len() as u64 + 5);
    Ok(msg)
}
