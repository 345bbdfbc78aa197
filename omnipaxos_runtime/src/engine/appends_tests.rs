//! The append tracker's rules, one state, one input, the exact effects out: answers to callers
//! (by number) and messages to peers.

use super::appends::{AppendLimits, AppendTracker};
use super::{Micros, NodeView};
use crate::errors::AppendError;
use crate::wire::{NodeId, RemoteOutcome, WireMessage};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::ProposeErr;
use std::collections::BTreeSet;

const ME: u64 = 1;
const LEADER: u64 = 2;
const OTHER: u64 = 3;
/// The incarnations of the nodes' runtimes.
const MINE: u64 = 100;
const LEADERS: u64 = 200;
const OTHERS: u64 = 300;

fn ballot(n: u32, pid: NodeId) -> Ballot {
    Ballot {
        config_id: 1,
        n,
        priority: 0,
        pid,
    }
}

/// A node as the tracker sees it: a log, a ballot, links.
struct Node {
    me: NodeId,
    promise: Ballot,
    ready_leader: bool,
    log: Vec<u64>,
    decided: usize,
    connected: BTreeSet<NodeId>,
    sealed: bool,
    follows: bool,
    retired: bool,
}

impl Node {
    /// Node 1 following leader 2 in ballot 1.2, connected to everyone.
    fn follower() -> Self {
        Node {
            me: ME,
            promise: ballot(1, LEADER),
            ready_leader: false,
            log: Vec::new(),
            decided: 0,
            connected: [LEADER, OTHER].into(),
            sealed: false,
            follows: false,
            retired: false,
        }
    }

    /// Node 1 leading in ballot 1.1 (accept phase), with three entries decided.
    fn leader() -> Self {
        Node {
            promise: ballot(1, ME),
            ready_leader: true,
            log: vec![7, 8, 9],
            decided: 3,
            ..Node::follower()
        }
    }
}

impl NodeView<u64> for Node {
    fn me(&self) -> NodeId {
        self.me
    }
    fn config_id(&self) -> u32 {
        1
    }
    fn nodes(&self) -> Vec<NodeId> {
        vec![ME, LEADER, OTHER]
    }
    fn promise(&self) -> Ballot {
        self.promise
    }
    fn leader_ballot(&self) -> Ballot {
        self.promise
    }
    fn is_ready_leader(&self) -> bool {
        self.ready_leader
    }
    fn log_end(&self) -> usize {
        self.log.len()
    }
    fn decided_idx(&self) -> usize {
        self.decided
    }
    fn append(&mut self, entry: u64) -> Result<(), ProposeErr<u64>> {
        if self.sealed {
            return Err(ProposeErr::PendingReconfigEntry(entry));
        }
        self.log.push(entry);
        Ok(())
    }
    fn is_connected(&self, pid: NodeId) -> bool {
        self.connected.contains(&pid)
    }
    fn follows_reconfigurations(&self) -> bool {
        self.follows && !self.retired
    }
    fn retired(&self) -> bool {
        self.retired
    }
}

const LIMITS: AppendLimits = AppendLimits {
    max_pending: 4,
    leader_unreachable: 300_000,
    relay_timeout: 5_000_000,
    batch_hold: 10_000,
};
const DEADLINE: Micros = 5_000_000;

type Tracker = AppendTracker<u64, u32>;

fn tracker() -> Tracker {
    let mut t = Tracker::new(MINE, 0, LIMITS);
    t.note_incarnation(LEADER, LEADERS, 0);
    t.note_incarnation(OTHER, OTHERS, 0);
    t
}

/// The answers given, as (caller, outcome).
fn answers(t: &mut Tracker) -> Vec<(u32, Result<usize, String>)> {
    t.take_answers()
        .map(|a| (a.reply, a.result.map_err(|e| format!("{e:?}"))))
        .collect()
}

/// The messages to send, as text.
fn messages(t: &mut Tracker) -> Vec<String> {
    t.take_messages()
        .into_iter()
        .map(|(to, msg)| match msg {
            WireMessage::Append {
                incarnation,
                ballot,
                entries,
            } => format!("->{to} Append inc={incarnation} b={ballot} {entries:?}"),
            WireMessage::AppendOutcome {
                incarnation,
                outcomes,
            } => format!("->{to} Outcome inc={incarnation} {outcomes:?}"),
            other => format!("->{to} {}", other.kind()),
        })
        .collect()
}

fn in_doubt(idx: Option<usize>) -> Result<usize, String> {
    Err(format!(
        "{:?}",
        AppendError::<u64>::InDoubt { log_entry_idx: idx }
    ))
}

#[test]
fn a_leader_answers_with_the_index_once_decided_in_the_ballot_it_placed_in() {
    let (mut t, mut node) = (tracker(), Node::leader());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    assert_eq!(node.log, [7, 8, 9, 42]);
    t.observe(&node, 10);
    assert!(answers(&mut t).is_empty(), "not decided yet");
    node.decided = 4;
    t.observe(&node, 20);
    assert_eq!(answers(&mut t), [(1, Ok(3))]);
    assert!(messages(&mut t).is_empty());
}

