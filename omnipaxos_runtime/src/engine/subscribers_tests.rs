//! Subscriber cursors: each entry handed out with its index and where the cursor goes next, and
//! the feed through a node's logs into a bounded buffer.

use super::subscribers::{
    handover_entries, number, Cursor, DecidedEntry, EntryReadFailed, History, Log, Sink, READ_CHUNK,
};
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::StopSign;
use omnipaxos::util::LogEntry;
use omnipaxos::ClusterConfig;

/// Each item as (index, next cursor, kind of entry or its value).
fn shape(items: Vec<(usize, usize, LogEntry<u64>)>) -> Vec<(usize, usize, String)> {
    items
        .into_iter()
        .map(|(idx, next, e)| {
            let what = match e {
                LogEntry::Decided(v) => v.to_string(),
                LogEntry::Trimmed(_) => "trimmed".to_string(),
                LogEntry::Snapshotted(_) => "snapshotted".to_string(),
                LogEntry::StopSign(..) => "stopsign".to_string(),
                _ => "other".to_string(),
            };
            (idx, next, what)
        })
        .collect()
}

fn handover(compacted_idx: usize, entries: Vec<u64>) -> Handover<u64> {
    Handover {
        stopsign: StopSign {
            next_config: ClusterConfig {
                configuration_id: 2,
                nodes: vec![1, 2, 3],
                ..Default::default()
            },
            metadata: None,
        },
        compacted_idx,
        snapshot: None,
        entries,
    }
}

#[test]
fn a_compacted_prefix_is_one_entry_that_moves_the_cursor_to_the_compacted_index() {
    let read = vec![
        LogEntry::Trimmed(5),
        LogEntry::Decided(50),
        LogEntry::Decided(60),
    ];
    assert_eq!(
        shape(number(read, 0, 5)),
        [
            (0, 5, "trimmed".into()),
            (5, 6, "50".into()),
            (6, 7, "60".into())
        ]
    );
}

#[test]
fn entries_past_the_compacted_prefix_advance_one_by_one_from_the_cursor() {
    let read = vec![LogEntry::Decided(70), LogEntry::Decided(80)];
    assert_eq!(
        shape(number(read, 7, 5)),
        [(7, 8, "70".into()), (8, 9, "80".into())]
    );
}

#[test]
fn a_handover_gives_its_prefix_its_entries_then_its_stopsign() {
    let h = handover(2, vec![20, 30]);
    assert_eq!(
        shape(handover_entries(&h, 0)),
        [
            (0, 2, "trimmed".into()),
            (2, 3, "20".into()),
            (3, 4, "30".into()),
            (4, 5, "stopsign".into())
        ]
    );
    // From the middle, and from the end of its entries.
    assert_eq!(
        shape(handover_entries(&h, 3)),
        [(3, 4, "30".into()), (4, 5, "stopsign".into())]
    );
    assert_eq!(shape(handover_entries(&h, 4)), [(4, 5, "stopsign".into())]);
}

#[test]
fn a_handover_is_read_a_chunk_at_a_time() {
    let h = handover(0, (0..(READ_CHUNK as u64 + 10)).collect());
    let first = handover_entries(&h, 0);
    assert_eq!(
        first.len(),
        READ_CHUNK,
        "no StopSign before the entries end"
    );
    let next = first.last().map(|(_, next, _)| *next).unwrap_or(0);
    let rest = shape(handover_entries(&h, next));
    assert_eq!(rest.len(), 11);
    assert_eq!(rest.last().map(|r| r.2.as_str()), Some("stopsign"));
}

/// A node's logs for the feed: configuration id → (compacted index, decided entries, ended),
/// an ended log closing with its StopSign; and the handover it joined with.
struct FakeHistory {
    logs: Vec<(u32, usize, Vec<u64>, bool)>,
    joined: Option<(u32, Handover<u64>)>,
    awaits_handover: bool,
    fail_reads: bool,
}

impl FakeHistory {
    /// A node that ran the configurations `logs`, the last one current.
    fn ran(logs: Vec<(u32, usize, Vec<u64>, bool)>) -> Self {
        FakeHistory {
            logs,
            joined: None,
            awaits_handover: false,
            fail_reads: false,
        }
    }

