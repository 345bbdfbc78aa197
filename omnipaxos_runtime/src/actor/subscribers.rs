//! `subscribe_decided`: every subscriber has its own cursor and gets every decided entry from
//! where it asked, in order: first what was decided before it subscribed, then entries as they
//! are decided, and on into the next configuration after a reconfiguration (the StopSign
//! entry, then the new log from index 0). A subscriber whose buffer is full is not fed until it
//! reads: nothing is skipped, and the node never waits for it. On a node that joined by
//! reconfiguration, a subscription from 0 starts with the handover it joined with.

use super::Actor;
use crate::engine::subscribers::{handover_entries, number, READ_CHUNK};
use crate::transport::Transport;
use crate::wire::RuntimeEntry;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;
use omnipaxos::util::LogEntry;
use omnipaxos::OmniPaxos;
use tokio::sync::mpsc;

/// One decided entry, its index and its configuration. A compacted prefix arrives as one
/// `Trimmed` or `Snapshotted` entry at the index the subscriber asked for, and the next entry
/// is at the compacted index.
#[derive(Clone, Debug)]
pub struct DecidedEntry<T: RuntimeEntry> {
    /// The configuration whose log holds the entry.
    pub config_id: u32,
    /// The entry's index in that log.
    pub idx: usize,
    /// The entry (`LogEntry::Decided` for ordinary ones, `LogEntry::StopSign` at the end of an
    /// ended configuration).
    pub entry: LogEntry<T>,
}

pub(crate) struct Subscriber<T: RuntimeEntry> {
    tx: mpsc::Sender<DecidedEntry<T>>,
    /// The log it reads; `None` while a joiner waits for its handover.
    config_id: Option<u32>,
    /// The next index to send.
    cursor: usize,
}

impl<T: RuntimeEntry> Subscriber<T> {
    pub(crate) fn new(
        tx: mpsc::Sender<DecidedEntry<T>>,
        config_id: Option<u32>,
        from: usize,
    ) -> Self {
        Self {
            tx,
            config_id,
            cursor: from,
        }
    }
}

