//! Leader changes that no failure called for. A restarted follower whose first rounds end
//! before it hears the leader, survivors that notice a leader's death a few ticks apart, and a
//! one-way cut from the leader to one follower each cost the cluster a leader change (or two)
//! before the election rules below; each scenario counts the changes.

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;

/// The highest ballot any live server has promised: it rises once per leader change.
fn top_promise(sim: &Sim) -> Ballot {
    sim.live_pids()
        .iter()
        .filter_map(|&pid| sim.server(pid))
        .map(|s| s.get_promise())
        .max()
        .unwrap_or_default()
}

/// Steps `steps` times and counts how often the highest promised ballot rose.
fn changes_over(sim: &mut Sim, steps: usize) -> usize {
    let mut last = top_promise(sim);
    let mut changes = 0;
    for _ in 0..steps {
        sim.step();
        let now = top_promise(sim);
        if now > last {
            changes += 1;
            last = now;
        }
    }
    changes
}

/// Appends `values` on `pid` and runs until servers `on` decided them all.
fn append_and_decide(sim: &mut Sim, pid: NodeId, values: std::ops::Range<u64>, on: &[NodeId]) {
    let target = sim.server(pid).unwrap().get_decided_idx() + values.clone().count();
    for v in values {
        sim.append(pid, v).unwrap();
    }
    sim.run_until(20 * ELECTION_TICKS, |s| s.decided_on(on, target))
        .expect("the appends decide");
}

/// Three servers led by 3, three entries decided everywhere, then follower 1 crashed.
fn led_by_3_with_1_crashed(seed: u64) -> Sim {
    let mut sim = led_by(3, 3, seed);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    append_and_decide(&mut sim, 3, 0..3, &[1, 2, 3]);
    sim.crash(1);
    sim
}

#[test]
fn a_restarted_follower_that_does_not_hear_the_leader_at_first_keeps_following_it() {
    // Server 1 restarts while the leader's messages to it are still lost (its connection is
    // not up yet, or the leader is too busy to answer within the round): for two rounds it
    // hears only server 2, which still follows the leader.
    let mut sim = led_by_3_with_1_crashed(41);
    append_and_decide(&mut sim, 3, 3..6, &[2, 3]);
    sim.cut_link(3, 1);
    sim.restart(1).unwrap();
    assert_eq!(changes_over(&mut sim, 2 * ELECTION_TICKS), 0);
    sim.heal_link(3, 1);
    assert_eq!(changes_over(&mut sim, 20 * ELECTION_TICKS), 0);
    assert_eq!(sim.stable_leader(), Some(3), "the leader never changed");
    assert!(sim.all_decided(6), "the restarted follower caught up");
}

#[test]
fn a_restarted_follower_whose_leader_is_gone_stands_once_nobody_heard_it() {
    // The grace of a restarted server lasts only while a peer vouches for its recovered
    // leader: with that leader dead, the cluster elects another within a few rounds.
    let mut sim = led_by_3_with_1_crashed(42);
    sim.crash(3);
    sim.restart(1).unwrap();
    let leader = sim
        .run_until_stable_leader(6 * ELECTION_TICKS)
        .expect("1 and 2 elect a leader");
    assert_ne!(leader, 3);
    append_and_decide(&mut sim, leader, 3..4, &[1, 2]);
}

#[test]
fn a_dead_leader_is_replaced_once_even_when_survivors_notice_it_apart() {
    for seed in 0..20 {
        let mut sim = led_by(5, 5, 500 + seed);
        assert_eq!(sim.run_until_stable_leader(50).unwrap(), 5);
        // Restarts put the survivors' heartbeat rounds out of step with each other, as the
        // rounds of separate processes are: each notices the death at a different tick.
        for (pid, lag) in [(1, 1), (2, 3), (3, 2)] {
            sim.crash(pid);
            sim.run(lag);
            sim.restart(pid).unwrap();
        }
        assert_eq!(sim.run_until_stable_leader(20 * ELECTION_TICKS).unwrap(), 5);
        append_and_decide(&mut sim, 5, 0..2, &[1, 2, 3, 4, 5]);
        sim.crash(5);
        let changes = changes_over(&mut sim, 30 * ELECTION_TICKS);
        assert_eq!(changes, 1, "seed {seed}: one failure, one new leader");
        let leader = sim.stable_leader().expect("a stable new leader");
        append_and_decide(&mut sim, leader, 2..3, &[1, 2, 3, 4]);
    }
}

#[test]
fn a_one_way_cut_from_the_leader_to_a_follower_costs_at_most_one_change() {
    for seed in 0..10 {
        let mut sim = led_by(3, 3, 600 + seed);
        assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
        append_and_decide(&mut sim, 3, 0..2, &[1, 2, 3]);
        sim.cut_link(3, 1);
        let mut changes = changes_over(&mut sim, 5 * ELECTION_TICKS);
        for v in 2..12 {
            let leader = sim.leader().expect("a leader throughout the cut");
            sim.append(leader, v).unwrap();
            changes += changes_over(&mut sim, 3 * ELECTION_TICKS);
        }
        assert!(changes <= 1, "seed {seed}: {changes} leader changes");
        let leader = sim.leader().unwrap();
        let quorum: Vec<NodeId> = [2, leader].into_iter().collect();
        sim.run_until(20 * ELECTION_TICKS, |s| s.decided_on(&quorum, 12))
            .expect("every append decides during the cut");
        sim.heal_link(3, 1);
        sim.run_until(20 * ELECTION_TICKS, |s| s.all_decided(12))
            .expect("everyone decides once the link heals");
        assert_eq!(changes_over(&mut sim, 20 * ELECTION_TICKS), 0);
    }
}

#[test]
fn survivors_that_promised_the_leader_before_electing_it_replace_it_once() {
    // Followers usually promise a new leader's ballot (its Prepare) before their own election
    // round ends and names it: election then notes that promise as one to watch. When that
    // leader later died, the watched promise made each survivor take the dead leader back as
    // its leader in the round after it stood, skip the wait for a higher rival, and elect
    // itself: two leaders in a row, on every death, on real processes.
    for seed in 0..40 {
        let mut sim = led_by(3, 3, 900 + seed);
        assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
        // Rounds out of step, as separate processes' are.
        for (pid, lag) in [(1, 1 + seed as usize % 3), (2, 2 + seed as usize % 2)] {
            sim.crash(pid);
            sim.run(lag);
            sim.restart(pid).unwrap();
        }
        let first = sim.run_until_stable_leader(20 * ELECTION_TICKS).unwrap();
        append_and_decide(&mut sim, first, 0..2, &[1, 2, 3]);
        let mut leader = first;
        for death in 0..3u64 {
            sim.crash(leader);
            let changes = changes_over(&mut sim, 30 * ELECTION_TICKS);
            assert_eq!(
                changes, 1,
                "seed {seed}, death {death}: one failure, one new leader"
            );
            let next = sim.stable_leader().expect("a stable new leader");
            sim.restart(leader).unwrap();
            sim.run_until(20 * ELECTION_TICKS, |s| s.stable_leader() == Some(next))
                .expect("the restarted server follows");
            append_and_decide(
                &mut sim,
                next,
                10 * (death + 1)..10 * (death + 1) + 1,
                &[1, 2, 3],
            );
            leader = next;
        }
    }
}
