//! Handler tests in the style of an engine test: one server in a known state, one message in,
//! and the exact messages (as trace lines) and storage writes that come out. One test (at
//! least) per message kind and role; the role that must ignore a message is tested too.
//!
//! The states are reached through the public API only: server 2 follows server 1's ballot
//! `2.1` in the accept phase with entries `[10, 11]` (1 decided), or server 1 leads ballot `2.1`
//! in the accept phase with follower 2 synchronised and 3 not heard from.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::ballot_leader_election::{
    BLEMessage, HeartbeatMsg, HeartbeatReply, HeartbeatRequest,
};
use omnipaxos::messages::sequence_paxos::*;
use omnipaxos::messages::Message;
use omnipaxos::simulation::SimStorage;
use omnipaxos::storage::StopSign;
use omnipaxos::util::{LogSync, NodeId, SequenceNumber};
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;

type Store = SimStorage<MemoryStorage<u64>>;

/// Ballot `2.1`: what server 1 gets from `try_become_leader` on a fresh cluster.
fn b1() -> Ballot {
    Ballot::with(1, 2, 0, 1)
}

fn seq(session: u64, counter: u64) -> SequenceNumber {
    SequenceNumber { session, counter }
}

struct Node {
    pid: NodeId,
    op: OmniPaxos<u64, Store>,
    store: Store,
}

impl Node {
    fn new(pid: NodeId) -> Self {
        let store = SimStorage::new(MemoryStorage::default());
        let cluster = ClusterConfig {
            configuration_id: 1,
            nodes: vec![1, 2, 3],
            flexible_quorum: None,
        };
        let server = ServerConfig {
            pid,
            ..Default::default()
        };
        let op = cluster.build_for_server(server, store.clone()).unwrap();
        store.record_writes();
        Node { pid, op, store }
    }

    /// Hands over one Sequence Paxos message from `from`.
    fn input(&mut self, from: NodeId, msg: PaxosMsg<u64>) {
        self.op
            .handle_incoming(Message::SequencePaxos(PaxosMessage {
                from,
                to: self.pid,
                msg,
            }));
    }

    /// The Sequence Paxos messages that came out (heartbeats left out), as trace lines.
    fn out(&mut self) -> Vec<String> {
        let mut buffer = Vec::new();
        self.op.take_outgoing_messages(&mut buffer);
        buffer
            .iter()
            .filter(|m| matches!(m, Message::SequencePaxos(_)))
            .map(|m| m.to_string())
            .collect()
    }

    /// The heartbeats that came out, as trace lines.
    fn out_ble(&mut self) -> Vec<String> {
        let mut buffer = Vec::new();
        self.op.take_outgoing_messages(&mut buffer);
        buffer
            .iter()
            .filter(|m| matches!(m, Message::BLE(_)))
            .map(|m| m.to_string())
            .collect()
    }

    /// The storage writes since the last call.
    fn writes(&mut self) -> Vec<String> {
        self.store.take_write_log()
    }

    /// Forgets what came out so far: the state is set up.
    fn settle(&mut self) {
        self.out();
        self.writes();
    }
}

/// Server 2 following ballot `2.1` of server 1 in the accept phase, log `[10, 11]`, 1 decided.
fn follower() -> Node {
    let mut n = Node::new(2);
    n.input(
        1,
        PaxosMsg::Prepare(Prepare {
            n: b1(),
            decided_idx: 0,
            n_accepted: Ballot::default(),
            accepted_idx: 0,
        }),
    );
    n.input(
        1,
        PaxosMsg::AcceptSync(AcceptSync {
            n: b1(),
            seq_num: seq(1, 1),
            decided_idx: 1,
            log_sync: LogSync {
                decided_snapshot: None,
                suffix: vec![10, 11],
                sync_idx: 0,
                stopsign: None,
            },
        }),
    );
    n.settle();
    n
}

