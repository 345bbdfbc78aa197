//! An in-process transport for tests and examples: every node of a [`MemoryNetwork`] reaches
//! the others through their inboxes, and links can be cut and healed (a cut drops messages
//! and reports `Disconnected`, like a broken TCP connection; a heal reports `Connected`).

use super::{count, Inbox, Transport, TransportEvent, TransportStats};
use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

struct Hub<T: RuntimeEntry> {
    inboxes: BTreeMap<NodeId, Inbox<T>>,
    /// Cut links, as (smaller pid, larger pid).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Directions (from, to) whose messages are held back until resumed.
    paused: BTreeSet<(NodeId, NodeId)>,
    held: Vec<(NodeId, NodeId, WireMessage<T>)>,
    stats: BTreeMap<NodeId, TransportStats>,
}

/// A network of in-process nodes. Clone it to give each node a transport.
pub struct MemoryNetwork<T: RuntimeEntry> {
    hub: Arc<Mutex<Hub<T>>>,
}

impl<T: RuntimeEntry> Clone for MemoryNetwork<T> {
    fn clone(&self) -> Self {
        Self {
            hub: self.hub.clone(),
        }
    }
}

impl<T: RuntimeEntry> Default for MemoryNetwork<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl<T: RuntimeEntry> MemoryNetwork<T> {
    /// An empty network.
    pub fn new() -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub {
                inboxes: BTreeMap::new(),
                cut: BTreeSet::new(),
                paused: BTreeSet::new(),
                held: Vec::new(),
                stats: BTreeMap::new(),
            })),
        }
    }

    fn hub(&self) -> MutexGuard<'_, Hub<T>> {
        // A panic elsewhere while holding the lock leaves the map consistent: keep going.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transport for one node of this network.
    pub fn transport(&self) -> MemoryTransport<T> {
        MemoryTransport {
            network: self.clone(),
            me: None,
        }
    }

    /// Holds back messages from `from` to `to` (a slow direction) until [`resume`](Self::resume);
    /// a cut of the link drops them.
    pub fn pause(&self, from: NodeId, to: NodeId) {
        self.hub().paused.insert((from, to));
    }

    /// Delivers, in order, what was held from `from` to `to`, and stops holding.
    pub fn resume(&self, from: NodeId, to: NodeId) {
        let mut hub = self.hub();
        hub.paused.remove(&(from, to));
        let held = std::mem::take(&mut hub.held);
        for (f, t, msg) in held {
            if (f, t) == (from, to) {
                notify(&hub, t, TransportEvent::Message { from: f, msg });
            } else {
                hub.held.push((f, t, msg));
            }
        }
    }

    /// Cuts the link between `a` and `b` in both directions (dropping what was held on it).
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut hub = self.hub();
        hub.held.retain(|(f, t, _)| link(*f, *t) != link(a, b));
        if hub.cut.insert(link(a, b)) {
            notify(&hub, a, TransportEvent::Disconnected(b));
            notify(&hub, b, TransportEvent::Disconnected(a));
        }
    }

    /// Heals the link between `a` and `b`.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut hub = self.hub();
        if hub.cut.remove(&link(a, b)) {
            notify(&hub, a, TransportEvent::Connected(b));
            notify(&hub, b, TransportEvent::Connected(a));
        }
    }

    /// Cuts every link of `pid`.
    pub fn isolate(&self, pid: NodeId) {
        let peers: Vec<NodeId> = self.hub().inboxes.keys().copied().collect();
        for peer in peers.into_iter().filter(|p| *p != pid) {
            self.cut(pid, peer);
        }
    }

    /// Heals every cut link.
    pub fn heal_all(&self) {
        let cut: Vec<_> = self.hub().cut.iter().copied().collect();
        for (a, b) in cut {
            self.heal(a, b);
        }
    }

    /// The counters of node `pid`'s transport.
    pub fn stats(&self, pid: NodeId) -> TransportStats {
        self.hub().stats.get(&pid).cloned().unwrap_or_default()
    }
}

fn notify<T: RuntimeEntry>(hub: &Hub<T>, to: NodeId, event: TransportEvent<T>) {
    if let Some(inbox) = hub.inboxes.get(&to) {
        inbox.deliver(event);
    }
}

/// One node's end of a [`MemoryNetwork`].
pub struct MemoryTransport<T: RuntimeEntry> {
    network: MemoryNetwork<T>,
    me: Option<NodeId>,
}

impl<T: RuntimeEntry> Transport<T> for MemoryTransport<T> {
    fn start(&mut self, me: NodeId, inbox: Inbox<T>) {
        self.me = Some(me);
        let mut hub = self.network.hub();
        let peers: Vec<NodeId> = hub.inboxes.keys().copied().filter(|p| *p != me).collect();
        hub.inboxes.insert(me, inbox);
        for peer in peers {
            if !hub.cut.contains(&link(me, peer)) {
                notify(&hub, me, TransportEvent::Connected(peer));
                notify(&hub, peer, TransportEvent::Connected(me));
            }
        }
    }

    fn send(&mut self, to: NodeId, messages: &mut Vec<WireMessage<T>>) {
        let Some(me) = self.me else {
            messages.clear();
            return;
        };
        let mut hub = self.network.hub();
        let up = !hub.cut.contains(&link(me, to)) && hub.inboxes.contains_key(&to);
        let mut delivered = Vec::with_capacity(messages.len());
        let mut dropped = 0;
        let paused = hub.paused.contains(&(me, to));
        for msg in messages.drain(..) {
            let kind = msg.kind();
            if up && paused {
                hub.held.push((me, to, msg));
                continue;
            }
            let arrived = up && hub.inboxes[&to].deliver(TransportEvent::Message { from: me, msg });
            if arrived {
                delivered.push(kind);
            } else {
                dropped += 1;
            }
        }
        let stats = hub.stats.entry(me).or_default();
        stats.dropped += dropped;
        stats.writes += 1;
        for kind in &delivered {
            count(stats, to, kind, true, 0);
        }
        let stats = hub.stats.entry(to).or_default();
        for kind in delivered {
            count(stats, me, kind, false, 0);
        }
    }

    fn is_connected(&self, to: NodeId) -> bool {
        let Some(me) = self.me else { return false };
        let hub = self.network.hub();
        !hub.cut.contains(&link(me, to)) && hub.inboxes.contains_key(&to)
    }

    fn add_peer(&mut self, _pid: NodeId, _address: Option<String>) {}

    fn stats(&self) -> TransportStats {
        self.me.map(|me| self.network.stats(me)).unwrap_or_default()
    }

    async fn shutdown(&mut self) {
        if let Some(me) = self.me.take() {
            let mut hub = self.network.hub();
            hub.inboxes.remove(&me);
            let peers: Vec<NodeId> = hub.inboxes.keys().copied().collect();
            for peer in peers {
                notify(&hub, peer, TransportEvent::Disconnected(me));
            }
        }
    }
}
