//! The peer transport: one TCP connection per direction and peer, frames of a 4-byte
//! big-endian length and the bincode encoding of a `Message`. A connection starts with a hello
//! frame carrying the sender's pid; a frame from a pid that is not a peer, a frame whose sender
//! does not match, an oversized frame or a frame that does not decode closes the connection
//! (logged). Outbound connections reconnect with backoff and report the reconnection, so the
//! node calls `reconnected(pid)`.

use crate::entry::KvCommand;
use omnipaxos::messages::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub type Msg = Message<KvCommand>;

/// Frames larger than this close the connection.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What the transport tells the node.
pub enum NetEvent {
    Message(Box<Msg>),
    Reconnected(u64),
}

/// Handles to the outbound connections, and which peers are connected.
pub struct Peers {
    pub senders: BTreeMap<u64, mpsc::Sender<Msg>>,
    pub connected: BTreeMap<u64, Arc<AtomicBool>>,
}

impl Peers {
    pub fn send(&self, msg: Msg) {
        if let Some(tx) = self.senders.get(&msg.get_receiver()) {
            // A full queue drops the message: the protocol repairs losses.
            let _ = tx.try_send(msg);
        }
    }

    pub fn connected(&self) -> Vec<u64> {
        self.connected
            .iter()
            .filter(|(_, c)| c.load(Ordering::Relaxed))
            .map(|(p, _)| *p)
            .collect()
    }
}

fn encode(msg: &Msg) -> Option<Vec<u8>> {
    bincode::serde::encode_to_vec(msg, bincode::config::standard()).ok()
}

fn decode(bytes: &[u8]) -> Option<Msg> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .ok()
        .map(|(m, _)| m)
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
    let mut senders = BTreeMap::new();
    let mut connected = BTreeMap::new();
    for (&pid, &addr) in peers {
        let (tx, rx) = mpsc::channel(10_000);
        let flag = Arc::new(AtomicBool::new(false));
        senders.insert(pid, tx);
        connected.insert(pid, flag.clone());
        tokio::spawn(outbound(me, pid, addr, rx, events.clone(), flag));
    }
    Peers { senders, connected }
}

async fn outbound(
    me: u64,
    pid: u64,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Msg>,
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
        while let Some(msg) = rx.recv().await {
            let Some(body) = encode(&msg) else { continue };
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
    peers: Vec<u64>,
    events: mpsc::Sender<NetEvent>,
) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let events = events.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            if let Err(reason) = inbound(stream, me, &peers, events).await {
                tracing::warn!(%remote, "closed a peer connection: {reason}");
            }
        });
    }
}

async fn inbound(
    mut stream: TcpStream,
    me: u64,
    peers: &[u64],
    events: mpsc::Sender<NetEvent>,
) -> Result<(), String> {
    let hello = read_frame(&mut stream).await.map_err(|e| e.to_string())?;
    let pid = match <[u8; 8]>::try_from(hello.as_slice()) {
        Ok(bytes) => u64::from_be_bytes(bytes),
        Err(_) => return Err("malformed hello frame".into()),
    };
    if !peers.contains(&pid) {
        return Err(format!("hello from unknown pid {pid}"));
    }
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("from {pid}: {e}")),
        };
        let msg = decode(&body).ok_or_else(|| format!("undecodable frame from {pid}"))?;
        if msg.get_sender() != pid || msg.get_receiver() != me {
            return Err(format!(
                "frame from {pid} claims {} -> {}",
                msg.get_sender(),
                msg.get_receiver()
            ));
        }
        if events.send(NetEvent::Message(Box::new(msg))).await.is_err() {
            return Ok(());
        }
    }
}