/// Server 1 leading ballot `2.1` in the accept phase, follower 2 synchronised (log empty), 3
/// silent.
fn leader() -> Node {
    let mut n = Node::new(1);
    n.op.try_become_leader();
    n.input(
        2,
        PaxosMsg::Promise(Promise {
            n: b1(),
            n_accepted: Ballot::default(),
            decided_idx: 0,
            accepted_idx: 0,
            log_sync: None,
        }),
    );
    n.input(
        2,
        PaxosMsg::Accepted(Accepted {
            n: b1(),
            accepted_idx: 0,
        }),
    );
    n.settle();
    n
}

fn stopsign() -> StopSign {
    StopSign::with(
        ClusterConfig {
            configuration_id: 2,
            nodes: vec![1, 2],
            flexible_quorum: None,
        },
        None,
    )
}

fn ble_input(n: &mut Node, from: NodeId, msg: HeartbeatMsg) {
    n.op.handle_incoming(Message::BLE(BLEMessage {
        from,
        to: n.pid,
        msg,
    }));
}

/// Asserts the messages and the storage writes one input caused.
#[track_caller]
fn assert_outputs(n: &mut Node, messages: &[&str], writes: &[&str]) {
    assert_eq!(n.out(), messages, "messages out");
    assert_eq!(n.writes(), writes, "storage writes");
}

// ---------------------------------------------------------------------------------------------
// Leader role

#[test]
fn leader_promise_completing_a_read_quorum_adopts_the_log_and_syncs_the_follower() {
    let mut n = Node::new(1);
    n.op.try_become_leader();
    assert_outputs(
        &mut n,
        &[
            "1->2 Prepare n=2.1 dec=0 na=0.0 acc=0",
            "1->3 Prepare n=2.1 dec=0 na=0.0 acc=0",
        ],
        &["set_promise(2.1)"],
    );
    n.input(
        2,
        PaxosMsg::Promise(Promise {
            n: b1(),
            n_accepted: Ballot::default(),
            decided_idx: 0,
            accepted_idx: 0,
            log_sync: None,
        }),
    );
    assert_outputs(
        &mut n,
        &["1->2 AcceptSync n=2.1 seq=1.1 dec=0 sync@0 +0"],
        &["atomic[SetAcceptedRound(2.1), SetDecidedIndex(0)]"],
    );
}

#[test]
fn leader_late_promise_in_the_accept_phase_gets_its_own_sync() {
    let mut n = leader();
    n.input(
        3,
        PaxosMsg::Promise(Promise {
            n: b1(),
            n_accepted: Ballot::default(),
            decided_idx: 0,
            accepted_idx: 0,
            log_sync: None,
        }),
    );
    assert_outputs(
        &mut n,
        &["1->3 AcceptSync n=2.1 seq=1.1 dec=0 sync@0 +0"],
        &[],
    );
}

#[test]
fn leader_append_is_written_once_and_streamed_to_synced_followers() {
    let mut n = leader();
    n.op.append(5).unwrap();
    n.op.append(6).unwrap();
    assert_outputs(
        &mut n,
        &["1->2 AcceptDecide n=2.1 seq=1.2 dec=0 +2"],
        &["append_entries(+2)"],
    );
}

#[test]
fn leader_accepted_completing_a_write_quorum_decides() {
    let mut n = leader();
    n.op.append(5).unwrap();
    n.settle();
    n.input(
        2,
        PaxosMsg::Accepted(Accepted {
            n: b1(),
            accepted_idx: 1,
        }),
    );
    assert_outputs(
        &mut n,
        &["1->2 Decide n=2.1 seq=1.3 dec=1"],
        &["set_decided_idx(1)"],
    );
}

#[test]
fn leader_accepted_with_nothing_new_is_answered_with_the_decided_index() {
    let mut n = leader();
    n.op.append(5).unwrap();
    n.settle();
    let ack = PaxosMsg::Accepted(Accepted {
        n: b1(),
        accepted_idx: 1,
    });
    n.input(2, ack.clone());
    n.settle();
    n.input(2, ack);
    assert_outputs(&mut n, &["1->2 Decide n=2.1 seq=1.4 dec=1"], &[]);
}

