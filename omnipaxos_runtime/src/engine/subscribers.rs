//! `subscribe_decided`: every subscriber has its own [`Cursor`] and gets every decided entry
//! from where it asked, in order: first what was decided before it subscribed, then entries as
//! they are decided, and on into the next configuration after a reconfiguration (the StopSign
//! entry, then the new log from index 0). A subscriber whose buffer is full is not fed until it
//! reads: nothing is skipped, and the node never waits for it. On a node that joined by
//! reconfiguration, a subscription from 0 starts with the handover it joined with.
//!
//! No I/O: the node's logs come in as a [`History`], the subscriber's buffer as a [`Sink`]; the
//! node's task gives its instances and channels (`actor/subscribers.rs`).

use crate::wire::RuntimeEntry;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;
use omnipaxos::util::{LogEntry, SnapshottedEntry};
use omnipaxos::OmniPaxos;

/// At most this many entries are read from storage per subscriber and pass.
pub(crate) const READ_CHUNK: usize = 1024;

/// Gives entries read from `from` on their indices and the cursor after each.
pub(crate) fn number<T: RuntimeEntry>(
    entries: Vec<LogEntry<T>>,
    from: usize,
    compacted: usize,
) -> Vec<(usize, usize, LogEntry<T>)> {
    let mut idx = from;
    entries
        .into_iter()
        .map(|entry| {
            let next = match entry {
                LogEntry::Trimmed(_) | LogEntry::Snapshotted(_) => compacted.max(idx + 1),
                _ => idx + 1,
            };
            let item = (idx, next, entry);
            idx = next;
            item
        })
        .collect()
}

/// The handover's log as entries from `from` on: the compacted prefix, the entries, the StopSign.
pub(crate) fn handover_entries<T: RuntimeEntry>(
    h: &Handover<T>,
    from: usize,
) -> Vec<(usize, usize, LogEntry<T>)> {
    let mut out = Vec::new();
    let mut idx = from;
    if idx < h.compacted_idx {
        let entry = match &h.snapshot {
            Some(snapshot) => {
                LogEntry::Snapshotted(SnapshottedEntry::with(h.compacted_idx, snapshot.clone()))
            }
            None => LogEntry::Trimmed(h.compacted_idx),
        };
        out.push((idx, h.compacted_idx, entry));
        idx = h.compacted_idx;
    }
    for (k, e) in h
        .entries
        .iter()
        .enumerate()
        .skip(idx - h.compacted_idx)
        .take(READ_CHUNK)
    {
        let at = h.compacted_idx + k;
        out.push((at, at + 1, LogEntry::Decided(e.clone())));
        idx = at + 1;
    }
    if idx == h.log_len() {
        out.push((idx, idx + 1, LogEntry::StopSign(h.stopsign.clone(), true)));
    }
    out
}

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

/// Where a subscriber's entries go: a bounded buffer that the subscriber empties.
pub(crate) trait Sink<T: RuntimeEntry> {
    /// Whether the subscriber is gone.
    fn is_closed(&self) -> bool;
    /// How many more entries the buffer takes now.
    fn room(&self) -> usize;
    /// Hands `entry` over; `false` if the buffer did not take it.
    fn offer(&mut self, entry: DecidedEntry<T>) -> bool;
}

/// One of the node's logs, as a subscriber reads it.
pub(crate) enum Log<'a, T: RuntimeEntry> {
    /// A configuration this node ran: `ended` once its StopSign is decided.
    Instance {
        decided: usize,
        compacted: usize,
        ended: bool,
    },
    /// The handover this node joined with.
    Handover(&'a Handover<T>),
}

/// The node's logs, oldest first: the handover it joined with (if it joined), the
/// configurations it ran and ended, the current one.
pub(crate) trait History<T: RuntimeEntry> {
    /// The configuration the node runs now.
    fn current(&self) -> u32;
    /// Whether the node is a joiner still waiting for its handover.
    fn awaits_handover(&self) -> bool;
    /// The oldest log the node holds (where a subscription from 0 starts).
    fn first(&self) -> u32;
    /// The log of configuration `config_id`, if the node holds it.
    fn log(&self, config_id: u32) -> Option<Log<'_, T>>;
    /// Entries `from..to` of a configuration's log (`None`: the storage failed).
    fn read(&self, config_id: u32, from: usize, to: usize) -> Option<Vec<LogEntry<T>>>;
    /// The configuration after `config_id` (the current one if none).
    fn after(&self, config_id: u32) -> u32;
}

/// Where one subscriber is: the log it reads (`None` while its node waits for the handover it
/// joins with) and the next index it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) config_id: Option<u32>,
    pub(crate) next: usize,
}

