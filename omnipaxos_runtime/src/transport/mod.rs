//! How a node reaches its peers. The node's task calls [`Transport::send`] with everything it
//! has for one peer at once and never waits; the transport hands what arrives to the node's
//! [`Inbox`]. Transports may drop messages (the protocol resends), but must deliver each
//! message at most once and in order per connection (heartbeats may overtake a message sent in
//! parts), and must only deliver a message as coming
//! from pid `p` if it really comes from `p` (see [`tcp`] for how, and when it cannot).

pub mod memory;
mod parts;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;

use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use std::collections::BTreeMap;
use std::future::Future;
use tokio::sync::mpsc;

/// What a transport tells the node.
#[derive(Debug)]
pub enum TransportEvent<T: RuntimeEntry> {
    /// A message from peer `from`.
    Message {
        /// The authenticated sender.
        from: NodeId,
        /// The message.
        msg: WireMessage<T>,
    },
    /// A new connection to `pid` is up (the first, or one that replaced a broken one). The node
    /// calls `OmniPaxos::reconnected(pid)` so that the protocol resends what may be lost.
    Connected(NodeId),
    /// The connection to `pid` broke; what was queued on it was dropped.
    Disconnected(NodeId),
}

/// Where a transport delivers incoming messages. Bounded: a full inbox drops the message (the
/// protocol resends), so a flood never grows memory.
#[derive(Clone, Debug)]
pub struct Inbox<T: RuntimeEntry> {
    tx: mpsc::Sender<TransportEvent<T>>,
}

impl<T: RuntimeEntry> Inbox<T> {
    /// An inbox of `capacity` events and the receiver the node reads them from (for driving a
    /// transport by hand, e.g. in tests).
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<TransportEvent<T>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Delivers `event` if there is room; returns false if it was dropped (or the node stopped).
    pub fn deliver(&self, event: TransportEvent<T>) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                if matches!(event, TransportEvent::Message { .. }) {
                    tracing::debug!("inbox full: dropped an incoming message");
                    false
                } else {
                    // Connection changes are rare and must not be lost: wait for room (on the
                    // runtime of the caller; called from outside one, it is dropped and logged).
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        tracing::warn!("inbox full outside a Tokio runtime: dropped {event:?}");
                        return false;
                    };
                    let tx = self.tx.clone();
                    runtime.spawn(async move {
                        let _ = tx.send(event).await;
                    });
                    true
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the node stopped listening.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Messages and bytes of one kind, in and out (defined with the metrics that report them).
pub use crate::status::KindCounts;

/// A transport's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// By message kind ([`WireMessage::kind`]), all peers together.
    pub by_kind: BTreeMap<&'static str, KindCounts>,
    /// By peer, then by message kind.
    pub by_peer: BTreeMap<NodeId, BTreeMap<&'static str, KindCounts>>,
    /// Messages dropped because a peer's queue was full or its connection down.
    pub dropped: u64,
    /// Frames refused: too large, undecodable, or from an unauthenticated sender.
    pub refused_frames: u64,
    /// Write system calls on connections (with coalescing, fewer than messages sent).
    pub writes: u64,
    /// The largest frame written or read, in bytes (length prefix and kind included): never
    /// above `max_frame_bytes` + 5, as larger messages travel in parts. 0 for transports
    /// without frames.
    pub largest_frame_bytes: u64,
}

/// A way to reach peers. See the module docs for what it must guarantee.
pub trait Transport<T: RuntimeEntry>: Send + 'static {
    /// Starts the transport for node `me`; incoming messages go to `inbox`. Called once, on
    /// the node's Tokio runtime.
    fn start(&mut self, me: NodeId, inbox: Inbox<T>);

    /// Queues `messages` for `to` and returns at once (taking them out of the vector). Messages
    /// that do not fit, or for a peer whose connection is down, are dropped and counted.
    fn send(&mut self, to: NodeId, messages: &mut Vec<WireMessage<T>>);

    /// Whether a connection to `to` is up right now.
    fn is_connected(&self, to: NodeId) -> bool;

    /// Makes `pid` a peer (a node that joins by reconfiguration), at `address` (meaning is
    /// the transport's: `host:port` for TCP).
    fn add_peer(&mut self, pid: NodeId, address: Option<String>);

    /// The transport's counters so far.
    fn stats(&self) -> TransportStats;

    /// Stops every task the transport started and closes its connections and listener.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// Adds one message of `kind` to or from `peer`, of `bytes` encoded bytes, to `stats`.
pub(crate) fn count(
    stats: &mut TransportStats,
    peer: NodeId,
    kind: &'static str,
    outgoing: bool,
    bytes: u64,
) {
    let by_peer = stats
        .by_peer
        .entry(peer)
        .or_default()
        .entry(kind)
        .or_default();
    by_peer.add(outgoing, bytes);
    stats.by_kind.entry(kind).or_default().add(outgoing, bytes);
}