#[test]
fn a_ballot_change_before_the_decision_makes_the_outcome_in_doubt_with_its_index() {
    let (mut t, mut node) = (tracker(), Node::leader());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    node.promise = ballot(2, OTHER);
    node.decided = 4; // decided, but under another ballot: nobody can say what
    t.observe(&node, 10);
    assert_eq!(answers(&mut t), [(1, in_doubt(Some(3)))]);
}

#[test]
fn a_follower_sends_to_the_leader_with_the_life_it_knows() {
    let (mut t, mut node) = (tracker(), Node::follower());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    assert_eq!(messages(&mut t), ["->2 Append inc=100 b=1.2 [(1, 42)]"]);
    assert!(answers(&mut t).is_empty());
}

#[test]
fn not_leader_from_the_same_life_is_sent_again_from_another_life_is_in_doubt() {
    let (mut t, mut node) = (tracker(), Node::follower());
    t.submit(42, Some(1), 0, DEADLINE);
    t.submit(43, Some(2), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    messages(&mut t);
    // The same life of the leader did not take entry 1: safe to send it again.
    t.on_outcomes(
        &node,
        LEADER,
        LEADERS,
        vec![(1, RemoteOutcome::NotLeader)],
        5,
    );
    assert!(answers(&mut t).is_empty());
    t.dispatch(&mut node, 5);
    assert_eq!(messages(&mut t), ["->2 Append inc=100 b=1.2 [(1, 42)]"]);
    // An answer from another life cannot say what the life it was sent to did.
    t.on_outcomes(&node, LEADER, 201, vec![(2, RemoteOutcome::NotLeader)], 6);
    assert_eq!(answers(&mut t), [(1, in_doubt(None)), (2, in_doubt(None))]);
}

#[test]
fn a_restart_of_the_leader_leaves_what_was_sent_to_it_in_doubt() {
    let (mut t, mut node) = (tracker(), Node::follower());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    t.note_incarnation(LEADER, LEADERS, 1);
    assert!(
        answers(&mut t).is_empty(),
        "the same life again changes nothing"
    );
    t.note_incarnation(LEADER, 201, 2);
    assert_eq!(answers(&mut t), [(1, in_doubt(None))]);
}

#[test]
fn a_broken_connection_leaves_what_was_sent_on_it_in_doubt() {
    let (mut t, mut node) = (tracker(), Node::follower());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    t.abandon_sent_to(OTHER, 1);
    assert!(answers(&mut t).is_empty(), "sent to the leader, not to 3");
    t.abandon_sent_to(LEADER, 2);
    assert_eq!(answers(&mut t), [(1, in_doubt(None))]);
}

#[test]
fn an_unreachable_leader_is_reached_through_a_peer_that_relays_once() {
    let (mut t, mut node) = (tracker(), Node::follower());
    node.connected.remove(&LEADER);
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    assert_eq!(messages(&mut t), ["->3 Append inc=100 b=1.2 [(1, 42)]"]);
    // The relay's answer settles it like the leader's.
    t.on_outcomes(
        &node,
        OTHER,
        OTHERS,
        vec![(1, RemoteOutcome::Decided { idx: 5 })],
        3,
    );
    assert_eq!(answers(&mut t), [(1, Ok(5))]);
}

#[test]
fn a_relay_sends_to_the_leader_and_reports_back_but_never_relays_again() {
    // Node 1 follows 2 and is connected to it: it relays 3's entry and reports the outcome.
    let (mut t, mut node) = (tracker(), Node::follower());
    t.on_remote_append(&node, OTHER, OTHERS, ballot(1, LEADER), vec![(9, 42)], 0);
    t.dispatch(&mut node, 0);
    assert_eq!(messages(&mut t), ["->2 Append inc=100 b=1.2 [(1, 42)]"]);
    t.on_outcomes(
        &node,
        LEADER,
        LEADERS,
        vec![(1, RemoteOutcome::Decided { idx: 4 })],
        1,
    );
    assert_eq!(
        messages(&mut t),
        ["->3 Outcome inc=100 [(9, Decided { idx: 4 })]"]
    );
    // Without its own link to the leader, it does not pass the entry on to yet another node.
    let (mut t, mut node) = (tracker(), Node::follower());
    node.connected.remove(&LEADER);
    t.on_remote_append(&node, OTHER, OTHERS, ballot(1, LEADER), vec![(9, 42)], 0);
    t.dispatch(&mut node, 0);
    assert_eq!(
        messages(&mut t),
        ["->3 Outcome inc=100 [(9, NotLeader)]"],
        "refused, never appended: the sender may send it again"
    );
}

#[test]
fn a_leader_places_a_peers_entries_and_reports_their_fate_to_it() {
    let (mut t, mut node) = (tracker(), Node::leader());
    t.on_remote_append(
        &node,
        OTHER,
        OTHERS,
        ballot(1, ME),
        vec![(5, 42), (6, 43)],
        0,
    );
    t.dispatch(&mut node, 0);
    assert_eq!(node.log, [7, 8, 9, 42, 43]);
    node.decided = 4;
    t.observe(&node, 1);
    node.promise = ballot(2, OTHER);
    t.observe(&node, 2);
    assert_eq!(
        messages(&mut t),
        ["->3 Outcome inc=100 [(5, Decided { idx: 3 }), (6, InDoubt { idx: Some(4) })]"]
    );
    // Entries for a ballot it does not lead are refused, never appended.
    t.on_remote_append(&node, OTHER, OTHERS, ballot(1, ME), vec![(7, 44)], 3);
    t.dispatch(&mut node, 3);
    assert_eq!(node.log.len(), 5);
    assert_eq!(messages(&mut t), ["->3 Outcome inc=100 [(7, NotLeader)]"]);
}

#[test]
fn a_sealed_log_keeps_the_entry_for_the_next_configuration_or_hands_it_back() {
    // A node that follows reconfigurations keeps it waiting, unanswered.
    let (mut t, mut node) = (tracker(), Node::leader());
    node.sealed = true;
    node.follows = true;
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    t.dispatch(&mut node, 1);
    assert!(answers(&mut t).is_empty());
    assert_eq!(t.pending(), 1);
    // Once the node retires with the configuration, the entry comes back with the error.
    node.retired = true;
    t.dispatch(&mut node, 2);
    assert_eq!(
        answers(&mut t),
        [(1, Err("Propose(PendingReconfigEntry(42))".to_string()))]
    );
    // A node that stays in its configuration hands it back at once.
    let (mut t, mut node) = (tracker(), Node::leader());
    node.sealed = true;
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    assert_eq!(
        answers(&mut t),
        [(1, Err("Propose(PendingReconfigEntry(42))".to_string()))]
    );
}

#[test]
fn deadlines_end_in_no_leader_if_never_sent_and_timeout_if_sent() {
    let (mut t, mut node) = (tracker(), Node::follower());
    t.submit(42, Some(1), 0, 1_000);
    t.dispatch(&mut node, 0);
    node.promise = Ballot::default(); // no leader known: the next one waits
    t.submit(43, Some(2), 0, 1_000);
    t.dispatch(&mut node, 0);
    t.expire(999);
    assert!(answers(&mut t).is_empty());
    t.expire(1_000);
    assert_eq!(
        answers(&mut t),
        [
            (1, Err("Timeout".to_string())),
            (2, Err("NoLeader".to_string()))
        ]
    );
}

#[test]
fn a_known_leader_out_of_reach_fails_appends_after_the_unreachable_limit() {
    let (mut t, mut node) = (tracker(), Node::follower());
    node.connected.clear();
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 299_999);
    assert!(answers(&mut t).is_empty());
    t.dispatch(&mut node, 300_000);
    assert_eq!(answers(&mut t), [(1, Err("NoLeader".to_string()))]);
}

