//! The simulated network: messages in flight with a delivery time, random loss, duplication
//! and delay (which reorders), and links that can be cut in one direction.

use super::rng::SimRng;
use crate::ids::NodeId;
use crate::messages::Message;
use crate::storage::Entry;
use std::collections::BTreeSet;

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

pub(crate) struct InFlight<T: Entry> {
    pub(crate) deliver_at: u64,
    pub(crate) msg: Message<T>,
}

pub(crate) struct Network<T: Entry> {
    pub(crate) config: NetworkConfig,
    in_flight: Vec<InFlight<T>>,
    /// Directed links `(from, to)` that lose every message.
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl<T: Entry> Network<T> {
    pub(crate) fn new(config: NetworkConfig) -> Self {
        Self {
            config,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
        }
    }

    pub(crate) fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    pub(crate) fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub(crate) fn heal(&mut self, from: NodeId, to: NodeId) {
        self.cut.remove(&(from, to));
    }

    pub(crate) fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Queues `msg`, applying loss, duplication and delay.
    pub(crate) fn send(&mut self, msg: Message<T>, now: u64, rng: &mut SimRng) {
        if self.is_cut(msg.get_sender(), msg.get_receiver()) || rng.chance(self.config.drop_rate) {
            return;
        }
        let (lo, hi) = (self.config.min_delay, self.config.max_delay);
        if rng.chance(self.config.duplicate_rate) {
            self.in_flight.push(InFlight {
                deliver_at: now + rng.range(lo, hi),
                msg: msg.clone(),
            });
        }
        if rng.chance(self.config.late_duplicate_rate) {
            let late_hi = self.config.max_late_delay.max(hi + 1);
            self.in_flight.push(InFlight {
                deliver_at: now + rng.range(hi + 1, late_hi),
                msg: msg.clone(),
            });
        }
        self.in_flight.push(InFlight {
            deliver_at: now + rng.range(lo, hi),
            msg,
        });
    }

    /// Removes and returns the messages due at `now`, in random order. A link cut while a
    /// message was in flight loses it.
    pub(crate) fn take_due(&mut self, now: u64, rng: &mut SimRng) -> Vec<Message<T>> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].deliver_at <= now {
                due.push(self.in_flight.swap_remove(i).msg);
            } else {
                i += 1;
            }
        }
        due.retain(|m| !self.is_cut(m.get_sender(), m.get_receiver()));
        rng.shuffle(&mut due);
        due
    }

    /// A crash of `pid`: unless messages survive crashes, drops those to or from it (its
    /// connections died with it).
    pub(crate) fn crashed(&mut self, pid: NodeId) {
        if !self.config.in_flight_survives_crash {
            self.drop_involving(pid);
        }
    }

    /// Drops the messages to or from `pid`.
    pub(crate) fn drop_involving(&mut self, pid: NodeId) {
        self.in_flight
            .retain(|m| m.msg.get_sender() != pid && m.msg.get_receiver() != pid);
    }

    pub(crate) fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn clear(&mut self) {
        self.in_flight.clear();
    }
}