#[test]
fn leader_prepare_req_gets_a_fresh_prepare() {
    let mut n = leader();
    n.input(2, PaxosMsg::PrepareReq(PrepareReq { n: b1() }));
    assert_outputs(&mut n, &["1->2 Prepare n=2.1 dec=0 na=2.1 acc=0"], &[]);
}

#[test]
fn leader_not_accepted_with_a_higher_ballot_steps_down() {
    let mut n = leader();
    n.input(
        3,
        PaxosMsg::NotAccepted(NotAccepted {
            n: Ballot::with(1, 3, 0, 3),
        }),
    );
    assert_outputs(&mut n, &[], &[]);
    assert_eq!(
        n.op.get_current_leader(),
        Some((1, false)),
        "no longer accepting"
    );
}

#[test]
fn leader_forwarded_entries_are_appended_once() {
    let mut n = leader();
    let forward = PaxosMsg::ForwardedEntries(ForwardedEntries {
        n: b1(),
        seq_num: seq(77, 1),
        entries: vec![5, 6],
    });
    n.input(2, forward.clone());
    assert_outputs(
        &mut n,
        &["1->2 AcceptDecide n=2.1 seq=1.2 dec=0 +2"],
        &["append_entries(+2)"],
    );
    n.input(2, forward);
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn leader_forward_for_another_ballot_is_dropped() {
    let mut n = leader();
    n.input(
        2,
        PaxosMsg::ForwardedEntries(ForwardedEntries {
            n: Ballot::with(1, 1, 0, 1),
            seq_num: seq(77, 1),
            entries: vec![5],
        }),
    );
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn leader_plain_proposal_forward_is_appended() {
    let mut n = leader();
    n.input(2, PaxosMsg::ProposalForward(vec![7]));
    assert_outputs(
        &mut n,
        &["1->2 AcceptDecide n=2.1 seq=1.2 dec=0 +1"],
        &["append_entry"],
    );
}

#[test]
fn leader_forwarded_stopsign_is_accepted_and_streamed() {
    let mut n = leader();
    n.input(2, PaxosMsg::ForwardStopSign(stopsign()));
    assert_outputs(
        &mut n,
        &["1->2 AcceptStopSign n=2.1 seq=1.2 StopSign(c2 [1, 2])"],
        &["set_stopsign(Some)"],
    );
}

#[test]
fn leader_ignores_what_only_followers_handle() {
    let mut n = leader();
    n.input(
        2,
        PaxosMsg::AcceptDecide(AcceptDecide {
            n: b1(),
            seq_num: seq(1, 2),
            decided_idx: 0,
            entries: vec![1],
        }),
    );
    n.input(
        2,
        PaxosMsg::Decide(Decide {
            n: b1(),
            seq_num: seq(1, 2),
            decided_idx: 1,
        }),
    );
    n.input(2, PaxosMsg::Compaction(Compaction::Trim(0)));
    assert_outputs(&mut n, &[], &[]);
}

// ---------------------------------------------------------------------------------------------
// Follower role

#[test]
fn follower_prepare_with_a_higher_ballot_is_promised() {
    let mut n = follower();
    n.input(
        3,
        PaxosMsg::Prepare(Prepare {
            n: Ballot::with(1, 3, 0, 3),
            decided_idx: 1,
            n_accepted: b1(),
            accepted_idx: 2,
        }),
    );
    assert_outputs(
        &mut n,
        &["2->3 Promise n=3.3 na=2.1 dec=1 acc=2"],
        &["set_promise(3.3)"],
    );
}

#[test]
fn follower_prepare_with_a_lower_ballot_is_refused() {
    let mut n = follower();
    n.input(
        3,
        PaxosMsg::Prepare(Prepare {
            n: Ballot::with(1, 1, 0, 3),
            decided_idx: 0,
            n_accepted: Ballot::default(),
            accepted_idx: 0,
        }),
    );
    assert_outputs(&mut n, &["2->3 NotAccepted n=2.1"], &[]);
}

#[test]
fn follower_accept_sync_while_promised_is_applied_and_acknowledged() {
    let mut n = Node::new(2);
    n.input(
        1,
        PaxosMsg::Prepare(Prepare {
            n: b1(),
            decided_idx: 0,
            n_accepted: Ballot::default(),
            accepted_idx: 0,
        }),
    );
    assert_outputs(
        &mut n,
        &["2->1 Promise n=2.1 na=0.0 dec=0 acc=0"],
        &["set_promise(2.1)"],
    );
    n.input(
        1,
        PaxosMsg::AcceptSync(AcceptSync {
            n: b1(),
            seq_num: seq(1, 1),
            decided_idx: 1,
            log_sync: LogSync {
                decided_snapshot: None,
                suffix: vec![10, 11],
                sync_idx: 0,
                stopsign: None,
            },
        }),
    );
    assert_outputs(
        &mut n,
        &["2->1 Accepted n=2.1 acc=2"],
        &["atomic[SetAcceptedRound(2.1), AppendOnPrefix(0, +2), SetStopsign(None), SetDecidedIndex(1)]"],
    );
}

#[test]
fn follower_stale_accept_sync_of_its_round_is_dropped() {
    let mut n = follower();
    // The leader prepares it again (it lost track); a stale copy of an earlier, shorter sync of
    // the same round arrives before the fresh one.
    n.input(
        1,
        PaxosMsg::Prepare(Prepare {
            n: b1(),
            decided_idx: 1,
            n_accepted: b1(),
            accepted_idx: 2,
        }),
    );
    n.settle();
    n.input(
        1,
        PaxosMsg::AcceptSync(AcceptSync {
            n: b1(),
            seq_num: seq(2, 1),
            decided_idx: 0,
            log_sync: LogSync {
                decided_snapshot: None,
                suffix: vec![],
                sync_idx: 0,
                stopsign: None,
            },
        }),
    );
    assert_outputs(&mut n, &[], &[]);
    assert_eq!(n.op.get_accepted_idx(), 2);
}

#[test]
fn follower_accept_decide_in_sequence_is_appended_and_acknowledged() {
    let mut n = follower();
    n.input(
        1,
        PaxosMsg::AcceptDecide(AcceptDecide {
            n: b1(),
            seq_num: seq(1, 2),
            decided_idx: 2,
            entries: vec![12],
        }),
    );
    assert_outputs(
        &mut n,
        &["2->1 Accepted n=2.1 acc=3"],
        &["append_entries(+1)", "set_decided_idx(2)"],
    );
}

#[test]
fn follower_empty_accept_decide_is_a_probe_and_always_answered() {
    let mut n = follower();
    n.input(
        1,
        PaxosMsg::AcceptDecide(AcceptDecide {
            n: b1(),
            seq_num: seq(1, 2),
            decided_idx: 1,
            entries: vec![],
        }),
    );
    assert_outputs(&mut n, &["2->1 Accepted n=2.1 acc=2"], &[]);
}

#[test]
fn follower_duplicate_accept_decide_is_dropped() {
    let mut n = follower();
    let msg = PaxosMsg::AcceptDecide(AcceptDecide {
        n: b1(),
        seq_num: seq(1, 2),
        decided_idx: 1,
        entries: vec![12],
    });
    n.input(1, msg.clone());
    n.settle();
    n.input(1, msg);
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn follower_message_after_a_gap_asks_for_a_new_prepare() {
    let mut n = follower();
    n.input(
        1,
        PaxosMsg::Decide(Decide {
            n: b1(),
            seq_num: seq(1, 3),
            decided_idx: 2,
        }),
    );
    assert_outputs(&mut n, &["2->1 PrepareReq n=2.1"], &[]);
}

#[test]
fn follower_decide_raises_the_decided_index_silently() {
    let mut n = follower();
    n.input(
        1,
        PaxosMsg::Decide(Decide {
            n: b1(),
            seq_num: seq(1, 2),
            decided_idx: 2,
        }),
    );
    assert_outputs(&mut n, &[], &["set_decided_idx(2)"]);
}

#[test]
fn follower_accept_stopsign_is_stored_and_acknowledged() {
    let mut n = follower();
    n.input(
        1,
        PaxosMsg::AcceptStopSign(AcceptStopSign {
            n: b1(),
            seq_num: seq(1, 2),
            ss: stopsign(),
        }),
    );
    assert_outputs(
        &mut n,
        &["2->1 Accepted n=2.1 acc=3"],
        &["set_stopsign(Some)"],
    );
}

#[test]
fn follower_trim_from_its_leader_is_applied() {
    let mut n = follower();
    n.input(1, PaxosMsg::Compaction(Compaction::Trim(1)));
    assert_outputs(&mut n, &[], &["atomic[Trim(1), SetCompactedIdx(1)]"]);
}

#[test]
fn follower_trim_from_another_server_and_snapshots_without_snapshot_type_are_ignored() {
    let mut n = follower();
    n.input(3, PaxosMsg::Compaction(Compaction::Trim(1)));
    n.input(1, PaxosMsg::Compaction(Compaction::Snapshot(None)));
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn follower_append_is_forwarded_to_its_leader() {
    let mut n = follower();
    n.op.append(9).unwrap();
    assert_outputs(&mut n, &["2->1 ForwardedEntries n=2.1 #1 +1"], &[]);
}

#[test]
fn follower_plain_proposal_forward_is_passed_to_its_leader() {
    let mut n = follower();
    n.input(3, PaxosMsg::ProposalForward(vec![9]));
    assert_outputs(&mut n, &["2->1 ForwardedEntries n=2.1 #1 +1"], &[]);
}

#[test]
fn follower_forwarded_stopsign_is_passed_to_its_leader() {
    let mut n = follower();
    n.input(3, PaxosMsg::ForwardStopSign(stopsign()));
    assert_outputs(&mut n, &["2->1 ForwardStopSign StopSign(c2 [1, 2])"], &[]);
}

#[test]
fn follower_ignores_what_only_leaders_handle() {
    let mut n = follower();
    n.input(
        3,
        PaxosMsg::Promise(Promise {
            n: b1(),
            n_accepted: Ballot::default(),
            decided_idx: 0,
            accepted_idx: 0,
            log_sync: None,
        }),
    );
    n.input(
        3,
        PaxosMsg::Accepted(Accepted {
            n: b1(),
            accepted_idx: 2,
        }),
    );
    n.input(3, PaxosMsg::PrepareReq(PrepareReq { n: b1() }));
    n.input(
        3,
        PaxosMsg::NotAccepted(NotAccepted {
            n: Ballot::with(1, 9, 0, 3),
        }),
    );
    n.input(
        3,
        PaxosMsg::ForwardedEntries(ForwardedEntries {
            n: b1(),
            seq_num: seq(5, 1),
            entries: vec![1],
        }),
    );
    assert_outputs(&mut n, &[], &[]);
}

// ---------------------------------------------------------------------------------------------
// Ballot Leader Election

#[test]
fn heartbeat_request_is_answered_with_the_own_ballot() {
    let mut n = Node::new(2);
    n.settle();
    ble_input(
        &mut n,
        1,
        HeartbeatMsg::Request(HeartbeatRequest { round: 7 }),
    );
    assert_eq!(
        n.out_ble(),
        ["2->1 HeartbeatReply r=7 b=1.2 leader=0.0 happy=false"]
    );
}

#[test]
fn heartbeat_reply_of_another_round_changes_nothing() {
    let mut n = Node::new(2);
    n.settle();
    ble_input(
        &mut n,
        1,
        HeartbeatMsg::Reply(HeartbeatReply {
            round: 99,
            ballot: b1(),
            leader: b1(),
            happy: true,
        }),
    );
    assert!(n.out_ble().is_empty());
    assert_eq!(n.writes(), Vec::<String>::new());
}
