//! Seeded fuzzing of input: random messages (every variant, extreme indices, ballots and
//! sequence numbers, any sender) never panic a server; random messages that a server must ignore
//! (unknown sender, another receiver, a stale ballot) change nothing; random TOML never panics
//! `with_toml`. `FUZZ_ITERS=N` for more.

mod common;
use common::*;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::ballot_leader_election::{
    BLEMessage, HeartbeatMsg, HeartbeatReply, HeartbeatRequest,
};
use omnipaxos::messages::sequence_paxos::*;
use omnipaxos::messages::Message;
use omnipaxos::simulation::SimRng;
use omnipaxos::storage::{SnapshotType, StopSign};
use omnipaxos::util::{LogSync, SequenceNumber};
use omnipaxos::{ClusterConfig, OmniPaxosConfig};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn iters() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

fn index(rng: &mut SimRng) -> usize {
    match rng.range(0, 9) {
        0 => usize::MAX,
        1 => usize::MAX / 2,
        2 => rng.range(0, 1_000_000) as usize,
        _ => rng.range(0, 20) as usize,
    }
}

fn ballot(rng: &mut SimRng) -> Ballot {
    let n = if rng.chance(0.1) {
        u32::MAX
    } else {
        rng.range(0, 6) as u32
    };
    Ballot::with(
        rng.range(0, 2) as u32,
        n,
        rng.range(0, 2) as u32,
        rng.range(0, 5),
    )
}

fn seq(rng: &mut SimRng) -> SequenceNumber {
    let big = |rng: &mut SimRng| {
        if rng.chance(0.1) {
            u64::MAX
        } else {
            rng.range(0, 5)
        }
    };
    SequenceNumber {
        session: big(rng),
        counter: big(rng),
    }
}

fn entries(rng: &mut SimRng) -> Vec<u64> {
    (0..rng.range(0, 4))
        .map(|_| 1_000_000 + rng.range(0, 1000))
        .collect()
}

fn stopsign(rng: &mut SimRng) -> StopSign {
    let nodes: Vec<u64> = (0..rng.range(0, 4)).map(|_| rng.range(0, 6)).collect();
    StopSign::with(
        ClusterConfig {
            configuration_id: rng.range(0, 3) as u32,
            nodes,
            flexible_quorum: None,
        },
        rng.chance(0.5).then(|| vec![1, 2, 3]),
    )
}

fn log_sync(rng: &mut SimRng) -> LogSync<u64> {
    LogSync {
        decided_snapshot: match rng.range(0, 3) {
            0 => Some(SnapshotType::Complete(omnipaxos::storage::NoSnapshot)),
            1 => Some(SnapshotType::Delta(omnipaxos::storage::NoSnapshot)),
            _ => None,
        },
        suffix: entries(rng),
        sync_idx: index(rng),
        stopsign: rng.chance(0.2).then(|| stopsign(rng)),
    }
}

fn random_payload(rng: &mut SimRng) -> PaxosMsg<u64> {
    match rng.range(0, 16) {
        0 => PaxosMsg::PrepareReq(PrepareReq { n: ballot(rng) }),
        1 => PaxosMsg::Prepare(Prepare {
            n: ballot(rng),
            decided_idx: index(rng),
            n_accepted: ballot(rng),
            accepted_idx: index(rng),
        }),
        2 => PaxosMsg::Promise(Promise {
            n: ballot(rng),
            n_accepted: ballot(rng),
            decided_idx: index(rng),
            accepted_idx: index(rng),
            log_sync: rng.chance(0.5).then(|| log_sync(rng)),
        }),
        3 => PaxosMsg::AcceptSync(AcceptSync {
            n: ballot(rng),
            seq_num: seq(rng),
            decided_idx: index(rng),
            log_sync: log_sync(rng),
        }),
        4 => PaxosMsg::AcceptDecide(AcceptDecide {
            n: ballot(rng),
            seq_num: seq(rng),
            decided_idx: index(rng),
            entries: entries(rng),
        }),
        5 => PaxosMsg::Accepted(Accepted {
            n: ballot(rng),
            accepted_idx: index(rng),
        }),
        6 => PaxosMsg::NotAccepted(NotAccepted { n: ballot(rng) }),
        7 => PaxosMsg::Decide(Decide {
            n: ballot(rng),
            seq_num: seq(rng),
            decided_idx: index(rng),
        }),
        8 => PaxosMsg::ProposalForward(entries(rng)),
        9 => PaxosMsg::Compaction(if rng.chance(0.5) {
            Compaction::Trim(index(rng))
        } else {
            Compaction::Snapshot(rng.chance(0.5).then(|| index(rng)))
        }),
        10 => PaxosMsg::AcceptStopSign(AcceptStopSign {
            n: ballot(rng),
            seq_num: seq(rng),
            ss: stopsign(rng),
        }),
        11 => PaxosMsg::ForwardStopSign(stopsign(rng)),
        12 => PaxosMsg::ReadIndexReq(ReadIndexReq {
            n: ballot(rng),
            id: rng.range(0, u64::MAX),
        }),
        13 => PaxosMsg::ReadIndexResp(ReadIndexResp {
            n: ballot(rng),
            id: rng.range(0, u64::MAX),
            index: index(rng),
        }),
        14 => PaxosMsg::ReadConfirm(ReadConfirm {
            n: ballot(rng),
            round: rng.range(0, u64::MAX),
        }),
        _ => PaxosMsg::ReadConfirmed(ReadConfirmed {
            n: ballot(rng),
            round: rng.range(0, 5),
        }),
    }
}