#[test]
fn more_than_the_pending_limit_is_refused_at_once() {
    let mut t = tracker();
    for caller in 1..=5 {
        t.submit(42, Some(caller), 0, DEADLINE);
    }
    assert_eq!(
        answers(&mut t),
        [(5, Err("TooManyOutstanding".to_string()))]
    );
}

#[test]
fn a_leader_holds_new_entries_while_a_batch_is_in_flight_for_at_most_the_hold() {
    let (mut t, mut node) = (tracker(), Node::leader());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    t.submit(43, Some(2), 1, DEADLINE);
    t.dispatch(&mut node, 1);
    assert_eq!(node.log.len(), 4, "held while 42 is in flight");
    t.dispatch(&mut node, 10_001);
    assert_eq!(node.log, [7, 8, 9, 42, 43], "sent after the hold");
}

#[test]
fn shutting_down_answers_everything_waiting() {
    let (mut t, mut node) = (tracker(), Node::follower());
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    t.submit(43, Some(2), 0, DEADLINE);
    t.shut_down();
    assert_eq!(
        answers(&mut t),
        [
            (1, Err("Shutdown".to_string())),
            (2, Err("Shutdown".to_string()))
        ]
    );
}

#[test]
fn each_life_numbers_its_requests_from_its_own_start_so_old_answers_find_nothing() {
    // The previous life sent request 1; this life numbers from 1000 on.
    let mut node = Node::follower();
    let mut t = Tracker::new(101, 1000, LIMITS);
    t.note_incarnation(LEADER, LEADERS, 0);
    t.submit(42, Some(1), 0, DEADLINE);
    t.dispatch(&mut node, 0);
    assert_eq!(messages(&mut t), ["->2 Append inc=101 b=1.2 [(1001, 42)]"]);
    t.on_outcomes(
        &node,
        LEADER,
        LEADERS,
        vec![(1, RemoteOutcome::Decided { idx: 0 })],
        1,
    );
    assert!(
        answers(&mut t).is_empty(),
        "an answer for the previous life"
    );
    t.on_outcomes(
        &node,
        LEADER,
        LEADERS,
        vec![(1001, RemoteOutcome::Decided { idx: 3 })],
        2,
    );
    assert_eq!(answers(&mut t), [(1, Ok(3))]);
}
