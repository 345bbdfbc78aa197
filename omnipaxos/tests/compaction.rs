//! Trim and snapshot on the simulator: every error case, propagation, a follower that was down
//! during compaction catching up with the complete state, double compaction, and compaction
//! racing a leader change.

mod common;
use common::*;
use omnipaxos::util::LogEntry;
use omnipaxos::CompactionErr;

#[test]
fn trim_compacts_every_server_up_to_what_all_accepted() {
    for n in [3u64, 5] {
        let mut sim = cluster(n, 31);
        let leader = sim.run_until_stable_leader(50).unwrap();
        for v in 0..10 {
            sim.append(leader, v).unwrap();
        }
        decide_all(&mut sim, 10, 50);
        sim.server_mut(leader).unwrap().trim(None).unwrap();
        sim.step();
        for pid in 1..=n {
            let s = sim.server(pid).unwrap();
            assert_eq!(s.get_compacted_idx(), 10, "{n} servers: server {pid}");
            assert_eq!(s.read(3), Some(LogEntry::Trimmed(10)));
        }
        // The log goes on after the trim.
        sim.append(1, 10).unwrap();
        decide_all(&mut sim, 11, 50);
        assert_eq!(sim.server(2).unwrap().read(10), Some(LogEntry::Decided(10)));
    }
}

#[test]
fn trim_errors() {
    let mut sim = cluster(3, 32);
    let leader = sim.run_until_stable_leader(50).unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    for v in 0..6 {
        sim.append(leader, v).unwrap();
    }
    decide_all(&mut sim, 6, 50);
    assert_eq!(
        sim.server_mut(follower).unwrap().trim(None),
        Err(CompactionErr::NotCurrentLeader(leader))
    );
    // A crashed follower pins the bound at what it accepted.
    sim.crash(follower);
    for v in 6..9 {
        sim.append(leader, v).unwrap();
    }
    sim.run_until(20, |s| s.server(leader).unwrap().get_decided_idx() == 9)
        .unwrap();
    let server = sim.server_mut(leader).unwrap();
    assert_eq!(server.trim(Some(8)), Err(CompactionErr::NotAllDecided(6)));
    assert_eq!(server.trim(None), Ok(()));
    assert_eq!(server.get_compacted_idx(), 6);
    assert_eq!(
        server.trim(Some(3)),
        Ok(()),
        "already compacted: nothing to do"
    );
    assert_eq!(server.get_compacted_idx(), 6);
    sim.restart(follower).unwrap();
    sim.run_until(200, |s| s.all_decided(9)).unwrap();
    assert_eq!(
        sim.server(follower).unwrap().read(8),
        Some(LogEntry::Decided(8))
    );
}

#[test]
fn snapshot_errors() {
    let mut sim = cluster(3, 33);
    let leader = sim.run_until_stable_leader(50).unwrap();
    sim.append(leader, 1).unwrap();
    decide_all(&mut sim, 1, 50);
    assert_eq!(
        sim.server_mut(leader).unwrap().snapshot(None, false),
        Err(CompactionErr::SnapshotsDisabled),
        "u64 entries use NoSnapshot"
    );
    let mut sim = add_cluster(3, 33);
    let leader = sim.run_until_stable_leader(50).unwrap();
    sim.append(leader, Add(5)).unwrap();
    sim.run_until(50, |s| s.all_decided(1)).unwrap();
    let server = sim.server_mut(leader).unwrap();
    assert_eq!(
        server.snapshot(Some(2), true),
        Err(CompactionErr::UndecidedIndex(1))
    );
    assert_eq!(
        server.snapshot(Some(usize::MAX), true),
        Err(CompactionErr::UndecidedIndex(1))
    );
    assert_eq!(server.snapshot(None, true), Ok(()));
    assert_eq!(server.get_compacted_idx(), 1);
}

#[test]
fn snapshots_compact_everywhere_and_keep_the_state() {
    for n in [3u64, 5] {
        let mut sim = add_cluster(n, 34);
        let leader = sim.run_until_stable_leader(50).unwrap();
        for v in 1..=10 {
            sim.append(1 + v % n, Add(v)).unwrap();
        }
        sim.run_until(100, |s| s.all_decided(10)).unwrap();
        let before = total_of(sim.server(leader).unwrap());
        assert_eq!(before, Total { sum: 55, count: 10 });
        let first_six: Vec<Add> = sim
            .server(leader)
            .unwrap()
            .read_entries(0..6)
            .unwrap()
            .into_iter()
            .map(|e| match e {
                LogEntry::Decided(a) => a,
                other => panic!("expected decided, got {other:?}"),
            })
            .collect();
        let expected_snapshot = <Total as omnipaxos::storage::Snapshot<Add>>::create(&first_six);
        // A follower's request compacts the follower alone: the others take compaction
        // requests only from the leader they follow.
        let follower = if leader == 1 { 2 } else { 1 };
        sim.server_mut(follower)
            .unwrap()
            .snapshot(Some(4), false)
            .unwrap();
        sim.step();
        for pid in 1..=n {
            let expected = if pid == follower { 4 } else { 0 };
            let compacted = sim.server(pid).unwrap().get_compacted_idx();
            assert_eq!(compacted, expected, "{n} servers: server {pid}");
        }
        sim.server_mut(leader)
            .unwrap()
            .snapshot(Some(6), false)
            .unwrap();
        sim.step();
        for pid in 1..=n {
            let s = sim.server(pid).unwrap();
            assert_eq!(s.get_compacted_idx(), 6, "{n} servers: server {pid}");
            match s.read(2) {
                Some(LogEntry::Snapshotted(e)) => {
                    assert_eq!((e.trimmed_idx, e.snapshot), (6, expected_snapshot))
                }
                other => panic!("expected a snapshot, got {other:?}"),
            }
            assert_eq!(total_of(s), before, "server {pid} keeps the state");
        }
        // Double compaction merges into the existing snapshot.
        sim.server_mut(leader)
            .unwrap()
            .snapshot(None, false)
            .unwrap();
        sim.step();
        for pid in 1..=n {
            let s = sim.server(pid).unwrap();
            assert_eq!(s.get_compacted_idx(), 10);
            assert_eq!(total_of(s), before);
        }
    }
}

