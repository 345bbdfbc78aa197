//! Subscriber cursors: each entry handed out with its index and where the cursor goes next.

use super::subscribers::{handover_entries, number, READ_CHUNK};
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