    fn one_log(entries: Vec<u64>) -> Self {
        Self::ran(vec![(1, 0, entries, false)])
    }

    fn log_of(&self, config_id: u32) -> Option<&(u32, usize, Vec<u64>, bool)> {
        self.logs.iter().find(|l| l.0 == config_id)
    }

    fn ids(&self) -> Vec<u32> {
        let joined = self.joined.as_ref().map(|(id, _)| *id);
        joined
            .into_iter()
            .chain(self.logs.iter().map(|l| l.0))
            .collect()
    }
}

impl History<u64> for FakeHistory {
    fn current(&self) -> u32 {
        self.logs.last().map(|l| l.0).unwrap_or(0)
    }
    fn awaits_handover(&self) -> bool {
        self.awaits_handover
    }
    fn first(&self) -> u32 {
        self.ids()[0]
    }
    fn log(&self, config_id: u32) -> Option<Log<'_, u64>> {
        if let Some((_, compacted, entries, ended)) = self.log_of(config_id) {
            return Some(Log::Instance {
                decided: compacted + entries.len() + usize::from(*ended),
                compacted: *compacted,
                ended: *ended,
            });
        }
        match &self.joined {
            Some((id, h)) if *id == config_id => Some(Log::Handover(h)),
            _ => None,
        }
    }
    fn read(&self, config_id: u32, from: usize, to: usize) -> Option<Vec<LogEntry<u64>>> {
        if self.fail_reads {
            return None;
        }
        let (_, compacted, entries, ended) = self.log_of(config_id)?;
        let mut out = Vec::new();
        let mut idx = from;
        if idx < *compacted {
            out.push(LogEntry::Trimmed(*compacted));
            idx = *compacted;
        }
        while idx < to {
            match entries.get(idx - compacted) {
                Some(v) => out.push(LogEntry::Decided(*v)),
                None if *ended => out.push(LogEntry::StopSign(handover(0, vec![]).stopsign, true)),
                None => break,
            }
            idx += 1;
        }
        Some(out)
    }
    fn after(&self, config_id: u32) -> u32 {
        let ids = self.ids();
        let at = ids.iter().position(|id| *id == config_id);
        at.and_then(|at| ids.get(at + 1).copied())
            .unwrap_or_else(|| self.current())
    }
}

/// A subscriber's buffer with room for `room` entries; `closed` once it is gone.
struct Buffer {
    got: Vec<DecidedEntry<u64>>,
    room: usize,
    closed: bool,
}

impl Buffer {
    fn with_room(room: usize) -> Self {
        Buffer {
            got: Vec::new(),
            room,
            closed: false,
        }
    }

    /// What arrived, as (configuration, index, what), and the buffer emptied (as a reader
    /// would).
    fn take(&mut self) -> Vec<(u32, usize, String)> {
        let got = std::mem::take(&mut self.got);
        self.room += got.len();
        got.into_iter()
            .map(|d| {
                let what = shape(vec![(d.idx, 0, d.entry)]).remove(0).2;
                (d.config_id, d.idx, what)
            })
            .collect()
    }
}

impl Sink<u64> for Buffer {
    fn is_closed(&self) -> bool {
        self.closed
    }
    fn room(&self) -> usize {
        self.room
    }
    fn offer(&mut self, entry: DecidedEntry<u64>) -> bool {
        if self.closed || self.room == 0 {
            return false;
        }
        self.room -= 1;
        self.got.push(entry);
        true
    }
}

fn values(config_id: u32, from: usize, vals: &[u64]) -> Vec<(u32, usize, String)> {
    vals.iter()
        .enumerate()
        .map(|(k, v)| (config_id, from + k, v.to_string()))
        .collect()
}

