//! Where a `subscribe_decided` subscriber's cursor goes: the entries a read gives, numbered
//! with their indices and the cursor after each (a compacted prefix is one entry that moves the
//! cursor to the compacted index), and the log of a handover a joining node received. No I/O:
//! the node's task reads the log and feeds the channels (`actor/subscribers.rs`).

use crate::wire::RuntimeEntry;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::util::{LogEntry, SnapshottedEntry};

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
