//! The node's side of `subscribe_decided`: the engine's [`Cursor`] (where every rule lives) fed
//! from the node's instances (current, ended, the handover it joined with) into each
//! subscriber's channel.

use super::Actor;
use crate::engine::subscribers::{Cursor, DecidedEntry, EntryReadFailed, NodeLogs, Sink};
use crate::transport::Transport;
use crate::wire::RuntimeEntry;
use omnipaxos::storage::Storage;
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

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// The node's logs, as the engine's feed reads them.
    fn logs(&self) -> NodeLogs<'_, T, B> {
        let chain = &self.reconf.chain;
        NodeLogs {
            current: &self.op,
            ended: self.reconf.ended.iter().collect(),
            joined: chain.joined_handover(),
            awaits_handover: chain.awaits_handover(),
        }
    }

    /// A subscriber from index `from` of the current configuration, or, from 0, from the start
    /// of the node's history.
    pub(crate) fn new_subscriber(
        &self,
        tx: mpsc::Sender<DecidedEntry<T>>,
        from: usize,
    ) -> Subscriber<T> {
        Subscriber {
            tx,
            cursor: Cursor::new(&self.logs(), from),
        }
    }

    /// Feeds every subscriber what was decided past its cursor, as far as its buffer allows;
    /// drops those that are gone. `Err`: storage failed to give back decided entries.
    pub(crate) fn feed_subscribers(&mut self) -> Result<(), EntryReadFailed> {
        if self.subscribers.is_empty() {
            return Ok(());
        }
        let mut subscribers = std::mem::take(&mut self.subscribers);
        let history = self.logs();
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