#[test]
fn trim_with_snapshots_on_reads_trimmed_on_every_server() {
    // The published behaviour: a trim drops the prefix's state even when the entry type has a
    // snapshot, and the prefix reads as `Trimmed`, not `Snapshotted`, on every server. An
    // earlier snapshot below the trim index goes with it.
    let mut sim = add_cluster(3, 35);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 1..=6 {
        sim.append(leader, Add(v)).unwrap();
    }
    sim.run_until(50, |s| s.all_decided(6)).unwrap();
    sim.server_mut(leader)
        .unwrap()
        .snapshot(Some(2), false)
        .unwrap();
    sim.step();
    sim.server_mut(leader).unwrap().trim(Some(4)).unwrap();
    sim.step();
    for pid in 1..=3 {
        let s = sim.server(pid).unwrap();
        assert_eq!(s.get_compacted_idx(), 4, "server {pid}");
        for idx in 0..4 {
            assert_eq!(s.read(idx), Some(LogEntry::Trimmed(4)), "server {pid}");
        }
        assert_eq!(
            s.read_entries(0..6),
            Some(vec![
                LogEntry::Trimmed(4),
                LogEntry::Decided(Add(5)),
                LogEntry::Decided(Add(6))
            ]),
            "server {pid}"
        );
    }
    // The log goes on, and a later snapshot compacts what follows the trim.
    sim.append(leader, Add(7)).unwrap();
    sim.run_until(50, |s| s.all_decided(7)).unwrap();
    sim.server_mut(leader)
        .unwrap()
        .snapshot(None, false)
        .unwrap();
    sim.step();
    for pid in 1..=3 {
        match sim.server(pid).unwrap().read(0) {
            Some(LogEntry::Snapshotted(e)) => assert_eq!(e.trimmed_idx, 7),
            other => panic!("server {pid}: expected the snapshot, got {other:?}"),
        }
    }
}

#[test]
fn a_follower_down_during_compaction_catches_up_with_the_complete_state() {
    let mut sim = add_cluster(3, 36);
    let leader = sim.run_until_stable_leader(50).unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    for v in 1..=5 {
        sim.append(leader, Add(v)).unwrap();
    }
    sim.run_until(50, |s| s.all_decided(5)).unwrap();
    // The follower compacts its own prefix, then goes down and misses more entries and the
    // others' snapshot.
    sim.server_mut(follower)
        .unwrap()
        .snapshot(Some(3), true)
        .unwrap();
    sim.crash(follower);
    for v in 6..=12 {
        sim.append(leader, Add(v)).unwrap();
    }
    sim.run_until(50, |s| s.server(leader).unwrap().get_decided_idx() == 12)
        .unwrap();
    sim.server_mut(leader)
        .unwrap()
        .snapshot(None, false)
        .unwrap();
    sim.step();
    sim.restart(follower).unwrap();
    sim.run_until(200, |s| s.all_decided(12)).unwrap();
    let expected = Total { sum: 78, count: 12 };
    assert_eq!(total_of(sim.server(leader).unwrap()), expected);
    assert_eq!(
        total_of(sim.server(follower).unwrap()),
        expected,
        "the complete state, not only what it missed"
    );
}

#[test]
fn compaction_racing_a_leader_change_is_safe() {
    for seed in 0..10 {
        let mut sim = add_cluster(5, 40 + seed);
        let leader = sim.run_until_stable_leader(50).unwrap();
        for v in 1..=8 {
            sim.append(leader, Add(v)).unwrap();
        }
        sim.run_until(50, |s| s.all_decided(8)).unwrap();
        sim.server_mut(leader)
            .unwrap()
            .snapshot(None, false)
            .unwrap();
        sim.crash(leader); // the compaction requests may or may not get out
        let new = sim
            .run_until(100, |s| s.leader().is_some_and(|l| l != leader))
            .map(|_| sim.leader().unwrap())
            .unwrap();
        sim.server_mut(new).unwrap().trim(None).unwrap();
        sim.append(new, Add(100)).unwrap();
        sim.restart(leader).unwrap();
        sim.run_until(300, |s| s.all_decided(9)).unwrap();
        for pid in 1..=5 {
            assert_eq!(
                total_of(sim.server(pid).unwrap()),
                Total { sum: 136, count: 9 }
            );
        }
    }
}
