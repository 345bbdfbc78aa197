//! The cost of handling each kind of message on its own: a follower handling an `AcceptDecide`
//! of 100 entries, the leader handling an `Accepted` that decides, a `HeartbeatRequest`, and a
//! repeated `Prepare`.

mod common;
use common::Cluster;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatRequest};
use omnipaxos::messages::sequence_paxos::{
    AcceptDecide, Accepted, PaxosMessage, PaxosMsg, Prepare,
};
use omnipaxos::messages::Message;
use omnipaxos::util::SequenceNumber;

/// A steady 3-server cluster: the leader's index, a follower's index, their pids.
fn steady() -> (
    Cluster<omnipaxos_storage::memory_storage::MemoryStorage<u64>>,
    usize,
    usize,
) {
    let cluster = Cluster::in_memory(3);
    let leader = cluster.leader;
    let follower = (leader + 1) % 3;
    (cluster, leader, follower)
}

fn accept_decide(c: &mut Criterion) {
    let (mut cluster, leader, follower) = steady();
    // Learn the follower's session by letting one real AcceptDecide through.
    cluster.servers[leader].append(0).unwrap();
    let mut out = Vec::new();
    cluster.servers[leader].take_outgoing_messages(&mut out);
    let template = out
        .into_iter()
        .find_map(|m| match m {
            Message::SequencePaxos(PaxosMessage {
                to,
                msg: PaxosMsg::AcceptDecide(acc),
                from,
            }) if to as usize == follower + 1 => Some((from, acc)),
            _ => None,
        })
        .expect("an AcceptDecide for the follower");
    let (from, first) = template;
    let server = &mut cluster.servers[follower];
    server.handle_incoming(Message::SequencePaxos(PaxosMessage {
        from,
        to: follower as u64 + 1,
        msg: PaxosMsg::AcceptDecide(first.clone()),
    }));
    let mut seq = first.seq_num;
    let entries: Vec<u64> = (0..100).collect();
    let mut sink = Vec::new();
    let mut group = c.benchmark_group("handle");
    group.throughput(Throughput::Elements(1));
    group.bench_function("accept_decide_100_entries", |b| {
        b.iter(|| {
            seq = SequenceNumber {
                session: seq.session,
                counter: seq.counter + 1,
            };
            server.handle_incoming(Message::SequencePaxos(PaxosMessage {
                from,
                to: follower as u64 + 1,
                msg: PaxosMsg::AcceptDecide(AcceptDecide {
                    n: first.n,
                    seq_num: seq,
                    decided_idx: first.decided_idx,
                    entries: entries.clone(),
                }),
            }));
            server.take_outgoing_messages(&mut sink);
            sink.clear();
        })
    });
    group.finish();
}

fn accepted(c: &mut Criterion) {
    let (mut cluster, leader, follower) = steady();
    let n = cluster.servers[leader].get_promise();
    // Give the leader a long written log that only it has accepted.
    let total = 2_000_000u64;
    for v in 0..total {
        cluster.servers[leader].append(v).unwrap();
    }
    let mut sink = Vec::new();
    cluster.servers[leader].take_outgoing_messages(&mut sink);
    sink.clear();
    let mut idx = 1usize;
    let mut group = c.benchmark_group("handle");
    group.bench_function("accepted_that_decides", |b| {
        b.iter(|| {
            idx = idx % total as usize + 1;
            let server = &mut cluster.servers[leader];
            server.handle_incoming(Message::SequencePaxos(PaxosMessage {
                from: follower as u64 + 1,
                to: leader as u64 + 1,
                msg: PaxosMsg::Accepted(Accepted {
                    n,
                    accepted_idx: idx,
                }),
            }));
            server.take_outgoing_messages(&mut sink);
            sink.clear();
        })
    });
    group.finish();
}

fn heartbeat_and_prepare(c: &mut Criterion) {
    let (mut cluster, leader, follower) = steady();
    let promise = cluster.servers[follower].get_promise();
    let mut sink = Vec::new();
    let mut group = c.benchmark_group("handle");
    group.bench_function("heartbeat_request", |b| {
        b.iter(|| {
            let server = &mut cluster.servers[follower];
            server.handle_incoming(Message::BLE(BLEMessage {
                from: leader as u64 + 1,
                to: follower as u64 + 1,
                msg: HeartbeatMsg::Request(HeartbeatRequest { round: 1 }),
            }));
            server.take_outgoing_messages(&mut sink);
            sink.clear();
        })
    });
    group.bench_function("prepare_with_equal_ballot", |b| {
        b.iter(|| {
            let server = &mut cluster.servers[follower];
            server.handle_incoming(Message::SequencePaxos(PaxosMessage {
                from: leader as u64 + 1,
                to: follower as u64 + 1,
                msg: PaxosMsg::Prepare(Prepare {
                    n: promise,
                    decided_idx: 0,
                    n_accepted: promise,
                    accepted_idx: 0,
                }),
            }));
            server.take_outgoing_messages(&mut sink);
            sink.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, accept_decide, accepted, heartbeat_and_prepare);
criterion_main!(benches);
