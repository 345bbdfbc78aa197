//! Flexible quorums on the simulator: a write quorum smaller than a majority keeps deciding with
//! most followers down, a new leader needs the read quorum, and invalid sizes are refused.

mod common;
use common::*;
use omnipaxos::errors::ConfigError;
use omnipaxos::simulation::SimConfig;
use omnipaxos::util::FlexibleQuorum;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;

fn seven_read5_write3(seed: u64) -> Sim {
    let mut config = SimConfig::new((1..=7).collect(), seed);
    config.flexible_quorum = Some(FlexibleQuorum {
        read_quorum_size: 5,
        write_quorum_size: 3,
    });
    cluster_with(config)
}

#[test]
fn seven_servers_read_5_write_3_keep_deciding_with_4_followers_down() {
    let mut sim = seven_read5_write3(60);
    let leader = sim.run_until_stable_leader(50).unwrap();
    assert_eq!(leader, 7);
    for pid in [1, 2, 3, 4] {
        sim.crash(pid);
    }
    for v in 0..20 {
        sim.append(leader, v).unwrap();
        sim.append(5 + v % 2, 100 + v).unwrap();
    }
    sim.run_until(100, |s| s.all_decided(40))
        .expect("leader + 2 followers = write quorum");
    // Over many election rounds the leader keeps its place: in the accept phase it needs only
    // the write quorum to stay a candidate.
    sim.run(50 * ELECTION_TICKS);
    assert_eq!(sim.stable_leader(), Some(7));
}

#[test]
fn a_new_leader_needs_the_read_quorum() {
    let mut sim = seven_read5_write3(61);
    let leader = sim.run_until_stable_leader(50).unwrap();
    sim.append(leader, 1).unwrap();
    sim.run_until(20, |s| s.all_decided(1)).unwrap();
    // With the leader and two more servers down only four remain: fewer than the read quorum.
    for pid in [leader, 1, 2] {
        sim.crash(pid);
    }
    sim.run(40 * ELECTION_TICKS);
    assert_eq!(sim.leader(), None, "no leader without a read quorum");
    for pid in sim.live_pids() {
        let (_, accepting) = sim.server(pid).unwrap().get_current_leader().unwrap();
        assert!(
            !accepting || sim.server(pid).unwrap().get_current_leader() == Some((leader, true))
        );
    }
    // A fifth server comes back: now a leader is elected and decides with the write quorum.
    sim.restart(1).unwrap();
    let new = sim
        .run_until_stable_leader(40 * ELECTION_TICKS)
        .expect("read quorum restored");
    sim.append(new, 2).unwrap();
    sim.run_until(100, |s| s.all_decided(2)).unwrap();
}

#[test]
fn invalid_quorum_sizes_are_refused_at_build() {
    for (r, w) in [(3, 3), (8, 3), (6, 1), (3, 5)] {
        let cluster = ClusterConfig {
            configuration_id: 1,
            nodes: (1..=7).collect(),
            flexible_quorum: Some(FlexibleQuorum {
                read_quorum_size: r,
                write_quorum_size: w,
            }),
        };
        let server = ServerConfig {
            pid: 1,
            ..Default::default()
        };
        let built: Result<OmniPaxos<u64, MemoryStorage<u64>>, _> =
            cluster.build_for_server(server, MemoryStorage::default());
        assert!(
            matches!(built, Err(ConfigError::InvalidConfig(_))),
            "read {r} / write {w} must be refused"
        );
    }
}
