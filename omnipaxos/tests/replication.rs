//! Sequence Paxos replication on the simulator: appends anywhere decide everywhere, in order and
//! once each; batching; reads return the documented `LogEntry` variants.

mod common;
use common::*;
use omnipaxos::simulation::SimConfig;
use omnipaxos::util::LogEntry;

#[test]
fn appends_on_leader_and_followers_decide_everywhere_once_in_order() {
    for n in [3u64, 5] {
        let mut sim = cluster(n, 11);
        let leader = sim.run_until_stable_leader(50).unwrap();
        let mut expected = Vec::new();
        for i in 0..60 {
            let pid = 1 + (i % n);
            sim.append(pid, i).unwrap();
            expected.push(i);
            if i % 7 == 0 {
                sim.step();
            }
        }
        decide_all(&mut sim, 60, 200);
        let reference = decided_values(&sim, leader);
        let mut sorted = reference.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "every entry decided exactly once");
        for pid in 1..=n {
            assert_eq!(decided_values(&sim, pid), reference, "server {pid} agrees");
        }
        // Entries proposed on one server keep their relative order.
        for origin in 1..=n {
            let mine: Vec<u64> = reference
                .iter()
                .copied()
                .filter(|v| 1 + v % n == origin)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "order of server {origin}'s entries"
            );
        }
    }
}

#[test]
fn appends_made_before_any_leader_exists_are_not_lost() {
    let mut sim = cluster(5, 2);
    for pid in 1..=5 {
        sim.append(pid, pid * 10).unwrap();
    }
    sim.run_until_stable_leader(50).unwrap();
    decide_all(&mut sim, 5, 100);
    let mut got = decided_values(&sim, 1);
    got.sort();
    assert_eq!(got, vec![10, 20, 30, 40, 50]);
}

#[test]
fn batching_decides_in_steps_of_batch_size_and_flushes_on_the_timer() {
    let mut config = SimConfig::new(vec![1, 2, 3], 5);
    config.server_config.batch_size = 5;
    config.server_config.flush_batch_tick_timeout = 50;
    let mut sim = cluster_with(config);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..4 {
        sim.append(leader, v).unwrap();
    }
    sim.step();
    let server = sim.server(leader).unwrap();
    assert_eq!(server.get_batched_len(), 4);
    assert_eq!(
        server.get_accepted_idx(),
        0,
        "batched entries are not in the log yet"
    );
    assert!(server.read(0).is_none());
    sim.append(leader, 4).unwrap();
    sim.step();
    assert!(sim.all_decided(5), "a full batch decides at once");
    let mut decided_steps = vec![];
    for v in 5..17 {
        sim.append(leader, v).unwrap();
        sim.step();
        decided_steps.push(sim.server(leader).unwrap().get_decided_idx());
    }
    assert!(
        decided_steps.iter().all(|d| d % 5 == 0),
        "steps of 5: {decided_steps:?}"
    );
    assert_eq!(sim.server(leader).unwrap().get_decided_idx(), 15);
    // The two left over decide when the flush timer fires.
    let steps = sim
        .run_until(60, |s| s.all_decided(17))
        .expect("flush timer decides the rest");
    assert!(steps <= 50, "within one flush timeout, took {steps}");
}

#[test]
fn followers_write_each_leader_batch_at_once() {
    let mut config = SimConfig::new(vec![1, 2, 3], 6);
    config.server_config.batch_size = 3;
    let mut sim = cluster_with(config);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..9 {
        sim.append(leader, v).unwrap();
    }
    sim.step();
    assert!(
        sim.all_decided(9),
        "three full batches decide within one step"
    );
    for pid in 1..=3 {
        assert_eq!(sim.server(pid).unwrap().get_batched_len(), 0);
        assert_eq!(decided_values(&sim, pid), (0..9).collect::<Vec<_>>());
    }
}

#[test]
fn reads_return_decided_undecided_and_none() {
    let mut sim = cluster(3, 8);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..3 {
        sim.append(leader, v).unwrap();
    }
    decide_all(&mut sim, 3, 20);
    // Cut the leader off so that the next entries stay undecided.
    sim.isolate(leader);
    sim.append(leader, 3).unwrap();
    sim.append(leader, 4).unwrap();
    let server = sim.server(leader).unwrap();
    assert_eq!(server.get_decided_idx(), 3);
    assert_eq!(server.get_accepted_idx(), 5);
    assert_eq!(server.read(1), Some(LogEntry::Decided(1)));
    assert_eq!(server.read(3), Some(LogEntry::Undecided(3)));
    assert_eq!(server.read(5), None, "beyond the accepted log");
    assert_eq!(
        server.read_entries(2..4),
        Some(vec![LogEntry::Decided(2), LogEntry::Undecided(3)])
    );
    assert_eq!(server.read_entries(3..).map(|v| v.len()), Some(2));
    assert_eq!(server.read_entries(..=1).map(|v| v.len()), Some(2));
    assert_eq!(server.read_entries(0..9), None);
    assert_eq!(server.read_entries(2..2), None);
    assert_eq!(
        server.read_decided_suffix(1),
        Some(vec![LogEntry::Decided(1), LogEntry::Decided(2)])
    );
    assert_eq!(server.read_decided_suffix(3), None);
}

