//! Linearizable reads on the simulator: every read a test asks for through
//! [`Simulation::read`] is checked when it is served: its index must be at least every index
//! decided anywhere before the read was asked (real-time order).

use super::Simulation;
use crate::errors::ReadErr;
use crate::ids::NodeId;
use crate::read_state::{ReadFailure, ReadState};
use crate::storage::{Entry, Storage};
use std::collections::BTreeMap;
use std::hash::Hash;

/// The reads served and failed since the last [`Simulation::take_reads`], with the server each
/// was asked of.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadOutcomes {
    /// Served reads: each passed the check.
    pub served: Vec<(NodeId, ReadState)>,
    /// Failed reads, with their reasons.
    pub failed: Vec<(NodeId, ReadFailure)>,
}

/// The reads asked and not yet served or failed, with what they must see.
#[derive(Default)]
pub(super) struct ReadLedger {
    /// (server, ctx) -> the highest index decided anywhere when the read was asked.
    pending: BTreeMap<(NodeId, u64), usize>,
    served: Vec<(NodeId, ReadState)>,
    failed: Vec<(NodeId, ReadFailure)>,
}

impl<T: Entry + Eq + Hash, B: Storage<T>> Simulation<T, B> {
    /// Asks server `pid` for a linearizable read numbered `ctx` (numbers must be unique per
    /// server among pending reads). When it is served, the simulator checks that its index is
    /// at least every index decided anywhere before this call; the outcome comes out of
    /// [`Simulation::take_reads`].
    pub fn read(&mut self, pid: NodeId, ctx: u64) -> Result<(), ReadErr> {
        let decided_anywhere = self.max_decided_anywhere();
        let Some(server) = self.servers.get_mut(&pid).and_then(Option::as_mut) else {
            return Err(ReadErr::NoLeader);
        };
        server.read_index(ctx)?;
        self.reads.pending.insert((pid, ctx), decided_anywhere);
        self.record(format!("read {ctx} on {pid}"));
        Ok(())
    }

    /// The reads served and failed since the last call.
    pub fn take_reads(&mut self) -> ReadOutcomes {
        ReadOutcomes {
            served: std::mem::take(&mut self.reads.served),
            failed: std::mem::take(&mut self.reads.failed),
        }
    }

    /// The reads asked and not yet served or failed.
    pub fn pending_reads(&self) -> usize {
        self.reads.pending.len()
    }

    /// The highest decided index of any server, the crashed ones' last known included.
    fn max_decided_anywhere(&self) -> usize {
        let live = self
            .servers
            .values()
            .flatten()
            .map(|s| s.get_decided_idx())
            .max()
            .unwrap_or(0);
        live.max(self.checker.max_decided_seen())
    }

    /// A crashed server's pending reads are gone with its process.
    pub(super) fn forget_reads_of(&mut self, pid: NodeId) {
        self.reads.pending.retain(|(p, _), _| *p != pid);
    }

    /// Collects the outcomes of every live server's reads and checks the served ones.
    pub(super) fn check_reads(&mut self) -> Result<(), String> {
        let mut states = Vec::new();
        let mut failures = Vec::new();
        for (pid, server) in self.servers.iter_mut() {
            if let Some(server) = server {
                let (s0, f0) = (states.len(), failures.len());
                server.take_read_states(&mut states);
                server.take_read_failures(&mut failures);
                for state in &states[s0..] {
                    self.reads.served.push((*pid, *state));
                }
                for failure in &failures[f0..] {
                    self.reads.failed.push((*pid, failure.clone()));
                }
            }
        }
        let start = self.reads.served.len() - states.len();
        for i in start..self.reads.served.len() {
            let (pid, state) = self.reads.served[i];
            let Some(bound) = self.reads.pending.remove(&(pid, state.ctx)) else {
                return Err(format!(
                    "read: server {pid} served read {} that was not asked (or twice)",
                    state.ctx
                ));
            };
            if state.index < bound {
                return Err(format!(
                    "linearizable read: server {pid} served read {} at index {}, but {bound} was decided before it was asked",
                    state.ctx, state.index
                ));
            }
        }
        let start = self.reads.failed.len() - failures.len();
        for i in start..self.reads.failed.len() {
            let (pid, ctx) = (self.reads.failed[i].0, self.reads.failed[i].1.ctx);
            if self.reads.pending.remove(&(pid, ctx)).is_none() {
                return Err(format!(
                    "read: server {pid} failed read {ctx} that was not pending"
                ));
            }
        }
        Ok(())
    }
}
