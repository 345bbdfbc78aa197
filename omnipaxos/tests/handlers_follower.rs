//! Handler tests for the follower role and Ballot Leader Election: one server in a known state,
//! one message in, and the exact messages (as trace lines) and storage writes that come out.
//! The state: server 2 follows server 1's ballot `2.1` in the accept phase with entries
//! `[10, 11]`, 1 decided (see `common/node.rs`).

mod common;
use common::node::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::ballot_leader_election::{HeartbeatMsg, HeartbeatReply, HeartbeatRequest};
use omnipaxos::messages::sequence_paxos::*;

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
    n.input(1, prepare(b1(), 0, Ballot::default(), 0));
    assert_outputs(
        &mut n,
        &["2->1 Promise n=2.1 na=0.0 dec=0 acc=0"],
        &["set_promise(2.1)"],
    );
    n.input(1, accept_sync(seq(1, 1), 1, 0, vec![10, 11]));
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
    n.input(1, prepare(b1(), 1, b1(), 2));
    n.settle();
    n.input(1, accept_sync(seq(2, 1), 0, 0, vec![]));
    assert_outputs(&mut n, &[], &[]);
    assert_eq!(n.op.get_accepted_idx(), 2);
}

#[test]
fn follower_accept_decide_in_sequence_is_appended_and_acknowledged() {
    let mut n = follower();
    n.input(1, accept_decide(seq(1, 2), 2, vec![12]));
    assert_outputs(
        &mut n,
        &["2->1 Accepted n=2.1 acc=3"],
        &["append_entries(+1)", "set_decided_idx(2)"],
    );
}

#[test]
fn follower_empty_accept_decide_is_a_probe_and_always_answered() {
    let mut n = follower();
    n.input(1, accept_decide(seq(1, 2), 1, vec![]));
    assert_outputs(&mut n, &["2->1 Accepted n=2.1 acc=2"], &[]);
}

#[test]
fn follower_duplicate_accept_decide_is_dropped() {
    let mut n = follower();
    let msg = accept_decide(seq(1, 2), 1, vec![12]);
    n.input(1, msg.clone());
    n.settle();
    n.input(1, msg);
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn follower_message_after_a_gap_asks_for_a_new_prepare() {
    let mut n = follower();
    n.input(1, decide(seq(1, 3), 2));
    assert_outputs(&mut n, &["2->1 PrepareReq n=2.1"], &[]);
}

#[test]
fn follower_decide_raises_the_decided_index_silently() {
    let mut n = follower();
    n.input(1, decide(seq(1, 2), 2));
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
    n.input(3, empty_promise());
    n.input(3, accepted(2));
    n.input(3, PaxosMsg::PrepareReq(PrepareReq { n: b1() }));
    n.input(
        3,
        PaxosMsg::NotAccepted(NotAccepted {
            n: Ballot::with(1, 9, 0, 3),
        }),
    );
    n.input(3, forward(b1(), seq(5, 1), vec![1]));
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

#[test]
fn follower_read_confirm_from_its_leader_is_answered() {
    let mut n = follower();
    n.input(1, PaxosMsg::ReadConfirm(ReadConfirm { n: b1(), round: 4 }));
    assert_outputs(&mut n, &["2->1 ReadConfirmed n=2.1 round=4"], &[]);
}

#[test]
fn follower_read_goes_to_the_leader_and_its_answer_serves_it() {
    let mut n = follower();
    n.op.read_index(42).unwrap();
    let out = n.out();
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("2->1 ReadIndexReq n=2.1 id="), "{out:?}");
    let id: u64 = out[0].rsplit('=').next().unwrap().parse().unwrap();
    n.input(
        1,
        PaxosMsg::ReadIndexResp(ReadIndexResp {
            n: b1(),
            id,
            index: 2,
        }),
    );
    assert_outputs(&mut n, &[], &[]);
    let mut served = Vec::new();
    n.op.take_read_states(&mut served);
    assert_eq!(served, vec![omnipaxos::ReadState { ctx: 42, index: 2 }]);
}

#[test]
fn follower_ignores_an_answer_to_a_read_it_did_not_ask() {
    let mut n = follower();
    n.input(
        1,
        PaxosMsg::ReadIndexResp(ReadIndexResp {
            n: b1(),
            id: 3,
            index: 0,
        }),
    );
    n.input(1, PaxosMsg::ReadIndexReq(ReadIndexReq { n: b1(), id: 3 }));
    n.input(
        1,
        PaxosMsg::ReadConfirmed(ReadConfirmed { n: b1(), round: 1 }),
    );
    assert_outputs(&mut n, &[], &[]);
    let mut served = Vec::new();
    n.op.take_read_states(&mut served);
    assert!(served.is_empty());
}

/// Ends server `n`'s current heartbeat round (its election timeout in ticks).
fn end_round(n: &mut Node) {
    for _ in 0..omnipaxos::ServerConfig::default().election_tick_timeout {
        n.op.tick();
    }
}

fn reply(round: u32, ballot: Ballot, leader: Ballot, happy: bool) -> HeartbeatMsg {
    HeartbeatMsg::Reply(HeartbeatReply {
        round,
        ballot,
        leader,
        happy,
    })
}

/// How server `n` answers a heartbeat request: its ballot, its leader, its happiness.
fn ble_view(n: &mut Node) -> Vec<String> {
    n.settle();
    n.out_ble();
    ble_input(n, 1, HeartbeatMsg::Request(HeartbeatRequest { round: 99 }));
    n.out_ble()
}

/// Seen in a kv_store cluster whose processes started a few milliseconds apart: server 2
/// picked server 3 (the top ballot, nobody had a leader yet), and one round later, server 3
/// still in its own first round (not quorum-connected yet), server 2 counted it as lost and
/// stood with a higher ballot: a leader change in the first 200 ms of every cluster.
#[test]
fn a_leader_picked_at_start_up_gets_a_round_to_become_quorum_connected() {
    let mut n = Node::new(2);
    let none = Ballot::default();
    let one = Ballot::with(1, 1, 0, 1);
    let three = Ballot::with(1, 1, 0, 3);
    end_round(&mut n);
    // Round 2: nobody has a leader; server 3 has the top ballot.
    ble_input(&mut n, 1, reply(2, one, none, false));
    ble_input(&mut n, 3, reply(2, three, none, false));
    end_round(&mut n);
    assert_eq!(
        ble_view(&mut n),
        ["2->1 HeartbeatReply r=99 b=1.2 leader=1.3 happy=true"]
    );
    // Round 3: server 1 follows 3; server 3 has not ended its first round yet.
    ble_input(&mut n, 1, reply(3, one, three, true));
    ble_input(&mut n, 3, reply(3, three, none, false));
    end_round(&mut n);
    assert_eq!(
        ble_view(&mut n),
        ["2->1 HeartbeatReply r=99 b=1.2 leader=1.3 happy=true"],
        "server 2 still follows server 3 and did not stand with a higher ballot"
    );
    // A leader that stays unhappy is replaced one round later, as any lost leader.
    ble_input(&mut n, 1, reply(4, one, three, true));
    ble_input(&mut n, 3, reply(4, three, none, false));
    end_round(&mut n);
    assert_eq!(
        ble_view(&mut n),
        ["2->1 HeartbeatReply r=99 b=2.2 leader=0.0 happy=true"]
    );
}