#[test]
fn a_subscriber_gets_what_was_decided_from_its_index_then_what_is_decided_later() {
    let mut history = FakeHistory::one_log(vec![10, 20, 30]);
    let mut cursor = Cursor::new(&history, 1);
    let mut buffer = Buffer::with_room(16);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(buffer.take(), values(1, 1, &[20, 30]));
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert!(buffer.take().is_empty(), "nothing new: nothing sent twice");
    history.logs[0].2.push(40);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(buffer.take(), values(1, 3, &[40]));
}

#[test]
fn a_full_buffer_is_fed_no_further_and_nothing_is_skipped() {
    let history = FakeHistory::one_log(vec![10, 20, 30, 40, 50]);
    let mut cursor = Cursor::new(&history, 0);
    let mut buffer = Buffer::with_room(2);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(buffer.got.len(), 2);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(
        buffer.take(),
        values(1, 0, &[10, 20]),
        "the full buffer got nothing more"
    );
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(buffer.take(), values(1, 2, &[30, 40]));
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(buffer.take(), values(1, 4, &[50]));
}

#[test]
fn a_subscriber_that_is_gone_is_dropped() {
    let history = FakeHistory::one_log(vec![10]);
    let mut cursor = Cursor::new(&history, 0);
    let mut buffer = Buffer::with_room(4);
    buffer.closed = true;
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(false));
}

#[test]
fn a_compacted_prefix_arrives_as_one_entry_then_the_log_from_the_compacted_index() {
    let mut history = FakeHistory::one_log(vec![50, 60]);
    history.logs[0].1 = 5;
    let mut cursor = Cursor::new(&history, 0);
    let mut buffer = Buffer::with_room(16);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    let mut expected = vec![(1, 0, "trimmed".to_string())];
    expected.extend(values(1, 5, &[50, 60]));
    assert_eq!(buffer.take(), expected);
}

#[test]
fn an_ended_configuration_gives_its_stopsign_then_the_next_log_from_zero() {
    let history = FakeHistory::ran(vec![(1, 0, vec![10, 20], true), (2, 0, vec![30], false)]);
    let mut cursor = Cursor::new(&history, 0);
    let mut buffer = Buffer::with_room(16);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    let mut expected = values(1, 0, &[10, 20]);
    expected.push((1, 2, "stopsign".into()));
    expected.extend(values(2, 0, &[30]));
    assert_eq!(buffer.take(), expected);
    assert_eq!(
        cursor,
        Cursor {
            config_id: Some(2),
            next: 1
        }
    );
}

#[test]
fn a_joiner_feeds_nothing_until_its_handover_then_the_handover_before_its_own_log() {
    let mut history = FakeHistory::ran(vec![(2, 0, vec![30], false)]);
    history.awaits_handover = true;
    let mut cursor = Cursor::new(&history, 0);
    let mut buffer = Buffer::with_room(16);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert!(buffer.take().is_empty(), "waiting for the handover");
    history.joined = Some((1, handover(0, vec![10, 20])));
    history.awaits_handover = false;
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    let mut expected = values(1, 0, &[10, 20]);
    expected.push((1, 2, "stopsign".into()));
    expected.extend(values(2, 0, &[30]));
    assert_eq!(buffer.take(), expected);
}

#[test]
fn a_subscriber_behind_a_log_the_node_no_longer_holds_continues_with_the_current_one() {
    let history = FakeHistory::one_log(vec![10]);
    let mut cursor = Cursor {
        config_id: Some(7),
        next: 3,
    };
    let mut buffer = Buffer::with_room(16);
    assert_eq!(cursor.feed(&history, &mut buffer), Ok(true));
    assert_eq!(buffer.take(), values(1, 0, &[10]));
}

#[test]
fn a_failed_read_of_decided_entries_is_an_error_and_the_cursor_stays() {
    let mut history = FakeHistory::one_log(vec![10, 20]);
    history.fail_reads = true;
    let mut cursor = Cursor::new(&history, 0);
    let mut buffer = Buffer::with_room(16);
    let failed = cursor.feed(&history, &mut buffer);
    assert_eq!(
        failed,
        Err(EntryReadFailed {
            config_id: 1,
            from: 0,
            to: 2
        })
    );
    assert!(buffer.take().is_empty());
    assert_eq!(cursor.next, 0, "nothing skipped");
}
