//! Moving a running node to the next configuration, so that users do not have to.
//!
//! When the current configuration's StopSign is decided, the node keeps the `Handover` (to
//! serve nodes that join), and if it belongs to the next configuration it opens that
//! configuration's storage through the [`StorageFactory`] and starts its instance with the same
//! server settings (and the same `set_remote_compaction` choice). If that storage cannot be
//! opened, the node stays in the ended configuration, reports `StorageFailed` and tries again
//! every second: retiring would end its part in the cluster for good. The ended instance keeps running, sealed, for nodes that have not learnt
//! the StopSign yet; messages carry their configuration's id, so each reaches its instance. A
//! node that is not part of the next configuration retires: appends fail with the core's
//! `PendingReconfigEntry`. Appends refused because the log was sealed are proposed again in
//! the next configuration, by the runtime.
//!
//! On a restart, the node replays: as long as the instance it opened has a decided StopSign
//! naming it, it opens the next one. A node that joins fetches the handover from the nodes of
//! the ended configuration (`WireMessage::HandoverRequest`), saves it through the factory (so
//! that it can restart alone), and streams it to `subscribe_decided` subscribers before the
//! new configuration's own log.

use super::Actor;
use crate::status::OmniPaxosEvent;
use crate::transport::Transport;
use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use omnipaxos::messages::Message;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;
use omnipaxos::OmniPaxos;
use std::time::{Duration, Instant};

/// Opens the storage of each configuration a node runs, and keeps the handover it joined with.
pub trait StorageFactory<T: RuntimeEntry, B: Storage<T>>: Send + 'static {
    /// Opens (creating it if needed) the storage of configuration `config_id`. The same id must
    /// give the same store across restarts.
    fn open(&mut self, config_id: u32) -> Result<B, String>;

    /// Keeps `handover`, the state of configuration `config_id` that this node joined after.
    /// A durable factory writes it to disk; the default keeps nothing.
    fn save_handover(&mut self, config_id: u32, handover: &Handover<T>) -> Result<(), String> {
        let _ = (config_id, handover);
        Ok(())
    }

    /// The handover saved before, if any.
    fn load_handover(&mut self) -> Result<Option<(u32, Handover<T>)>, String> {
        Ok(None)
    }
}

/// A closure that opens a configuration's storage is a factory that keeps no handover (enough
/// for in-memory storage, where a restart starts over anyway).
impl<T, B, F> StorageFactory<T, B> for F
where
    T: RuntimeEntry,
    B: Storage<T>,
    F: FnMut(u32) -> Result<B, String> + Send + 'static,
{
    fn open(&mut self, config_id: u32) -> Result<B, String> {
        self(config_id)
    }
}

/// How often a node whose next configuration's storage failed to open tries again.
const OPEN_RETRY_EVERY: Duration = Duration::from_secs(1);

/// How often a joining node asks for the handover.
const ASK_HANDOVER_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct Join<T: RuntimeEntry> {
    /// Nodes of the ended configuration to ask.
    pub(crate) from: Vec<NodeId>,
    pub(crate) got: Option<(u32, Handover<T>)>,
    last_ask: Option<Instant>,
}

pub(crate) struct Reconfiguration<T: RuntimeEntry, B: Storage<T>> {
    factory: Option<Box<dyn StorageFactory<T, B>>>,
    /// The ended configuration's instance, sealed and still running for laggards.
    pub(crate) previous: Option<OmniPaxos<T, B>>,
    /// Configurations that ended before `previous`, oldest first, kept (idle) so that a
    /// subscriber from index 0 reads the node's whole history, also after a restart replayed it.
    pub(crate) older: Vec<OmniPaxos<T, B>>,
    /// The ended configuration's id and handover, served to joiners.
    pub(crate) handover: Option<(u32, Handover<T>)>,
    pub(crate) join: Option<Join<T>>,
    pub(crate) retired: bool,
    /// The next configuration's storage could not be opened: when to try again. The node stays
    /// in the ended configuration meanwhile (sealed: appends are refused), never retires for it.
    open_retry_at: Option<Instant>,
    outgoing: Vec<Message<T>>,
}

impl<T: RuntimeEntry, B: Storage<T>> Reconfiguration<T, B> {
    /// A node that stays in its configuration (no factory).
    pub(crate) fn fixed() -> Self {
        Self {
            factory: None,
            previous: None,
            older: Vec::new(),
            handover: None,
            join: None,
            retired: false,
            open_retry_at: None,
            outgoing: Vec::new(),
        }
    }

    /// A node that follows reconfigurations, joining after the configuration whose nodes are
    /// `join_from` if that is not empty.
    pub(crate) fn with(factory: Box<dyn StorageFactory<T, B>>, join_from: Vec<NodeId>) -> Self {
        let join = (!join_from.is_empty()).then_some(Join {
            from: join_from,
            got: None,
            last_ask: None,
        });
        Self {
            factory: Some(factory),
            join,
            ..Self::fixed()
        }
    }

    /// Whether the runtime can move to a next configuration.
    pub(crate) fn follows(&self) -> bool {
        self.factory.is_some()
    }
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// At start: load a saved handover, then replay configurations that ended before.
    pub(crate) fn reconf_start(&mut self) {
        if let (Some(join), Some(factory)) = (&mut self.reconf.join, &mut self.reconf.factory) {
            match factory.load_handover() {
                Ok(saved) => join.got = saved,
                Err(e) => tracing::warn!(pid = self.me, "cannot load the saved handover: {e}"),
            }
        }
        self.reconf_check();
    }

