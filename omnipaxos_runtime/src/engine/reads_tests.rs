//! The read tracker's rules, one state, one input, the exact answers out (callers by number).

use super::reads::{ReadPoint, ReadTracker};
use omnipaxos::errors::ReadErr;
use omnipaxos::{ReadFailure, ReadState};

type Tracker = ReadTracker<u32>;

fn answers(t: &mut Tracker) -> Vec<(u32, Result<ReadPoint, String>)> {
    t.take_answers()
        .map(|(r, res)| (r, res.map_err(|e| format!("{e:?}"))))
        .collect()
}

/// Asks the core, which starts every read; returns the numbers asked.
fn ask_all(t: &mut Tracker) -> Vec<u64> {
    let mut asked = Vec::new();
    t.ask(|ctx| {
        asked.push(ctx);
        true
    });
    asked
}

fn at(idx: usize) -> Result<ReadPoint, String> {
    Ok(ReadPoint { config_id: 1, idx })
}

#[test]
fn a_read_is_answered_once_the_node_decided_up_to_its_index() {
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    assert_eq!(ask_all(&mut t), [1]);
    let state = ReadState { ctx: 1, index: 5 };
    t.settle([state], [], 4, 1, false);
    assert!(answers(&mut t).is_empty(), "decided 4 < read index 5");
    t.settle([], [], 5, 1, false);
    assert_eq!(answers(&mut t), [(1, at(5))]);
    assert_eq!(t.pending(), 0);
}

#[test]
fn a_read_the_core_cannot_start_is_asked_again_on_the_next_tick_only() {
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    t.ask(|_| false); // no leader yet
    assert!(ask_all(&mut t).is_empty(), "not before the tick");
    t.tick(10);
    assert_eq!(ask_all(&mut t), [1]);
}

#[test]
fn a_read_the_core_reports_failed_is_asked_again_on_the_next_tick() {
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    ask_all(&mut t);
    let failure = ReadFailure {
        ctx: 1,
        reason: ReadErr::LeaderChanged,
    };
    t.settle([], [failure], 0, 1, false);
    assert!(answers(&mut t).is_empty(), "not answered: tried again");
    t.tick(10);
    assert_eq!(ask_all(&mut t), [1]);
}

#[test]
fn a_read_not_answered_by_its_deadline_times_out() {
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    ask_all(&mut t);
    t.tick(999);
    assert!(answers(&mut t).is_empty());
    t.tick(1_000);
    assert_eq!(answers(&mut t), [(1, Err("Timeout".to_string()))]);
    // A late answer from the core for it changes nothing.
    t.settle([ReadState { ctx: 1, index: 0 }], [], 9, 1, false);
    assert!(answers(&mut t).is_empty());
}

#[test]
fn a_new_configuration_asks_every_unanswered_read_again_and_forgets_old_indices() {
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    ask_all(&mut t);
    t.settle([ReadState { ctx: 1, index: 9 }], [], 3, 1, false);
    t.restart();
    assert_eq!(ask_all(&mut t), [1]);
    t.settle([], [], 3, 2, false);
    assert!(
        answers(&mut t).is_empty(),
        "index 9 was the old configuration's"
    );
    t.settle([ReadState { ctx: 1, index: 2 }], [], 3, 2, false);
    assert_eq!(
        answers(&mut t),
        [(
            1,
            Ok(ReadPoint {
                config_id: 2,
                idx: 2
            })
        )]
    );
}

#[test]
fn an_ended_configuration_answers_no_read_and_the_next_one_does() {
    // Configuration 1 decided its StopSign: configuration 2 may already hold acknowledged
    // writes, so a read point in 1 would be stale (found by the runtime-node sweep).
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    ask_all(&mut t);
    t.settle([ReadState { ctx: 1, index: 5 }], [], 6, 1, true);
    assert!(
        answers(&mut t).is_empty(),
        "not from an ended configuration"
    );
    t.restart();
    assert_eq!(ask_all(&mut t), [1]);
    t.settle([ReadState { ctx: 1, index: 0 }], [], 0, 2, false);
    assert_eq!(
        answers(&mut t),
        [(
            1,
            Ok(ReadPoint {
                config_id: 2,
                idx: 0
            })
        )]
    );
}

#[test]
fn shutting_down_answers_every_read() {
    let mut t = Tracker::default();
    t.submit(1, 1_000);
    t.submit(2, 1_000);
    ask_all(&mut t);
    t.shut_down();
    assert_eq!(
        answers(&mut t),
        [
            (1, Err("Shutdown".to_string())),
            (2, Err("Shutdown".to_string()))
        ]
    );
}
