//! Handler tests for the leader role, in the style of an engine test: one server in a known
//! state, one message in, and the exact messages (as trace lines) and storage writes that come
//! out. The state: server 1 leads ballot `2.1` in the accept phase, follower 2 synchronised with
//! an empty log, 3 not heard from (see `common/node.rs`).

mod common;
use common::node::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::sequence_paxos::*;

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
    n.input(2, empty_promise());
    assert_outputs(
        &mut n,
        &["1->2 AcceptSync n=2.1 seq=1.1 dec=0 sync@0 +0"],
        &["atomic[SetAcceptedRound(2.1), SetDecidedIndex(0)]"],
    );
}

#[test]
fn leader_late_promise_in_the_accept_phase_gets_its_own_sync() {
    let mut n = leader();
    n.input(3, empty_promise());
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
    n.input(2, accepted(1));
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
    let ack = accepted(1);
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
    let forward = forward(b1(), seq(77, 1), vec![5, 6]);
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
    n.input(2, accept_decide(seq(1, 2), 0, vec![1]));
    n.input(2, decide(seq(1, 2), 1));
    n.input(2, PaxosMsg::Compaction(Compaction::Trim(0)));
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn leader_read_index_req_is_confirmed_in_one_round_then_answered() {
    let mut n = leader();
    n.input(2, PaxosMsg::ReadIndexReq(ReadIndexReq { n: b1(), id: 5 }));
    // The round starts when messages are taken: one ReadConfirm per follower.
    assert_outputs(
        &mut n,
        &[
            "1->2 ReadConfirm n=2.1 round=1",
            "1->3 ReadConfirm n=2.1 round=1",
        ],
        &[],
    );
    n.input(
        2,
        PaxosMsg::ReadConfirmed(ReadConfirmed { n: b1(), round: 1 }),
    );
    assert_outputs(&mut n, &["1->2 ReadIndexResp n=2.1 id=5 index=0"], &[]);
}

#[test]
fn leader_read_confirmed_for_another_round_is_dropped() {
    let mut n = leader();
    n.op.read_index(1).unwrap();
    n.settle();
    n.input(
        2,
        PaxosMsg::ReadConfirmed(ReadConfirmed { n: b1(), round: 7 }),
    );
    assert_outputs(&mut n, &[], &[]);
    let mut served = Vec::new();
    n.op.take_read_states(&mut served);
    assert!(served.is_empty());
}
