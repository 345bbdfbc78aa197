//! The partial-connectivity scenarios of the OmniPaxos paper (EuroSys'23, §2 and §6.3), where
//! Raft and Multi-Paxos livelock or stall. Each asserts a new leader, decided appends within a
//! bounded number of election rounds, and no livelock (a bounded number of leader changes).

mod common;
use common::*;
use omnipaxos::util::NodeId;

/// Counts how often the stable leader changes over `steps` steps.
fn leader_changes(sim: &mut Sim, steps: usize) -> usize {
    let mut changes = 0;
    let mut last = sim.leader();
    for _ in 0..steps {
        sim.step();
        let now = sim.leader();
        if now != last && now.is_some() {
            changes += 1;
            last = now;
        }
    }
    changes
}

/// Cuts every link of `pids` except those that touch `hub`.
fn keep_only_links_through(sim: &mut Sim, pids: &[NodeId], hub: NodeId) {
    for &a in pids {
        for &b in pids {
            if a < b && a != hub && b != hub {
                sim.disconnect(a, b);
            }
        }
    }
}

#[test]
fn quorum_loss_the_only_quorum_connected_server_takes_over() {
    // Five servers; the leader keeps a link only to server 3, and every other server is
    // connected only to 3. Only 3 is quorum-connected, so only 3 may lead.
    let mut sim = cluster(5, 21);
    let old = sim.run_until_stable_leader(50).unwrap();
    assert_eq!(old, 5);
    sim.append(old, 1).unwrap();
    decide_all(&mut sim, 1, 20);
    keep_only_links_through(&mut sim, &[1, 2, 3, 4, 5], 3);
    let steps = sim
        .run_until(10 * ELECTION_TICKS, |s| s.leader() == Some(3))
        .expect("server 3 takes over");
    // The leader's last happy reply, two rounds without it (a leader is not replaced for one
    // late heartbeat), the takeover round, and the part of a round the cut fell in.
    assert!(steps <= 5 * ELECTION_TICKS, "took {steps} steps");
    sim.append(3, 2).unwrap();
    sim.append(1, 3).unwrap(); // forwarded through 3's link
    let decided = sim.run_until(4 * ELECTION_TICKS, |s| s.all_decided(3));
    assert!(decided.is_ok(), "every server decides through the hub");
    assert_eq!(
        leader_changes(&mut sim, 60 * ELECTION_TICKS),
        0,
        "no livelock"
    );
}

#[test]
fn constrained_election_a_server_with_an_outdated_log_can_lead() {
    // Server 1 misses entries while cut off; then the leader (5) fails and 1 is the only
    // quorum-connected server. It must be elected despite its outdated log and must not lose
    // any decided entry.
    let mut sim = cluster(5, 22);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 5);
    sim.isolate(1);
    for v in 0..5 {
        sim.append(5, v).unwrap();
    }
    sim.run_until(20, |s| s.decided_on(&[2, 3, 4, 5], 5))
        .unwrap();
    assert_eq!(
        sim.server(1).unwrap().get_decided_idx(),
        0,
        "server 1 is outdated"
    );
    sim.crash(5);
    sim.heal_all();
    keep_only_links_through(&mut sim, &[1, 2, 3, 4], 1);
    let steps = sim
        .run_until(10 * ELECTION_TICKS, |s| s.leader() == Some(1))
        .expect("the outdated but quorum-connected server leads");
    assert!(steps <= 4 * ELECTION_TICKS, "took {steps} steps");
    sim.append(1, 100).unwrap();
    sim.run_until(4 * ELECTION_TICKS, |s| s.all_decided(6))
        .expect("appends decide under the new leader");
    assert_eq!(
        decided_values(&sim, 1),
        vec![0, 1, 2, 3, 4, 100],
        "no decided entry lost"
    );
    assert_eq!(
        leader_changes(&mut sim, 60 * ELECTION_TICKS),
        0,
        "no livelock"
    );
}

#[test]
fn chained_the_middle_of_a_chain_keeps_the_cluster_live() {
    // Three servers in a chain 1 - 2 - 3: the leader 3 loses its link to 1. Server 1 is still
    // quorum-connected (through 2), takes over, and the cluster keeps deciding without the
    // leader ping-pong that Raft shows here.
    let mut sim = cluster(3, 23);
    assert_eq!(sim.run_until_stable_leader(50).unwrap(), 3);
    sim.append(3, 0).unwrap();
    decide_all(&mut sim, 1, 20);
    sim.disconnect(1, 3);
    sim.run_until(10 * ELECTION_TICKS, |s| {
        s.leader() == Some(1) && s.server(2).unwrap().get_current_leader() == Some((1, true))
    })
    .expect("server 1 leads with 2 following");
    for v in 1..=10 {
        sim.append(2, v).unwrap();
    }
    sim.run_until(4 * ELECTION_TICKS, |s| s.decided_on(&[1, 2], 11))
        .expect("the chain decides");
    assert_eq!(
        leader_changes(&mut sim, 60 * ELECTION_TICKS),
        0,
        "no livelock"
    );
    // Once the link heals, server 3 catches up.
    sim.heal_all();
    sim.run_until(20 * ELECTION_TICKS, |s| s.all_decided(11))
        .expect("3 catches up");
}
