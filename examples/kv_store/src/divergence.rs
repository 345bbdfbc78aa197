//! Replicas compared: every node keeps a digest of its keys ([`StateStore::digest`]) at agreed
//! positions (every [`DIGEST_EVERY`] entries of a configuration's log), and asks the other nodes
//! for theirs now and then; two nodes with different digests at the same position hold
//! different states (a bug, or damage that passed every checksum), and say so: the
//! `divergence` fault (`/health` 503, `/status`, `kv_store_fault{kind="divergence"}`), with the
//! position and both nodes in the log, as etcd's corruption check does.
//!
//! A digest is taken only where the keys are exactly the state at its position. After a crash
//! the keys may hold writes applied before it beyond the checkpoint the log is replayed from,
//! and after a state transfer writes made on the donor while it was read: until the replay
//! passes the furthest such position (the reservation the applier made durable before applying,
//! [`StateStore::reserve`]; a transfer's `until`), no digest is taken.
//!
//! [`StateStore::digest`]: crate::state_store::StateStore::digest
//! [`StateStore::reserve`]: crate::state_store::StateStore::reserve

use crate::health::{FaultKind, Health};
use crate::node::Node;
use crate::state_store::Position;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often a node compares its digests with the others'.
pub const COMPARE_EVERY: Duration = Duration::from_secs(2);

/// Digests are taken at positions whose index is a multiple of this.
pub const DIGEST_EVERY: usize = 128;
/// How many recent digests a node keeps.
const KEPT: usize = 64;

/// A node's recent digests.
#[derive(Debug, Default)]
pub struct Digests {
    /// No digest is taken before this position (the keys may be ahead of their position).
    exact_from: Position,
    recent: VecDeque<(Position, u64)>,
}

impl Digests {
    /// The keys may hold writes up to `position` before they are replayed there.
    pub fn inexact_until(&mut self, position: Position) {
        self.exact_from = self.exact_from.max(position);
        self.recent.retain(|(p, _)| *p >= position);
    }

    /// The keys are exactly the state at `position`, with `digest`.
    pub fn applied(&mut self, position: Position, digest: u64) {
        if !position.1.is_multiple_of(DIGEST_EVERY) || position < self.exact_from || position.1 == 0
        {
            return;
        }
        if self
            .recent
            .back()
            .is_some_and(|(last, _)| *last >= position)
        {
            return;
        }
        self.recent.push_back((position, digest));
        while self.recent.len() > KEPT {
            self.recent.pop_front();
        }
    }

    /// The recent digests, oldest first.
    pub fn list(&self) -> Vec<(Position, u64)> {
        self.recent.iter().copied().collect()
    }
}

/// The first position both lists have a digest for where the digests differ: (position,
/// mine, theirs).
pub fn first_mismatch(
    mine: &[(Position, u64)],
    theirs: &[(Position, u64)],
) -> Option<(Position, u64, u64)> {
    mine.iter().find_map(|(position, digest)| {
        let (_, other) = theirs.iter().find(|(p, _)| p == position)?;
        (other != digest).then_some((*position, *digest, *other))
    })
}

/// Compares this node's digests with each of `peers`' every [`COMPARE_EVERY`], until a
/// mismatch, which it reports to `health`. (The I/O around [`first_mismatch`].)
pub async fn compare_with_peers(
    node: Arc<Node>,
    peers: Vec<(u64, SocketAddr)>,
    client: crate::client::Client,
    health: Arc<Health>,
) {
    let mut every = tokio::time::interval(COMPARE_EVERY);
    loop {
        every.tick().await;
        let mine = node.digests();
        if mine.is_empty() {
            continue;
        }
        for (pid, addr) in &peers {
            let client = client.for_node(*pid);
            let addr = *addr;
            let theirs = tokio::task::spawn_blocking(move || {
                let r = client.request(addr, "GET", "/digests", "", Duration::from_secs(5));
                r.ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| serde_json::from_value::<Vec<(Position, u64)>>(r.body).ok())
            })
            .await
            .ok()
            .flatten();
            let Some(theirs) = theirs else {
                continue; // down, or not there yet: asked again next time
            };
            let common = mine
                .iter()
                .filter(|(p, _)| theirs.iter().any(|t| t.0 == *p));
            if common.count() > 0 {
                node.note_comparison();
            }
            if let Some((position, ours, other)) = first_mismatch(&mine, &theirs) {
                let me = node.pid();
                health.fail(
                    FaultKind::Divergence,
                    format!(
                        "replicas differ: at position {position:?} node {me} has digest \
                         {ours:016x}, node {pid} has {other:016x}"
                    ),
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_taken_at_agreed_exact_positions_and_compared() {
        let mut d = Digests::default();
        d.inexact_until((1, 300));
        for idx in [128, 256, 300, 384, 512, 513] {
            d.applied((1, idx), idx as u64);
        }
        assert_eq!(d.list(), vec![((1, 384), 384), ((1, 512), 512)]);
        let theirs = vec![((1, 256), 1), ((1, 384), 384), ((1, 512), 7)];
        assert_eq!(first_mismatch(&d.list(), &theirs), Some(((1, 512), 512, 7)));
        assert_eq!(first_mismatch(&d.list(), &theirs[..2]), None);
        d.inexact_until((1, 400));
        assert_eq!(
            d.list(),
            vec![((1, 512), 512)],
            "digests before it are dropped"
        );
    }
}
