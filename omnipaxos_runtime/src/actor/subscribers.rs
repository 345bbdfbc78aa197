//! The node's side of `subscribe_decided`: the engine's [`Cursor`] (where every rule lives) fed
//! from the node's instances (current, ended, the handover it joined with) into each
//! subscriber's channel.

use super::Actor;
use crate::engine::subscribers::{Cursor, DecidedEntry, EntryReadFailed, History, Log, Sink};
use crate::transport::Transport;
use crate::wire::RuntimeEntry;
use omnipaxos::storage::Storage;
use omnipaxos::util::LogEntry;
use omnipaxos::OmniPaxos;
use tokio::sync::mpsc;

/// A subscriber: its channel and its cursor.
pub(crate) struct Subscriber<T: RuntimeEntry> {
    tx: mpsc::Sender<DecidedEntry<T>>,
    cursor: Cursor,
}

impl<T: RuntimeEntry> Sink<T> for mpsc::Sender<DecidedEntry<T>> {
    fn is_closed(&self) -> bool {
        mpsc::Sender::is_closed(self)
    }
    fn room(&self) -> usize {
        self.capacity()
    }
    fn offer(&mut self, entry: DecidedEntry<T>) -> bool {
        self.try_send(entry).is_ok()
    }
}

/// The node's logs, as the engine's [`History`].
struct NodeHistory<'a, T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>>(
    &'a Actor<T, B, Tr>,
);

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> NodeHistory<'_, T, B, Tr> {
    /// The configurations this node holds a log of, oldest first.
    fn ids(&self) -> Vec<u32> {
        let actor = self.0;
        let ended = actor.reconf.ended_instances();
        actor
            .reconf
            .chain
            .joined_with()
            .into_iter()
            .chain(ended.map(config_of))
            .chain([actor.config_id()])
            .collect()
    }

    /// The instance of configuration `config_id`, and whether it ended.
    fn instance(&self, config_id: u32) -> Option<(&OmniPaxos<T, B>, bool)> {
        let actor = self.0;
        if config_id == actor.config_id() {
            return Some((&actor.op, false));
        }
        actor
            .reconf
            .ended_instances()
            .find(|op| config_of(op) == config_id)
            .map(|op| (op, true))
    }
}

fn config_of<T: RuntimeEntry, B: Storage<T>>(op: &OmniPaxos<T, B>) -> u32 {
    op.get_config().cluster_config.configuration_id
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> History<T>
    for NodeHistory<'_, T, B, Tr>
{
    fn current(&self) -> u32 {
        self.0.config_id()
    }
    fn awaits_handover(&self) -> bool {
        self.0.reconf.chain.awaits_handover()
    }
    fn first(&self) -> u32 {
        self.ids()
            .first()
            .copied()
            .unwrap_or_else(|| self.current())
    }
    fn log(&self, config_id: u32) -> Option<Log<'_, T>> {
        if let Some((op, ended)) = self.instance(config_id) {
            return Some(Log::Instance {
                decided: op.get_decided_idx(),
                compacted: op.get_compacted_idx(),
                ended,
            });
        }
        self.0
            .reconf
            .chain
            .handover_joined(config_id)
            .map(Log::Handover)
    }
    fn read(&self, config_id: u32, from: usize, to: usize) -> Option<Vec<LogEntry<T>>> {
        self.instance(config_id)?.0.read_entries(from..to)
    }
    fn after(&self, config_id: u32) -> u32 {
        let ids = self.ids();
        ids.iter()
            .position(|id| *id == config_id)
            .and_then(|at| ids.get(at + 1).copied())
            .unwrap_or_else(|| self.current())
    }
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// A subscriber from index `from` of the current configuration, or, from 0, from the start
    /// of the node's history.
    pub(crate) fn new_subscriber(
        &self,
        tx: mpsc::Sender<DecidedEntry<T>>,
        from: usize,
    ) -> Subscriber<T> {
        Subscriber {
            tx,
            cursor: Cursor::new(&NodeHistory(self), from),
        }
    }

    /// Feeds every subscriber what was decided past its cursor, as far as its buffer allows;
    /// drops those that are gone. `Err`: storage failed to give back decided entries.
    pub(crate) fn feed_subscribers(&mut self) -> Result<(), EntryReadFailed> {
        if self.subscribers.is_empty() {
            return Ok(());
        }
        let mut subscribers = std::mem::take(&mut self.subscribers);
        let history = NodeHistory(self);
        let mut failed = Ok(());
        subscribers.retain_mut(|s| match s.cursor.feed(&history, &mut s.tx) {
            Ok(keep) => keep,
            Err(e) => {
                failed = Err(e);
                true
            }
        });
        self.subscribers = subscribers;
        failed
    }
}
