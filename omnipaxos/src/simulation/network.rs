//! The simulated network: messages in flight with a delivery time, random loss, duplication
//! and delay (which reorders, unless links keep order), and links that can be cut in one
//! direction. Generic over the message, so that a layer above the core (the runtime's nodes)
//! runs on the same network.

use super::rng::SimRng;
use crate::ids::NodeId;
use crate::messages::Message;
use crate::storage::Entry;
use std::collections::{BTreeMap, BTreeSet};

/// A message the network can route: it names its sender and its receiver.
pub trait Routed: Clone {
    /// The server that sent it.
    fn sender(&self) -> NodeId;
    /// The server it is for.
    fn receiver(&self) -> NodeId;
}

impl<T: Entry> Routed for Message<T> {
    fn sender(&self) -> NodeId {
        self.get_sender()
    }
    fn receiver(&self) -> NodeId {
        self.get_receiver()
    }
}

/// How the network misbehaves. Delays are in ticks; a delay of 0 delivers within the same step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
    /// Smallest delivery delay, in ticks.
    pub min_delay: u64,
    /// Largest delivery delay, in ticks. Random delays reorder messages.
    pub max_delay: u64,
    /// Probability that a message is also delivered once more, much later (between
    /// `max_delay` and `max_late_delay` ticks): a copy stuck in a queue or a retransmission.
    /// Such copies outlive crashes and restarts of their sender and receiver.
    pub late_duplicate_rate: f64,
    /// Largest delay of a late copy, in ticks.
    pub max_late_delay: u64,
    /// Whether messages in flight survive a crash of their sender or receiver: those due while
    /// the receiver is down are lost, the others are delivered, to the restarted receiver too.
    /// With `false` a crash loses everything in flight to or from the server.
    pub in_flight_survives_crash: bool,
    /// Whether each link delivers in the order it was sent (a TCP connection): random delays
    /// then never let a message overtake an earlier one on the same link.
    pub in_order_links: bool,
}

impl NetworkConfig {
    /// No loss, no duplication, delivery within the step; a crash loses what is in flight to or
    /// from the crashed server.
    pub fn reliable() -> Self {
        Self {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            min_delay: 0,
            max_delay: 0,
            late_duplicate_rate: 0.0,
            max_late_delay: 0,
            in_flight_survives_crash: false,
            in_order_links: false,
        }
    }

    /// Loss, duplication and reordering at the given rates, delays up to `max_delay` ticks;
    /// messages in flight survive crashes.
    pub fn lossy(drop_rate: f64, duplicate_rate: f64, max_delay: u64) -> Self {
        Self {
            drop_rate,
            duplicate_rate,
            min_delay: 0,
            max_delay,
            late_duplicate_rate: 0.0,
            max_late_delay: 0,
            in_flight_survives_crash: true,
            in_order_links: false,
        }
    }

    /// Also delivers a fraction `rate` of the messages once more, up to `max_late_delay` ticks
    /// later (across crashes and restarts).
    pub fn with_late_duplicates(self, rate: f64, max_late_delay: u64) -> Self {
        Self {
            late_duplicate_rate: rate,
            max_late_delay,
            ..self
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self::reliable()
    }
}

struct InFlight<M> {
    deliver_at: u64,
    /// The order it was sent in, network-wide.
    seq: u64,
    msg: M,
}

/// Messages in flight between servers, with the faults of a [`NetworkConfig`] and cut links.
pub struct Network<M: Routed> {
    /// How it misbehaves; may be changed between steps.
    pub config: NetworkConfig,
    in_flight: Vec<InFlight<M>>,
    /// Directed links `(from, to)` that lose every message.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// The latest delivery time given on each link (for `in_order_links`).
    last_on_link: BTreeMap<(NodeId, NodeId), u64>,
    sent: u64,
}

impl<M: Routed> Network<M> {
    /// An empty network.
    pub fn new(config: NetworkConfig) -> Self {
        Self {
            config,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            last_on_link: BTreeMap::new(),
            sent: 0,
        }
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts the link from `from` to `to`: what is sent on it, or due on it while it is cut, is
    /// lost.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores the link from `from` to `to`.
    pub fn heal(&mut self, from: NodeId, to: NodeId) {
        self.cut.remove(&(from, to));
    }

    /// Restores every link.
    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Queues `msg`, applying loss, duplication and delay.
    pub fn send(&mut self, msg: M, now: u64, rng: &mut SimRng) {
        if self.is_cut(msg.sender(), msg.receiver()) || rng.chance(self.config.drop_rate) {
            return;
        }
        let (lo, hi) = (self.config.min_delay, self.config.max_delay);
        if rng.chance(self.config.duplicate_rate) {
            let deliver_at = now + rng.range(lo, hi);
            self.queue(deliver_at, msg.clone());
        }
        if rng.chance(self.config.late_duplicate_rate) {
            let late_hi = self.config.max_late_delay.max(hi + 1);
            let deliver_at = now + rng.range(hi + 1, late_hi);
            self.queue(deliver_at, msg.clone());
        }
        let mut deliver_at = now + rng.range(lo, hi);
        if self.config.in_order_links {
            let last = self
                .last_on_link
                .entry((msg.sender(), msg.receiver()))
                .or_default();
            deliver_at = deliver_at.max(*last);
            *last = deliver_at;
        }
        self.queue(deliver_at, msg);
    }

    fn queue(&mut self, deliver_at: u64, msg: M) {
        self.sent += 1;
        self.in_flight.push(InFlight {
            deliver_at,
            seq: self.sent,
            msg,
        });
    }

    /// Removes and returns the messages due at `now`, in random order (in sending order on each
    /// link with `in_order_links`). A link cut while a message was in flight loses it.
    pub fn take_due(&mut self, now: u64, rng: &mut SimRng) -> Vec<M> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].deliver_at <= now {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.retain(|m| !self.is_cut(m.msg.sender(), m.msg.receiver()));
        if self.config.in_order_links {
            // Delays already mixed the links; within a link, the order they were sent in.
            due.sort_by_key(|m| m.seq);
        } else {
            rng.shuffle(&mut due);
        }
        due.into_iter().map(|m| m.msg).collect()
    }

    /// A crash of `pid`: unless messages survive crashes, drops those to or from it (its
    /// connections died with it).
    pub fn crashed(&mut self, pid: NodeId) {
        if !self.config.in_flight_survives_crash {
            self.drop_involving(pid);
        }
    }

    /// Drops the messages to or from `pid`.
    pub fn drop_involving(&mut self, pid: NodeId) {
        self.in_flight
            .retain(|m| m.msg.sender() != pid && m.msg.receiver() != pid);
    }

    /// Drops the messages in flight from `from` to `to` (a connection that broke).
    pub fn drop_link(&mut self, from: NodeId, to: NodeId) {
        self.in_flight
            .retain(|m| (m.msg.sender(), m.msg.receiver()) != (from, to));
    }

    /// How many messages are in flight.
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// Drops every message in flight.
    pub fn clear(&mut self) {
        self.in_flight.clear();
    }
}
