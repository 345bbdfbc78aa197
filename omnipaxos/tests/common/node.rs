//! The handler tests' harness: one server driven by hand through the public API, its messages
//! read back as trace lines and its storage writes as recorded by `SimStorage`.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg};
use omnipaxos::messages::sequence_paxos::*;
use omnipaxos::messages::Message;
use omnipaxos::simulation::SimStorage;
use omnipaxos::storage::StopSign;
use omnipaxos::util::{LogSync, NodeId, SequenceNumber};
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;

pub type Store = SimStorage<MemoryStorage<u64>>;

/// Ballot `2.1`: what server 1 gets from `try_become_leader` on a fresh cluster.
pub fn b1() -> Ballot {
    Ballot::with(1, 2, 0, 1)
}

pub fn seq(session: u64, counter: u64) -> SequenceNumber {
    SequenceNumber { session, counter }
}

pub struct Node {
    pub pid: NodeId,
    pub op: OmniPaxos<u64, Store>,
    pub store: Store,
}

impl Node {
    pub fn new(pid: NodeId) -> Self {
        let store = SimStorage::new(MemoryStorage::default());
        let cluster = ClusterConfig {
            configuration_id: 1,
            nodes: vec![1, 2, 3],
            flexible_quorum: None,
        };
        let server = ServerConfig {
            pid,
            ..Default::default()
        };
        let op = cluster.build_for_server(server, store.clone()).unwrap();
        store.record_writes();
        Node { pid, op, store }
    }

    /// Hands over one Sequence Paxos message from `from`.
    pub fn input(&mut self, from: NodeId, msg: PaxosMsg<u64>) {
        self.op
            .handle_incoming(Message::SequencePaxos(PaxosMessage {
                from,
                to: self.pid,
                msg,
            }));
    }

    /// The Sequence Paxos messages that came out (heartbeats left out), as trace lines.
    pub fn out(&mut self) -> Vec<String> {
        let mut buffer = Vec::new();
        self.op.take_outgoing_messages(&mut buffer);
        buffer
            .iter()
            .filter(|m| matches!(m, Message::SequencePaxos(_)))
            .map(|m| m.to_string())
            .collect()
    }

    /// The heartbeats that came out, as trace lines.
    pub fn out_ble(&mut self) -> Vec<String> {
        let mut buffer = Vec::new();
        self.op.take_outgoing_messages(&mut buffer);
        buffer
            .iter()
            .filter(|m| matches!(m, Message::BLE(_)))
            .map(|m| m.to_string())
            .collect()
    }

    /// The storage writes since the last call.
    pub fn writes(&mut self) -> Vec<String> {
        self.store.take_write_log()
    }

    /// Forgets what came out so far: the state is set up.
    pub fn settle(&mut self) {
        self.out();
        self.writes();
    }
}

/// Server 2 following ballot `2.1` of server 1 in the accept phase, log `[10, 11]`, 1 decided.
pub fn follower() -> Node {
    let mut n = Node::new(2);
    n.input(1, prepare(b1(), 0, Ballot::default(), 0));
    n.input(1, accept_sync(seq(1, 1), 1, 0, vec![10, 11]));
    n.settle();
    n
}

/// Server 1 leading ballot `2.1` in the accept phase, follower 2 synchronised (log empty), 3
/// silent.
pub fn leader() -> Node {
    let mut n = Node::new(1);
    n.op.try_become_leader();
    n.input(2, empty_promise());
    n.input(2, accepted(0));
    n.settle();
    n
}

pub fn stopsign() -> StopSign {
    StopSign::with(
        ClusterConfig {
            configuration_id: 2,
            nodes: vec![1, 2],
            flexible_quorum: None,
        },
        None,
    )
}

pub fn ble_input(n: &mut Node, from: NodeId, msg: HeartbeatMsg) {
    n.op.handle_incoming(Message::BLE(BLEMessage {
        from,
        to: n.pid,
        msg,
    }));
}

/// Asserts the messages and the storage writes one input caused.
#[track_caller]
pub fn assert_outputs(n: &mut Node, messages: &[&str], writes: &[&str]) {
    assert_eq!(n.out(), messages, "messages out");
    assert_eq!(n.writes(), writes, "storage writes");
}

/// A `Prepare` of ballot `n` summarising the leader's log.
pub fn prepare(
    n: Ballot,
    decided_idx: usize,
    n_accepted: Ballot,
    accepted_idx: usize,
) -> PaxosMsg<u64> {
    PaxosMsg::Prepare(Prepare {
        n,
        decided_idx,
        n_accepted,
        accepted_idx,
    })
}

/// A `Promise` of ballot `2.1` from a server with an empty log.
pub fn empty_promise() -> PaxosMsg<u64> {
    PaxosMsg::Promise(Promise {
        n: b1(),
        n_accepted: Ballot::default(),
        decided_idx: 0,
        accepted_idx: 0,
        log_sync: None,
    })
}

/// An `Accepted` of ballot `2.1`.
pub fn accepted(accepted_idx: usize) -> PaxosMsg<u64> {
    PaxosMsg::Accepted(Accepted {
        n: b1(),
        accepted_idx,
    })
}

/// An `AcceptSync` of ballot `2.1` placing `suffix` at `sync_idx`.
pub fn accept_sync(
    seq_num: SequenceNumber,
    decided_idx: usize,
    sync_idx: usize,
    suffix: Vec<u64>,
) -> PaxosMsg<u64> {
    PaxosMsg::AcceptSync(AcceptSync {
        n: b1(),
        seq_num,
        decided_idx,
        log_sync: LogSync {
            decided_snapshot: None,
            suffix,
            sync_idx,
            stopsign: None,
        },
    })
}

/// An `AcceptDecide` of ballot `2.1`.
pub fn accept_decide(
    seq_num: SequenceNumber,
    decided_idx: usize,
    entries: Vec<u64>,
) -> PaxosMsg<u64> {
    PaxosMsg::AcceptDecide(AcceptDecide {
        n: b1(),
        seq_num,
        decided_idx,
        entries,
    })
}

/// A `Decide` of ballot `2.1`.
pub fn decide(seq_num: SequenceNumber, decided_idx: usize) -> PaxosMsg<u64> {
    PaxosMsg::Decide(Decide {
        n: b1(),
        seq_num,
        decided_idx,
    })
}

/// A `ForwardedEntries` for ballot `n`.
pub fn forward(n: Ballot, seq_num: SequenceNumber, entries: Vec<u64>) -> PaxosMsg<u64> {
    PaxosMsg::ForwardedEntries(ForwardedEntries {
        n,
        seq_num,
        entries,
    })
}