    pub(crate) fn reconf_tick(&mut self) {
        if let Some(previous) = &mut self.reconf.previous {
            previous.tick();
        }
        let Some(join) = &mut self.reconf.join else {
            return;
        };
        if join.got.is_some()
            || join
                .last_ask
                .is_some_and(|t| t.elapsed() < ASK_HANDOVER_EVERY)
        {
            return;
        }
        join.last_ask = Some(Instant::now());
        let next_config_id = self.op.get_config().cluster_config.configuration_id;
        for pid in join.from.clone() {
            self.outbox
                .entry(pid)
                .or_default()
                .push(WireMessage::HandoverRequest { next_config_id });
        }
    }

    pub(crate) fn reconf_reconnected(&mut self, pid: NodeId) {
        if let Some(previous) = &mut self.reconf.previous {
            previous.reconnected(pid);
        }
    }

    /// A protocol message for another configuration than the current one.
    pub(crate) fn reconf_message(&mut self, config_id: u32, msg: Message<T>) {
        match &mut self.reconf.previous {
            Some(previous)
                if previous.get_config().cluster_config.configuration_id == config_id =>
            {
                previous.handle_incoming(msg)
            }
            // A newer configuration this node has not reached yet (it will, once its own
            // instance learns the StopSign), or an old one: the sender resends.
            _ => tracing::debug!(
                pid = self.me,
                config_id,
                "dropped a message of another configuration"
            ),
        }
    }

    pub(crate) fn reconf_outgoing(&mut self) {
        let Some(previous) = &mut self.reconf.previous else {
            return;
        };
        let config_id = previous.get_config().cluster_config.configuration_id;
        previous.take_outgoing_messages(&mut self.reconf.outgoing);
        for msg in self.reconf.outgoing.drain(..) {
            self.outbox
                .entry(msg.get_receiver())
                .or_default()
                .push(WireMessage::Protocol { config_id, msg });
        }
    }

    /// Moves on if the current configuration ended (repeatedly, when replaying).
    pub(crate) fn reconf_check(&mut self) {
        while !self.reconf.retired
            && self.reconf.handover.as_ref().map(|(id, _)| *id) != Some(self.config_id())
        {
            let Some(ss) = self.op.is_reconfigured() else {
                return;
            };
            if self
                .reconf
                .open_retry_at
                .is_some_and(|at| Instant::now() < at)
            {
                return;
            }
            let ended = self.config_id();
            let stop_sign_idx = self.op.get_decided_idx().saturating_sub(1);
            self.reconf.handover = self.op.handover().map(|h| (ended, h));
            let joined = ss.next_config.nodes.contains(&self.me) && self.reconf.follows();
            if self.reconf.open_retry_at.is_none() {
                let _ = self
                    .outputs
                    .events
                    .send(OmniPaxosEvent::Reconfigured { stop_sign_idx });
            }
            if !joined {
                tracing::info!(
                    pid = self.me,
                    ended,
                    "configuration ended; this node retires"
                );
                self.reconf.retired = true;
                self.fail_waiting_retired();
                return;
            }
            let next = match self.open_next(&ss.next_config) {
                Ok(next) => next,
                Err(e) => {
                    // Retiring here would end this node's part in the cluster for good (the
                    // decided StopSign replays at every restart): stay, say so, try again.
                    if self.reconf.open_retry_at.is_none() {
                        tracing::error!(
                            pid = self.me,
                            "cannot start configuration {} (staying in {ended}, retrying every {:?}): {e}",
                            ss.next_config.configuration_id,
                            OPEN_RETRY_EVERY
                        );
                        let _ = self
                            .outputs
                            .events
                            .send(OmniPaxosEvent::StorageFailed { error: e });
                    }
                    self.reconf.open_retry_at = Some(Instant::now() + OPEN_RETRY_EVERY);
                    return;
                }
            };
            self.reconf.open_retry_at = None;
            tracing::info!(
                pid = self.me,
                ended,
                next = ss.next_config.configuration_id,
                "moved to the next configuration"
            );
            let ended_instance = std::mem::replace(&mut self.op, next);
            if let Some(older) = self.reconf.previous.replace(ended_instance) {
                self.reconf.older.push(older);
            }
            self.reads_restart();
        }
    }

    fn open_next(&mut self, next: &omnipaxos::ClusterConfig) -> Result<OmniPaxos<T, B>, String> {
        let factory = self.reconf.factory.as_mut().ok_or("no storage factory")?;
        let storage = factory.open(next.configuration_id)?;
        let server = self.op.get_config().server_config.clone();
        let mut op = next
            .clone()
            .build_for_server(server, storage)
            .map_err(|e| e.to_string())?;
        // The application's choice holds in every configuration.
        op.set_remote_compaction(self.op.get_remote_compaction());
        Ok(op)
    }

    /// A joiner asks for the handover of the configuration before `next_config_id`.
    pub(crate) fn serve_handover(&mut self, from: NodeId, next_config_id: u32) {
        if let Some((config_id, handover)) = &self.reconf.handover {
            if handover.next_config().configuration_id == next_config_id {
                let msg = WireMessage::Handover {
                    config_id: *config_id,
                    handover: Box::new(handover.clone()),
                };
                self.outbox.entry(from).or_default().push(msg);
            }
        }
    }

    pub(crate) fn on_handover(&mut self, config_id: u32, handover: Handover<T>) {
        let current = self.config_id();
        let Some(join) = &mut self.reconf.join else {
            return;
        };
        if join.got.is_some() || handover.next_config().configuration_id != current {
            return;
        }
        if let Some(factory) = &mut self.reconf.factory {
            if let Err(e) = factory.save_handover(config_id, &handover) {
                tracing::warn!(pid = self.me, "cannot save the handover: {e}");
                return;
            }
        }
        tracing::info!(
            pid = self.me,
            config_id,
            entries = handover.entries.len(),
            "joined with the handover"
        );
        join.got = Some((config_id, handover));
    }
}
