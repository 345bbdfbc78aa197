//! Handler tests for what a member may ask of a server (DESIGN.md, security model): a
//! reconfiguration only to a newer, sane configuration; a compaction only from the leader the
//! receiver follows and only where the application allows it; no ballot at the top of the round
//! range. One server in a known state, one input, the exact messages and storage writes out.

mod common;
use common::node::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::errors::ConfigError;
use omnipaxos::messages::ballot_leader_election::{HeartbeatMsg, HeartbeatReply};
use omnipaxos::messages::sequence_paxos::*;
use omnipaxos::storage::StopSign;
use omnipaxos::util::NodeId;
use omnipaxos::{ClusterConfig, ProposeErr};

fn config(configuration_id: u32, nodes: Vec<NodeId>) -> ClusterConfig {
    ClusterConfig {
        configuration_id,
        nodes,
        flexible_quorum: None,
    }
}

/// Asserts that `reconfigure(next)` is refused as an invalid configuration naming `needle`,
/// and that nothing is written or sent.
#[track_caller]
fn assert_refused(n: &mut Node, next: ClusterConfig, needle: &str) {
    match n.op.reconfigure(next.clone(), Some(vec![7])) {
        Err(ProposeErr::ConfigError(ConfigError::InvalidConfig(why), cfg, md)) => {
            assert!(why.contains(needle), "{why:?} should mention {needle:?}");
            assert_eq!(
                (cfg, md),
                (next, Some(vec![7])),
                "the proposal is handed back"
            );
        }
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
    assert_outputs(n, &[], &[]);
}

#[test]
fn leader_reconfigure_to_the_current_or_an_older_id_is_refused() {
    // The attack: a StopSign naming the running configuration retired every node for good.
    let mut n = leader();
    assert_refused(&mut n, config(1, vec![1, 2, 3]), "greater than");
    assert_refused(&mut n, config(0, vec![1, 2, 3]), "non-zero");
    assert!(n.op.is_reconfigured().is_none());
}

#[test]
fn follower_reconfigure_with_a_stale_id_is_refused_before_it_is_forwarded() {
    let mut n = follower();
    assert_refused(&mut n, config(1, vec![1, 2]), "greater than");
}

#[test]
fn reconfigure_to_an_empty_duplicate_or_huge_node_list_is_refused() {
    let mut n = leader();
    assert_refused(&mut n, config(2, vec![]), "at least one");
    assert_refused(&mut n, config(2, vec![1, 2, 2]), "duplicate");
    assert_refused(&mut n, config(2, (1..=1025).collect()), "at most 1024");
}

#[test]
fn leader_reconfigure_to_a_newer_configuration_is_accepted() {
    let mut n = leader();
    n.op.reconfigure(config(2, vec![1, 2]), None).unwrap();
    assert_outputs(
        &mut n,
        &["1->2 AcceptStopSign n=2.1 seq=1.2 StopSign(c2 [1, 2])"],
        &["set_stopsign(Some)"],
    );
}

#[test]
fn leader_drops_a_forwarded_stopsign_that_is_not_newer() {
    let mut n = leader();
    let stale = StopSign::with(config(1, vec![1, 2, 3]), None);
    n.input(2, PaxosMsg::ForwardStopSign(stale));
    assert_outputs(&mut n, &[], &[]);
    let empty = StopSign::with(config(2, vec![]), None);
    n.input(2, PaxosMsg::ForwardStopSign(empty));
    assert_outputs(&mut n, &[], &[]);
    assert!(n.op.is_reconfigured().is_none());
}

#[test]
fn forwards_from_outside_the_configuration_are_dropped() {
    let mut n = leader();
    n.input(4, PaxosMsg::ProposalForward(vec![9]));
    n.input(4, PaxosMsg::ForwardStopSign(stopsign()));
    assert_outputs(&mut n, &[], &[]);
}

#[test]
fn follower_trim_from_its_leader_is_ignored_when_remote_compaction_is_off() {
    let mut n = follower();
    n.op.set_remote_compaction(false);
    n.input(1, PaxosMsg::Compaction(Compaction::Trim(1)));
    assert_outputs(&mut n, &[], &[]);
    assert_eq!(n.op.get_compacted_idx(), 0);
    // Turned on again (the published default), the leader's request is carried out.
    n.op.set_remote_compaction(true);
    n.input(1, PaxosMsg::Compaction(Compaction::Trim(1)));
    assert_outputs(&mut n, &[], &["atomic[Trim(1), SetCompactedIdx(1)]"]);
}

#[test]
fn follower_never_promises_a_ballot_at_the_top_of_the_range() {
    // The attack: three forged Prepares with round u32::MAX left the cluster without a leader
    // forever, as no server can stand with a higher round.
    let mut n = follower();
    let promise = n.op.get_promise();
    for round in [u32::MAX, Ballot::ROUND_LIMIT] {
        n.input(
            3,
            prepare(Ballot::with(1, round, 0, 3), 0, Ballot::default(), 0),
        );
        assert_outputs(&mut n, &[], &[]);
    }
    assert_eq!(n.op.get_promise(), promise);
    // One below the limit is an ordinary higher ballot.
    let high = Ballot::with(1, Ballot::ROUND_LIMIT - 1, 0, 3);
    n.input(3, prepare(high, 0, Ballot::default(), 0));
    assert_eq!(n.op.get_promise(), high);
}

#[test]
fn a_top_range_ballot_in_a_heartbeat_is_not_followed() {
    let mut n = follower();
    let forged = Ballot::with(1, u32::MAX, u32::MAX, 3);
    let reply = HeartbeatReply {
        round: 0,
        ballot: forged,
        leader: forged,
        happy: true,
    };
    ble_input(&mut n, 3, HeartbeatMsg::Reply(reply));
    assert!(n.out_ble().is_empty());
    let (leader, _) = n.op.get_current_leader().unzip();
    assert_ne!(leader, Some(3));
}