#[test]
fn trimmed_prefix_reads_as_one_trimmed_entry() {
    let mut sim = cluster(3, 12);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..6 {
        sim.append(leader, v).unwrap();
    }
    decide_all(&mut sim, 6, 20);
    sim.server_mut(leader).unwrap().trim(Some(4)).unwrap();
    sim.step();
    for pid in 1..=3 {
        let s = sim.server(pid).unwrap();
        assert_eq!(s.get_compacted_idx(), 4);
        assert_eq!(s.read(2), Some(LogEntry::Trimmed(4)));
        assert_eq!(
            s.read_entries(1..6),
            Some(vec![
                LogEntry::Trimmed(4),
                LogEntry::Decided(4),
                LogEntry::Decided(5)
            ])
        );
    }
}

#[test]
fn a_restarted_follower_catches_up_from_its_storage() {
    let mut sim = cluster(3, 13);
    let leader = sim.run_until_stable_leader(50).unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    for v in 0..5 {
        sim.append(leader, v).unwrap();
    }
    decide_all(&mut sim, 5, 20);
    sim.crash(follower);
    for v in 5..10 {
        sim.append(leader, v).unwrap();
    }
    sim.run(5);
    sim.restart(follower).unwrap();
    assert_eq!(
        sim.server(follower).unwrap().get_decided_idx(),
        5,
        "restored from storage"
    );
    decide_all(&mut sim, 10, 200);
    assert_eq!(decided_values(&sim, follower), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_lossy_duplicating_reordering_network_still_decides_everything_once() {
    for seed in 0..10 {
        let mut sim = lossy_cluster(5, seed);
        sim.run_until_stable_leader(500).unwrap();
        for v in 0..40 {
            let pid = 1 + v % 5;
            sim.append(pid, v).unwrap();
            sim.step();
        }
        // Losses can drop forwards (docs/lost_appends.md); what decides must decide everywhere.
        sim.run(400);
        let decided = sim.chosen().len();
        assert!(decided >= 30, "seed {seed}: only {decided} of 40 decided");
        sim.run_until(400, |s| s.all_decided(decided)).unwrap();
    }
}

#[test]
fn the_leader_crashes_restarts_and_catches_up() {
    let mut sim = cluster(3, 14);
    let old = sim.run_until_stable_leader(50).unwrap();
    for v in 0..5 {
        sim.append(old, v).unwrap();
    }
    decide_all(&mut sim, 5, 20);
    sim.crash(old);
    let new = sim
        .run_until(50, |s| s.leader().is_some())
        .map(|_| sim.leader().unwrap())
        .unwrap();
    for v in 5..8 {
        sim.append(new, v).unwrap();
    }
    sim.run_until(50, |s| s.all_decided(8)).unwrap();
    sim.restart(old).unwrap();
    decide_all(&mut sim, 8, 200);
    assert_eq!(decided_values(&sim, old), (0..8).collect::<Vec<_>>());
}

#[test]
fn ui_states_show_leader_ballot_heartbeats_and_accepted_indexes() {
    let mut sim = cluster_with(SimConfig::new(vec![2, 4, 6], 15));
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..3 {
        sim.append(leader, v).unwrap();
    }
    decide_all(&mut sim, 3, 20);
    sim.run(ELECTION_TICKS);
    let ui = sim.server(leader).unwrap().get_ui_states();
    assert_eq!(ui.current_leader, Some(6));
    assert_eq!(ui.decided_idx, 3);
    assert_eq!(ui.current_ballot.pid, 6);
    assert_eq!(
        ui.heartbeats.len(),
        2,
        "replies of the previous round, peers only"
    );
    assert_eq!(ui.cluster_state.accepted_indexes, vec![0, 0, 3, 0, 3, 0, 3]);
    let follower_ui = sim.server(2).unwrap().get_ui_states();
    assert!(
        follower_ui.cluster_state.accepted_indexes.is_empty(),
        "only the leader knows"
    );
}

#[test]
fn group_commit_a_burst_of_appends_is_one_write_and_one_message_per_follower() {
    let mut sim = cluster(3, 16);
    let leader = sim.run_until_stable_leader(50).unwrap();
    let writes = |sim: &Sim| -> Vec<u64> {
        (1..=3)
            .map(|p| sim.storage(p).unwrap().write_count())
            .collect()
    };
    let before = writes(&sim);
    for v in 0..1000 {
        sim.append(leader, v).unwrap();
    }
    let mut out = Vec::new();
    sim.server_mut(leader)
        .unwrap()
        .take_outgoing_messages(&mut out);
    let accept_decides = out
        .iter()
        .filter(|m| m.to_string().contains("AcceptDecide"))
        .count();
    assert_eq!(
        accept_decides, 2,
        "one AcceptDecide per follower for the whole burst"
    );
    for m in out {
        sim.inject(m);
    }
    decide_all(&mut sim, 1000, 10);
    let after = writes(&sim);
    for pid in 1..=3u64 {
        let used = after[pid as usize - 1] - before[pid as usize - 1];
        // Leader: the entries, then the decided index. Followers: the entries, the decided
        // index when the Decide arrives.
        assert!(
            used <= 3,
            "server {pid} made {used} storage writes for 1000 entries"
        );
    }
}
