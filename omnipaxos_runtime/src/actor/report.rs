//! Events and metrics: what changed in the pass, and the latest picture of the node.

use super::Actor;
use crate::status::{Metrics, OmniPaxosEvent, PeerMetrics, Role};
use crate::transport::Transport;
use crate::wire::{NodeId, RuntimeEntry};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::Storage;

#[derive(Default)]
pub(crate) struct Report {
    /// The leader (and its ballot) last reported.
    leader: Option<(NodeId, Ballot, bool)>,
    decided_idx: usize,
    decided_entries: u64,
    leader_changes: u64,
    passes: u64,
    storage_failed: bool,
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// Reports what changed in this pass.
    pub(crate) fn report_pass(&mut self) {
        self.report.passes += 1;
        let decided = self.op.get_decided_idx();
        if decided != self.report.decided_idx {
            if decided > self.report.decided_idx {
                self.report.decided_entries += (decided - self.report.decided_idx) as u64;
            }
            self.report.decided_idx = decided;
            let _ = self.outputs.events.send(OmniPaxosEvent::Decided {
                new_decided_idx: decided,
            });
        }
        let leader = self.op.get_current_leader().filter(|(_, ready)| *ready);
        let current = leader.map(|(pid, ready)| (pid, self.op.get_promise(), ready));
        if current.is_some() && current != self.report.leader {
            self.report.leader_changes += u64::from(self.report.leader.is_some());
            self.report.leader = current;
            if let Some((pid, ballot, accepted)) = current {
                tracing::info!(pid = self.me, leader = pid, n = ballot.n, "leader elected");
                let _ = self
                    .outputs
                    .events
                    .send(OmniPaxosEvent::LeaderElected { pid, accepted });
            }
            self.publish_metrics();
        }
        if let Some(err) = self.op.get_storage_error() {
            self.report_storage_failure(err.to_string());
        }
    }

    /// Reports a storage failure once: the event, the metric, the log.
    pub(crate) fn report_storage_failure(&mut self, error: String) {
        if self.report.storage_failed {
            return;
        }
        tracing::error!(pid = self.me, %error, "storage failed; the node stops taking part");
        self.report.storage_failed = true;
        // Metrics first: whoever hears the event finds them saying so.
        self.publish_metrics();
        let _ = self
            .outputs
            .events
            .send(OmniPaxosEvent::StorageFailed { error });
    }

    fn role(&self) -> Role {
        if self.reconf.chain.retired() {
            return Role::Retired;
        }
        match self.op.get_current_leader() {
            Some((pid, true)) if pid == self.me => Role::Leader,
            Some((pid, false)) if pid == self.me => Role::Candidate,
            _ => Role::Follower,
        }
    }

    /// Sends the latest picture to `metrics()` receivers.
    pub(crate) fn publish_metrics(&mut self) {
        let states = self.op.get_ui_states();
        let cluster = &self.op.get_config().cluster_config;
        let leads = self.role() == Role::Leader;
        let peers = cluster
            .nodes
            .iter()
            .filter(|pid| **pid != self.me)
            .map(|&pid| {
                let heartbeat = states.heartbeats.iter().any(|h| h.ballot.pid == pid);
                let accepted_idx = leads
                    .then(|| {
                        states
                            .cluster_state
                            .accepted_indexes
                            .get(pid as usize)
                            .copied()
                    })
                    .flatten();
                let peer = PeerMetrics {
                    connected: self.transport.is_connected(pid),
                    heartbeat,
                    accepted_idx,
                };
                (pid, peer)
            })
            .collect();
        let quorum_connected = states
            .heartbeats
            .iter()
            .filter(|h| h.ballot.pid != 0)
            .count()
            + 1
            > cluster.nodes.len() / 2;
        let stats = self.transport.stats();
        let metrics = Metrics {
            pid: self.me,
            configuration_id: cluster.configuration_id,
            leader: Some(self.leader_ballot().pid).filter(|pid| *pid != 0),
            ballot: self.op.get_promise(),
            role: self.role(),
            quorum_connected,
            decided_idx: self.op.get_decided_idx(),
            accepted_idx: self.op.get_accepted_idx(),
            compacted_idx: self.op.get_compacted_idx(),
            peers,
            storage_writes: self.op.get_storage_write_count(),
            decided_entries: self.report.decided_entries,
            leader_changes: self.report.leader_changes,
            appends_decided: self.appends.decided,
            pending_requests: self.appends.pending() + self.reads.pending(),
            passes: self.report.passes,
            appends_submitted: self.appends.submitted,
            messages: stats.by_kind,
            messages_by_peer: stats.by_peer,
            messages_dropped: stats.dropped,
            frames_refused: stats.refused_frames,
            transport_writes: stats.writes,
            largest_frame_bytes: stats.largest_frame_bytes,
            storage_failed: self.report.storage_failed,
        };
        self.outputs.metrics.send_replace(metrics);
    }
}
