//! The peer transport: one TCP connection per direction and peer, frames of a 4-byte
//! big-endian length, the 4-byte configuration id the message belongs to, and the bincode
//! encoding of the `Message`. A connection starts with a hello
//! frame carrying the sender's pid; a frame from a pid that is not a peer, a frame whose sender
//! does not match, an oversized frame or a frame that does not decode closes the connection
//! (logged). Outbound connections reconnect with backoff and report the reconnection, so the
//! node calls `reconnected(pid)`.

use crate::entry::KvCommand;
use omnipaxos::messages::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub type Msg = Message<KvCommand>;

/// Frames larger than this close the connection.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What the transport tells the node.
pub enum NetEvent {
    /// A message of the configuration with this id.
    Message(u32, Box<Msg>),
    Reconnected(u64),
}

/// The pids allowed to connect; grows when a reconfiguration adds nodes.
pub type Allowed = Arc<RwLock<BTreeSet<u64>>>;

/// Handles to the outbound connections, and which peers are connected.
pub struct Peers {
    me: u64,
    events: mpsc::Sender<NetEvent>,
    allowed: Allowed,
    senders: BTreeMap<u64, mpsc::Sender<(u32, Msg)>>,
    connected: BTreeMap<u64, Arc<AtomicBool>>,
}

impl Peers {
    /// Sends `msg` of configuration `config_id` to its receiver, if that is a known peer.
    pub fn send(&self, config_id: u32, msg: Msg) {
        if let Some(tx) = self.senders.get(&msg.get_receiver()) {
            // A full queue drops the message: the protocol repairs losses.
            let _ = tx.try_send((config_id, msg));
        }
    }

    /// Connects to a new peer (a node that joins in a reconfiguration).
    pub fn add(&mut self, pid: u64, addr: SocketAddr) {
        if self.senders.contains_key(&pid) || pid == self.me {
            return;
        }
        if let Ok(mut allowed) = self.allowed.write() {
            allowed.insert(pid);
        }
        let (tx, rx) = mpsc::channel(10_000);
        let flag = Arc::new(AtomicBool::new(false));
        self.senders.insert(pid, tx);
        self.connected.insert(pid, flag.clone());
        tokio::spawn(outbound(self.me, pid, addr, rx, self.events.clone(), flag));
    }

    pub fn allowed(&self) -> Allowed {
        self.allowed.clone()
    }

    pub fn connected(&self) -> Vec<u64> {
        self.connected
            .iter()
            .filter(|(_, c)| c.load(Ordering::Relaxed))
            .map(|(p, _)| *p)
            .collect()
    }
}

fn encode(config_id: u32, msg: &Msg) -> Option<Vec<u8>> {
    let mut body = config_id.to_be_bytes().to_vec();
    body.extend(bincode::serde::encode_to_vec(msg, bincode::config::standard()).ok()?);
    Some(body)
}

fn decode(bytes: &[u8]) -> Option<(u32, Msg)> {
    let config_id = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    bincode::serde::decode_from_slice(&bytes[4..], bincode::config::standard())
        .ok()
        .map(|(m, _)| (config_id, m))
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(body).await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Starts the outbound connections to every peer.
pub fn connect_peers(
    me: u64,
    peers: &BTreeMap<u64, SocketAddr>,
    events: mpsc::Sender<NetEvent>,
) -> Peers {
    let mut handle = Peers {
        me,
        events,
        allowed: Arc::new(RwLock::new(BTreeSet::new())),
        senders: BTreeMap::new(),
        connected: BTreeMap::new(),
    };
    for (&pid, &addr) in peers {
        handle.add(pid, addr);
    }
    handle
}

async fn outbound(
    me: u64,
    pid: u64,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<(u32, Msg)>,
    events: mpsc::Sender<NetEvent>,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut ever_connected = false;
    loop {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                // Drop what queued up meanwhile: it is stale, and the protocol resends.
                while rx.try_recv().is_ok() {}
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if write_frame(&mut stream, &me.to_be_bytes()).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(50);
        connected.store(true, Ordering::Relaxed);
        if ever_connected {
            tracing::info!(peer = pid, "reconnected");
        }
        ever_connected = true;
        let _ = events.send(NetEvent::Reconnected(pid)).await;
        while let Some((config_id, msg)) = rx.recv().await {
            let Some(body) = encode(config_id, &msg) else {
                continue;
            };
            if write_frame(&mut stream, &body).await.is_err() {
                break;
            }
        }
        connected.store(false, Ordering::Relaxed);
        if rx.is_closed() {
            return;
        }
    }
}

/// Accepts inbound connections from peers and forwards their messages to the node.
pub async fn listen(
    listener: TcpListener,
    me: u64,
    allowed: Allowed,
    events: mpsc::Sender<NetEvent>,
) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let events = events.clone();
        let allowed = allowed.clone();
        tokio::spawn(async move {
            if let Err(reason) = inbound(stream, me, &allowed, events).await {
                tracing::warn!(%remote, "closed a peer connection: {reason}");
            }
        });
    }
}

async fn inbound(
    mut stream: TcpStream,
    me: u64,
    allowed: &Allowed,
    events: mpsc::Sender<NetEvent>,
) -> Result<(), String> {
    let hello = read_frame(&mut stream).await.map_err(|e| e.to_string())?;
    let pid = match <[u8; 8]>::try_from(hello.as_slice()) {
        Ok(bytes) => u64::from_be_bytes(bytes),
        Err(_) => return Err("malformed hello frame".into()),
    };
    if !allowed.read().map(|a| a.contains(&pid)).unwrap_or(false) {
        return Err(format!("hello from unknown pid {pid}"));
    }
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("from {pid}: {e}")),
        };
        let (config_id, msg) =
            decode(&body).ok_or_else(|| format!("undecodable frame from {pid}"))?;
        if msg.get_sender() != pid || msg.get_receiver() != me {
            return Err(format!(
                "frame from {pid} claims {} -> {}",
                msg.get_sender(),
                msg.get_receiver()
            ));
        }
        if events
            .send(NetEvent::Message(config_id, Box::new(msg)))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}