impl Cursor {
    /// A subscription from index `from` of the current configuration, or, from 0, from the
    /// start of the node's history.
    pub(crate) fn new<T: RuntimeEntry>(history: &impl History<T>, from: usize) -> Self {
        let config_id = if from > 0 {
            Some(history.current())
        } else if history.awaits_handover() {
            None
        } else {
            Some(history.first())
        };
        Self {
            config_id,
            next: from,
        }
    }

    /// Hands the subscriber what was decided past the cursor, as far as its buffer takes.
    /// `Ok(false)` once the subscriber is gone. `Err` is a failed read of decided entries: the
    /// storage cannot give back what it holds, and the node must stop (skipping them would
    /// lose entries; waiting for them would spin).
    pub(crate) fn feed<T: RuntimeEntry>(
        &mut self,
        history: &impl History<T>,
        sink: &mut impl Sink<T>,
    ) -> Result<bool, EntryReadFailed> {
        loop {
            if sink.is_closed() {
                return Ok(false);
            }
            if sink.room() == 0 {
                return Ok(true);
            }
            if self.config_id.is_none() {
                if history.awaits_handover() {
                    return Ok(true);
                }
                self.config_id = Some(history.first());
            }
            let config_id = self.config_id.unwrap_or_else(|| history.current());
            let (batch, end, ended) = match history.log(config_id) {
                Some(Log::Instance {
                    decided,
                    compacted,
                    ended,
                }) => {
                    if self.next >= decided {
                        (Vec::new(), decided, ended)
                    } else {
                        let to = decided.min(self.next + READ_CHUNK.min(sink.room()));
                        let entries = match history.read(config_id, self.next, to) {
                            Some(entries) if !entries.is_empty() => entries,
                            _ => {
                                return Err(EntryReadFailed {
                                    config_id,
                                    from: self.next,
                                    to,
                                })
                            }
                        };
                        (number(entries, self.next, compacted), decided, ended)
                    }
                }
                Some(Log::Handover(handover)) => (
                    handover_entries(handover, self.next),
                    handover.log_len() + 1,
                    true,
                ),
                None => {
                    tracing::warn!(
                        config_id,
                        "a subscriber fell behind an ended configuration; it continues with the current one"
                    );
                    self.config_id = Some(history.current());
                    self.next = 0;
                    continue;
                }
            };
            for (idx, next, entry) in batch {
                let entry = DecidedEntry {
                    config_id,
                    idx,
                    entry,
                };
                if !sink.offer(entry) {
                    return Ok(!sink.is_closed());
                }
                self.next = next;
            }
            if self.next < end {
                continue; // more in this log: on while there is room
            }
            if !ended {
                return Ok(true);
            }
            // The configuration ended and the subscriber has all of it: on to the next.
            self.config_id = Some(history.after(config_id));
            self.next = 0;
            if config_id == history.current() {
                return Ok(true);
            }
        }
    }
}

/// Decided entries of a configuration's log that storage failed to give back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EntryReadFailed {
    pub(crate) config_id: u32,
    pub(crate) from: usize,
    pub(crate) to: usize,
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

/// A node's logs as its instances: the current one, those it ran and ended (oldest first),
/// and the handover it joined with. What both drivers (the node's task and the simulator) give
/// the feed.
pub(crate) struct NodeLogs<'a, T: RuntimeEntry, B: Storage<T>> {
    pub(crate) current: &'a OmniPaxos<T, B>,
    pub(crate) ended: Vec<&'a OmniPaxos<T, B>>,
    /// The handover the node joined with, and its configuration.
    pub(crate) joined: Option<(u32, &'a Handover<T>)>,
    /// Whether the node joins and its handover has not arrived yet.
    pub(crate) awaits_handover: bool,
}

fn config_of<T: RuntimeEntry, B: Storage<T>>(op: &OmniPaxos<T, B>) -> u32 {
    op.get_config().cluster_config.configuration_id
}

impl<T: RuntimeEntry, B: Storage<T>> NodeLogs<'_, T, B> {
    /// The configurations the node holds a log of, oldest first.
    fn ids(&self) -> Vec<u32> {
        let joined = self.joined.map(|(id, _)| id);
        let ran = self.ended.iter().map(|op| config_of(op));
        joined
            .into_iter()
            .chain(ran)
            .chain([self.current()])
            .collect()
    }

    /// The instance of configuration `config_id`, and whether it ended.
    fn instance(&self, config_id: u32) -> Option<(&OmniPaxos<T, B>, bool)> {
        if config_id == self.current() {
            return Some((self.current, false));
        }
        let ended = self.ended.iter().find(|op| config_of(op) == config_id);
        ended.map(|op| (*op, true))
    }
}

impl<T: RuntimeEntry, B: Storage<T>> History<T> for NodeLogs<'_, T, B> {
    fn current(&self) -> u32 {
        config_of(self.current)
    }
    fn awaits_handover(&self) -> bool {
        self.awaits_handover
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
        match self.joined {
            Some((id, handover)) if id == config_id => Some(Log::Handover(handover)),
            _ => None,
        }
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