fn random_message(rng: &mut SimRng, from: u64, to: u64) -> Message<u64> {
    if rng.chance(0.2) {
        let msg = if rng.chance(0.5) {
            HeartbeatMsg::Request(HeartbeatRequest {
                round: rng.range(0, 5) as u32,
            })
        } else {
            HeartbeatMsg::Reply(HeartbeatReply {
                round: rng.range(0, 5) as u32,
                ballot: ballot(rng),
                leader: ballot(rng),
                happy: rng.chance(0.5),
            })
        };
        return Message::BLE(BLEMessage { from, to, msg });
    }
    Message::SequencePaxos(PaxosMessage {
        from,
        to,
        msg: random_payload(rng),
    })
}

/// A 3-server cluster with a few decided entries.
fn warm_cluster(seed: u64) -> Sim {
    let mut sim = cluster(3, seed);
    let leader = sim.run_until_stable_leader(50).unwrap();
    for v in 0..5 {
        sim.append(leader, v).unwrap();
    }
    sim.run_until(50, |s| s.all_decided(5)).unwrap();
    sim
}

#[test]
fn arbitrary_messages_never_panic() {
    let mut sim = warm_cluster(70);
    let mut rng = SimRng::new(70);
    for i in 0..iters() {
        let from = rng.range(0, 5);
        let to = rng.range(1, 3);
        let msg = random_message(&mut rng, from, to);
        let text = msg.to_string();
        if let Some(server) = sim.server_mut(to) {
            let outcome = catch_unwind(AssertUnwindSafe(|| server.handle_incoming(msg)));
            assert!(outcome.is_ok(), "iteration {i}: {text} panicked");
        }
        if i % 20 == 0 {
            // Forged messages from real peers can break safety (Paxos is not Byzantine
            // tolerant), so only the absence of panics is checked here.
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _ = sim.try_step();
            }));
            assert!(outcome.is_ok(), "iteration {i}: stepping panicked");
        }
    }
}

#[test]
fn messages_a_server_must_ignore_change_nothing() {
    let mut sim = warm_cluster(71);
    let mut rng = SimRng::new(71);
    let before: Vec<Vec<u64>> = (1..=3).map(|p| decided_values(&sim, p)).collect();
    for i in 0..iters() {
        let to = rng.range(1, 3);
        let msg = match rng.range(0, 2) {
            // A sender outside the configuration.
            0 => {
                let from = rng.range(4, 1000);
                random_message(&mut rng, from, to)
            }
            // A message for another server.
            1 => {
                let (from, elsewhere) = (rng.range(1, 3), rng.range(4, 1000));
                random_message(&mut rng, from, elsewhere)
            }
            // A stale ballot (n = 0) from a real peer.
            _ => {
                let from = 1 + (to % 3);
                let mut msg = random_message(&mut rng, from, to);
                if let Message::SequencePaxos(PaxosMessage { msg: payload, .. }) = &mut msg {
                    let stale = Ballot::with(1, 0, 0, from);
                    match payload {
                        PaxosMsg::AcceptDecide(m) => m.n = stale,
                        PaxosMsg::Decide(m) => m.n = stale,
                        PaxosMsg::AcceptSync(m) => m.n = stale,
                        PaxosMsg::AcceptStopSign(m) => m.n = stale,
                        PaxosMsg::Prepare(m) => m.n = stale,
                        _ => continue,
                    }
                }
                if matches!(msg, Message::BLE(_)) {
                    continue;
                }
                msg
            }
        };
        sim.inject(msg);
        if i % 50 == 0 {
            sim.step(); // invariants are checked
        }
    }
    for (p, old) in (1..=3).zip(before) {
        assert_eq!(
            decided_values(&sim, p),
            old,
            "server {p} changed its decided log"
        );
    }
    let leader = sim.run_until_stable_leader(100).unwrap();
    sim.append(leader, 99).unwrap();
    sim.run_until(100, |s| s.all_decided(6))
        .expect("the cluster still decides");
}

#[test]
fn arbitrary_toml_never_panics() {
    let dir = std::env::temp_dir().join(format!("omnipaxos-fuzz-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzz.toml");
    let mut rng = SimRng::new(72);
    let pieces = [
        "[cluster_config]\n",
        "[server_config]\n",
        "configuration_id = ",
        "nodes = [",
        "]\n",
        "pid = ",
        "flexible_quorum = { read_quorum_size = ",
        ", write_quorum_size = ",
        " }\n",
        "batch_size = ",
        "election_tick_timeout = ",
        "-1",
        "0",
        "1",
        "18446744073709551615",
        "99999999999999999999",
        "\"x\"",
        ",",
        "\n",
        "=",
        "[",
        "{",
        "true",
        "1.5",
    ];
    for _ in 0..iters() / 3 {
        let text: String = (0..rng.range(0, 12))
            .map(|_| *rng.pick(&pieces).unwrap())
            .collect();
        std::fs::write(&path, &text).unwrap();
        let p = path.to_str().unwrap().to_string();
        let outcome = catch_unwind(|| OmniPaxosConfig::with_toml(&p).map(|_| ()));
        assert!(outcome.is_ok(), "with_toml panicked on {text:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
