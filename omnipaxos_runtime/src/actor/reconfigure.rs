//! The node's side of reconfiguration: the engine's [`Reconfigurer`] (where the rules live)
//! with the instances and the storage factory it decides about. When the current
//! configuration's StopSign is decided and the node is in the next configuration, it opens that
//! configuration's storage through the [`StorageFactory`] and starts its instance with the same
//! server settings (and the same `set_remote_compaction` choice). The ended instance keeps
//! running, sealed, for nodes that have not learnt the StopSign yet; messages carry their
//! configuration's id, so each reaches its instance. A node that is not part of the next
//! configuration retires: appends fail with the core's `PendingReconfigEntry`. Appends refused
//! because the log was sealed are proposed again in the next configuration, by the runtime.
//!
//! On a restart, the node replays: as long as the instance it opened has a decided StopSign
//! naming it, it opens the next one. A node that joins fetches the handover from the nodes of
//! the ended configuration (`WireMessage::HandoverRequest`), saves it through the factory (so
//! that it can restart alone), and streams it to `subscribe_decided` subscribers before the
//! new configuration's own log.

use super::Actor;
use crate::engine::ended::EndedConfigs;
use crate::engine::reconfigure::{move_on, next_instance, Reconfigurer};
use crate::transport::Transport;
use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use omnipaxos::messages::Message;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;

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

/// The node's configurations: the engine's decisions, the factory and the instances.
pub(crate) struct Reconfiguration<T: RuntimeEntry, B: Storage<T>> {
    pub(crate) chain: Reconfigurer<T>,
    factory: Option<Box<dyn StorageFactory<T, B>>>,
    /// Nodes of the ended configuration a joiner asks for its handover.
    join_from: Vec<NodeId>,
    /// The configurations the node ended, running for laggards and kept for subscribers (from
    /// index 0, a subscriber reads the node's whole history, also after a restart replayed it).
    pub(crate) ended: EndedConfigs<T, B>,
    outgoing: Vec<(u32, Message<T>)>,
}

impl<T: RuntimeEntry, B: Storage<T>> Reconfiguration<T, B> {
    /// Node `me`, staying in its configuration (no factory).
    pub(crate) fn fixed(me: NodeId) -> Self {
        Self {
            chain: Reconfigurer::fixed(),
            factory: None,
            join_from: Vec::new(),
            ended: EndedConfigs::new(me),
            outgoing: Vec::new(),
        }
    }

    /// Node `me`, following reconfigurations, joining after the configuration whose nodes are
    /// `join_from` if that is not empty.
    pub(crate) fn with(
        me: NodeId,
        factory: Box<dyn StorageFactory<T, B>>,
        join_from: Vec<NodeId>,
    ) -> Self {
        Self {
            factory: Some(factory),
            join_from,
            ..Self::fixed(me)
        }
    }
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// At start: load a saved handover, then replay configurations that ended before.
    pub(crate) fn reconf_start(&mut self) {
        if let Some(factory) = &mut self.reconf.factory {
            let join_from = std::mem::take(&mut self.reconf.join_from);
            let saved = match join_from.is_empty() {
                true => None,
                false => factory.load_handover().unwrap_or_else(|e| {
                    tracing::warn!(pid = self.me, "cannot load the saved handover: {e}");
                    None
                }),
            };
            self.reconf.chain = Reconfigurer::following(join_from, saved);
        }
        self.reconf_check();
    }

    pub(crate) fn reconf_tick(&mut self) {
        self.reconf.ended.tick();
        let (now, current) = (self.now_micros(), self.config_id());
        self.reconf.chain.tick(now, current);
        self.reconf_effects();
    }

    pub(crate) fn reconf_reconnected(&mut self, pid: NodeId) {
        self.reconf.ended.reconnected(pid);
    }

    /// A protocol message for another configuration than the current one.
    pub(crate) fn reconf_message(&mut self, config_id: u32, msg: Message<T>) {
        if !self.reconf.ended.handle(config_id, msg) {
            // A newer configuration this node has not reached yet (it will, once its own
            // instance learns the StopSign), or one nobody needs any more: the sender resends.
            tracing::debug!(
                pid = self.me,
                config_id,
                "dropped a message of another configuration"
            );
        }
    }

    /// Queues the ended instances' messages and the engine's.
    pub(crate) fn reconf_outgoing(&mut self) {
        self.reconf.ended.take_outgoing(&mut self.reconf.outgoing);
        for (config_id, msg) in self.reconf.outgoing.drain(..) {
            self.outbox
                .entry(msg.get_receiver())
                .or_default()
                .push(WireMessage::Protocol { config_id, msg });
        }
        self.reconf_effects();
    }

    /// Carries out the engine's effects: events to the application, messages to the outbox.
    fn reconf_effects(&mut self) {
        for event in self.reconf.chain.take_events() {
            let _ = self.outputs.events.send(event);
        }
        for (to, msg) in self.reconf.chain.take_outgoing() {
            self.outbox.entry(to).or_default().push(msg);
        }
    }

    /// Moves on if the current configuration ended (repeatedly, when replaying).
    pub(crate) fn reconf_check(&mut self) {
        let now = self.now_micros();
        let Reconfiguration {
            chain,
            factory,
            ended,
            ..
        } = &mut self.reconf;
        let done = move_on(
            chain,
            self.me,
            now,
            &mut self.op,
            |next, ended| {
                let factory = factory.as_mut().ok_or("no storage factory")?;
                next_instance(next, ended, factory.open(next.configuration_id)?)
            },
            |op| ended.push(op),
        );
        if done.moved > 0 {
            self.reads_restart();
        }
        if done.retired {
            self.fail_waiting_retired();
        }
        self.reconf_effects();
    }

    /// A joiner asks for the handover of the configuration before `next_config_id`.
    pub(crate) fn serve_handover(&mut self, from: NodeId, next_config_id: u32) {
        self.reconf.chain.serve(from, next_config_id);
        self.reconf_effects();
    }

    pub(crate) fn on_handover(&mut self, config_id: u32, handover: Handover<T>) {
        if !self.reconf.chain.wants(self.config_id(), &handover) {
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
        self.reconf.chain.joined(config_id, handover);
    }
}
