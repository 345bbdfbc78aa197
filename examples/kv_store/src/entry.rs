//! The log's entries (`KvCommand`) and the marker that stands for a compacted prefix
//! (`KVSnapshot`).
//!
//! Every write carries the id of the request that made it. A node retries a write whose outcome
//! it does not know (a leader change, a crash of the leader) with the same id, so the same write
//! can be decided more than once; the state machine ([`crate::machine`]) applies it once.

use crate::auth::{AuthOp, Principal};
use omnipaxos::macros::Entry;
use omnipaxos::storage::Snapshot;
use serde::{Deserialize, Serialize};

/// Identifies a write across the cluster and across retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// The pid of the node that took the request.
    pub node: u64,
    /// Random per start of that node: its session.
    pub life: u64,
    /// Counts the session's requests from 1.
    pub seq: u64,
}

/// A write: the request it came from, who asked for it, and what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub id: RequestId,
    /// Every request of the session numbered below this had its answer (or was given up) when
    /// this copy was proposed, so copies of them decided later are ignored.
    pub done_below: u64,
    /// Who asked, as the node that took the request authenticated them: the state machine
    /// checks their permission where the write is decided, so a revocation decided before it
    /// is in force ([`crate::auth`]). `None`: the cluster itself (the root user's bootstrap).
    pub by: Option<Principal>,
    pub op: WriteOp,
}

/// What a write changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put { key: String, value: String },
    /// Remove `key`.
    Delete { key: String },
    /// Change users, roles or grants.
    Auth(AuthOp),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Entry, Serialize, Deserialize)]
#[snapshot(KVSnapshot)]
pub enum KvCommand {
    /// A client's write.
    Write(Write),
}

/// The log's snapshot is a marker: "the state after this prefix", with nothing in it. The state
/// itself lives outside the log, in each node's [`crate::state_store::StateStore`], written key
/// by key as entries are applied, so compacting the log costs what changed since the last
/// compaction, not what exists. A node whose log starts after a compacted prefix it has not
/// applied (a follower that was down, a node that joins) fetches the state in chunks from
/// another node ([`crate::transfer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KVSnapshot;

impl Snapshot<KvCommand> for KVSnapshot {
    fn create(_entries: &[KvCommand]) -> Self {
        KVSnapshot
    }

    fn merge(&mut self, _delta: Self) {}

    fn use_snapshots() -> bool {
        true
    }
}
