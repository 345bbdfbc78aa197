//! The faults a test injects into a [`Simulation`]: crashes and restarts, link cuts and
//! partitions, and messages held back, copied or injected by hand.

use super::Simulation;
use crate::errors::ConfigError;
use crate::ids::NodeId;
use crate::messages::Message;
use crate::storage::{Entry, Storage};
use std::hash::Hash;

/// Which messages a test's rule applies to.
pub(super) type MessageFilter<T> = Box<dyn Fn(&Message<T>) -> bool>;

/// A test's rule for the next messages that match it.
pub(super) struct Intercept<T: Entry> {
    remaining: usize,
    matches: MessageFilter<T>,
    /// Whether the message also goes on to the network (a copy is held either way).
    deliver: bool,
}

impl<T: Entry + Eq + Hash, B: Storage<T>> Simulation<T, B> {
    /// Holds back the next `count` messages for which `matches` is true: they do not reach the
    /// network, and [`Simulation::take_held`] hands them to the test, to drop or to
    /// [`inject`](Simulation::inject) later (a message lost, or delayed without bound).
    pub fn hold(&mut self, count: usize, matches: impl Fn(&Message<T>) -> bool + 'static) {
        self.intercepts.push(Intercept {
            remaining: count,
            matches: Box::new(matches),
            deliver: false,
        });
    }

    /// Keeps a copy of the next `count` messages for which `matches` is true and sends them on
    /// as usual; [`Simulation::take_held`] returns the copies, to inject as late duplicates.
    pub fn copy(&mut self, count: usize, matches: impl Fn(&Message<T>) -> bool + 'static) {
        self.intercepts.push(Intercept {
            remaining: count,
            matches: Box::new(matches),
            deliver: true,
        });
    }

    /// Drops every rule set by [`Simulation::hold`] and [`Simulation::copy`].
    pub fn stop_intercepting(&mut self) {
        self.intercepts.clear();
    }

    /// The messages held back or copied so far, oldest first.
    pub fn take_held(&mut self) -> Vec<Message<T>> {
        std::mem::take(&mut self.held)
    }

    /// `Some(deliver)` if a rule takes `msg` (and counts it).
    pub(super) fn intercept(&mut self, msg: &Message<T>) -> Option<bool> {
        let rule = self
            .intercepts
            .iter_mut()
            .find(|r| r.remaining > 0 && (r.matches)(msg))?;
        rule.remaining -= 1;
        let deliver = rule.deliver;
        self.intercepts.retain(|r| r.remaining > 0);
        Some(deliver)
    }

    /// Hands `msg` to its receiver directly, as if it came from the network (for bad-input
    /// tests). Dropped if the receiver is not live.
    pub fn inject(&mut self, msg: Message<T>) {
        self.record(format!("inject {msg}"));
        if let Some(Some(server)) = self.servers.get_mut(&msg.get_receiver()) {
            server.handle_incoming(msg);
        }
    }

    /// Crashes server `pid`: its in-memory state is lost, its storage is kept. Messages in
    /// flight to or from it are lost too, unless the network lets them survive crashes
    /// ([`NetworkConfig::in_flight_survives_crash`]): then they may reach it after a restart.
    pub fn crash(&mut self, pid: NodeId) {
        if let Some(slot) = self.servers.get_mut(&pid) {
            *slot = None;
            self.forget_reads_of(pid);
            self.network.crashed(pid);
            self.record(format!("crash {pid}"));
        }
    }

    /// Restarts server `pid` from its storage and tells the others it reconnected.
    pub fn restart(&mut self, pid: NodeId) -> Result<(), ConfigError> {
        if !self.storages.contains_key(&pid) {
            return Ok(());
        }
        let server = self.build(pid)?;
        self.servers.insert(pid, Some(server));
        self.record(format!("restart {pid}"));
        self.notify_reconnected(pid);
        Ok(())
    }

    fn notify_reconnected(&mut self, pid: NodeId) {
        for (other, server) in self.servers.iter_mut() {
            if *other != pid {
                if let Some(server) = server {
                    server.reconnected(pid);
                }
            }
        }
    }

    /// Cuts the link from `from` to `to` (one direction).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.network.cut(from, to);
        self.record(format!("cut {from}->{to}"));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn disconnect(&mut self, a: NodeId, b: NodeId) {
        self.cut_link(a, b);
        self.cut_link(b, a);
    }

    /// Cuts every link between servers in different groups.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for (i, g) in groups.iter().enumerate() {
            for h in groups.iter().skip(i + 1) {
                for &a in g.iter() {
                    for &b in h.iter() {
                        self.disconnect(a, b);
                    }
                }
            }
        }
    }

    /// Isolates `pid` from everyone.
    pub fn isolate(&mut self, pid: NodeId) {
        for other in self.pids() {
            if other != pid {
                self.disconnect(pid, other);
            }
        }
    }

    /// Restores the link from `from` to `to`, and tells both ends they reconnected.
    pub fn heal_link(&mut self, from: NodeId, to: NodeId) {
        self.network.heal(from, to);
        self.record(format!("heal {from}->{to}"));
        for (a, b) in [(from, to), (to, from)] {
            if let Some(Some(server)) = self.servers.get_mut(&a) {
                server.reconnected(b);
            }
        }
    }

    /// Restores every link, and tells every live server its peers reconnected.
    pub fn heal_all(&mut self) {
        self.network.heal_all();
        self.record("heal all".to_string());
        let pids = self.pids();
        for pid in pids {
            self.notify_reconnected(pid);
        }
    }

    /// Drops every message in flight.
    pub fn drop_in_flight(&mut self) {
        self.network.clear();
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.network.in_flight_len()
    }
}