/// Where a subscriber's entries come from.
enum Source<'a, T: RuntimeEntry, B: Storage<T>> {
    Instance(&'a OmniPaxos<T, B>, bool),
    Handover(&'a Handover<T>),
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// A subscriber from index `from` of the current configuration, or, from 0, from the start
    /// of the node's history: the handover it joined with, then every configuration it ran.
    pub(crate) fn new_subscriber(
        &self,
        tx: mpsc::Sender<DecidedEntry<T>>,
        from: usize,
    ) -> Subscriber<T> {
        if from > 0 {
            return Subscriber::new(tx, Some(self.config_id()), from);
        }
        match &self.reconf.join {
            Some(join) => Subscriber::new(tx, join.got.as_ref().map(|(id, _)| *id), 0),
            None => Subscriber::new(tx, self.history().first().copied(), 0),
        }
    }

    /// The configurations this node holds a log of, oldest first: the handover it joined with,
    /// the ended ones it ran, the current one.
    fn history(&self) -> Vec<u32> {
        let joined = self.reconf.join.as_ref().and_then(|j| j.got.as_ref());
        let ended = self.reconf.older.iter().chain(&self.reconf.previous);
        joined
            .map(|(id, _)| *id)
            .into_iter()
            .chain(ended.map(|op| op.get_config().cluster_config.configuration_id))
            .chain([self.config_id()])
            .collect()
    }

    /// The configuration after `config_id` in this node's history (the current one if none).
    fn config_after(&self, config_id: u32) -> u32 {
        let history = self.history();
        history
            .iter()
            .position(|id| *id == config_id)
            .and_then(|at| history.get(at + 1).copied())
            .unwrap_or_else(|| self.config_id())
    }

    /// Feeds every subscriber what was decided past its cursor, as far as its buffer allows.
    /// `Err` is a failed read of decided entries: the storage cannot give back what it holds,
    /// and the node must stop (a subscriber skipping them would lose entries; one waiting for
    /// them would spin).
    pub(crate) fn feed_subscribers(&mut self) -> Result<(), EntryReadFailed> {
        if self.subscribers.is_empty() {
            return Ok(());
        }
        let mut subscribers = std::mem::take(&mut self.subscribers);
        let mut failed = Ok(());
        subscribers.retain_mut(|s| match self.feed(s) {
            Ok(keep) => keep,
            Err(e) => {
                failed = Err(e);
                true
            }
        });
        self.subscribers = subscribers;
        failed
    }

    fn source(&self, config_id: u32) -> Option<Source<'_, T, B>> {
        if config_id == self.config_id() {
            return Some(Source::Instance(&self.op, false));
        }
        let ended = self.reconf.older.iter().chain(&self.reconf.previous);
        for op in ended {
            if op.get_config().cluster_config.configuration_id == config_id {
                return Some(Source::Instance(op, true));
            }
        }
        match &self.reconf.join {
            Some(join) => match &join.got {
                Some((id, handover)) if *id == config_id => Some(Source::Handover(handover)),
                _ => None,
            },
            None => None,
        }
    }

    /// Feeds one subscriber; `Ok(false)` once it is gone.
    fn feed(&self, s: &mut Subscriber<T>) -> Result<bool, EntryReadFailed> {
        loop {
            if s.tx.is_closed() {
                return Ok(false);
            }
            if s.tx.capacity() == 0 {
                return Ok(true);
            }
            let Some(config_id) = s.config_id.or_else(|| {
                self.reconf
                    .join
                    .as_ref()
                    .and_then(|j| j.got.as_ref())
                    .map(|(id, _)| *id)
            }) else {
                return Ok(true); // a joiner still waiting for its handover
            };
            s.config_id = Some(config_id);
            let (batch, end, ended) = match self.source(config_id) {
                Some(Source::Instance(op, ended)) => {
                    let decided = op.get_decided_idx();
                    if s.cursor >= decided {
                        (Vec::new(), decided, ended)
                    } else {
                        let to = decided.min(s.cursor + READ_CHUNK.min(s.tx.capacity()));
                        let compacted = op.get_compacted_idx();
                        let entries = match op.read_entries(s.cursor..to) {
                            Some(entries) if !entries.is_empty() => entries,
                            _ => {
                                return Err(EntryReadFailed {
                                    config_id,
                                    from: s.cursor,
                                    to,
                                })
                            }
                        };
                        (number(entries, s.cursor, compacted), decided, ended)
                    }
                }
                Some(Source::Handover(handover)) => (
                    handover_entries(handover, s.cursor),
                    handover.log_len() + 1,
                    true,
                ),
                None => {
                    tracing::warn!(config_id, "a subscriber fell behind an ended configuration; it continues with the current one");
                    s.config_id = Some(self.config_id());
                    s.cursor = 0;
                    continue;
                }
            };
            for (idx, next, entry) in batch {
                if s.tx
                    .try_send(DecidedEntry {
                        config_id,
                        idx,
                        entry,
                    })
                    .is_err()
                {
                    return Ok(!s.tx.is_closed());
                }
                s.cursor = next;
            }
            if s.cursor < end {
                // More to read from this source: go on while there is room.
                if s.tx.capacity() == 0 {
                    return Ok(true);
                }
                continue;
            }
            if !ended {
                return Ok(true);
            }
            // The configuration ended and the subscriber has all of it: on to the next.
            s.config_id = Some(self.config_after(config_id));
            s.cursor = 0;
            if config_id == self.config_id() {
                return Ok(true);
            }
        }
    }
}

/// Decided entries of a configuration's log that storage failed to give back.
#[derive(Debug)]
pub(crate) struct EntryReadFailed {
    config_id: u32,
    from: usize,
    to: usize,
}

impl std::fmt::Display for EntryReadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reading decided entries {}..{} of configuration {} from storage failed",
            self.from, self.to, self.config_id
        )
    }
}
