//! [`SimConfig`]: how a simulation is set up, and [`SimError`]: why a run stopped early.

use super::NetworkConfig;
use crate::config::{ClusterConfig, OmniPaxosConfig, ServerConfig};
use crate::ids::NodeId;
use crate::quorum::FlexibleQuorum;
use crate::sequence_paxos::ReadLease;
use std::collections::BTreeMap;

/// How to set up a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// The configuration's id (1 unless simulating a later configuration).
    pub configuration_id: u32,
    /// The servers' pids.
    pub nodes: Vec<NodeId>,
    /// Settings every server gets (the pid is filled in per server).
    pub server_config: ServerConfig,
    /// Per-server leader priorities (default 0).
    pub priorities: BTreeMap<NodeId, u32>,
    /// Custom quorums, if any.
    pub flexible_quorum: Option<FlexibleQuorum>,
    /// The network's behaviour.
    pub network: NetworkConfig,
    /// How many recent events to keep for failure reports.
    pub trace_len: usize,
    /// Every this many steps the invariants are checked against the whole decided log of every
    /// server, not only what was decided since the last step (0: never; see
    /// [`Simulation::check_invariants_fully`]).
    pub full_check_every: u64,
    /// Leader leases for reads, set on every server (also after a restart).
    pub read_lease: Option<ReadLease>,
    /// Servers whose clock runs slow: server `pid` with `k` skips its tick every `k`-th step,
    /// so it ticks at `(k - 1) / k` of the others' rate (tick-rate skew, for leases).
    pub slow_servers: BTreeMap<NodeId, u64>,
    /// Leaders send new entries before writing them
    /// ([`OmniPaxos::take_outgoing_messages_pipelined`](crate::OmniPaxos::take_outgoing_messages_pipelined)),
    /// as `omnipaxos_runtime` does.
    pub pipelined_writes: bool,
    /// With `pipelined_writes`: the chance that a leader that just sent entries crashes before
    /// its own write of them (it restarts at the next step, from storage that lacks them).
    pub crash_before_write: f64,
}

impl SimConfig {
    /// Servers `nodes` on a reliable network, with `election_tick_timeout` 5 and
    /// `resend_message_tick_timeout` 20, so a step is a fraction of an election round.
    pub fn new(nodes: Vec<NodeId>, seed: u64) -> Self {
        Self {
            seed,
            configuration_id: 1,
            nodes,
            server_config: ServerConfig {
                election_tick_timeout: 5,
                resend_message_tick_timeout: 20,
                ..ServerConfig::default()
            },
            priorities: BTreeMap::new(),
            flexible_quorum: None,
            network: NetworkConfig::reliable(),
            trace_len: 300,
            full_check_every: 25,
            read_lease: None,
            slow_servers: BTreeMap::new(),
            pipelined_writes: false,
            crash_before_write: 0.0,
        }
    }

    pub(super) fn config_for(&self, pid: NodeId) -> OmniPaxosConfig {
        OmniPaxosConfig {
            cluster_config: ClusterConfig {
                configuration_id: self.configuration_id,
                nodes: self.nodes.clone(),
                flexible_quorum: self.flexible_quorum,
            },
            server_config: ServerConfig {
                pid,
                leader_priority: self.priorities.get(&pid).copied().unwrap_or(0),
                ..self.server_config.clone()
            },
        }
    }
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// The condition did not hold within the step budget.
    Timeout {
        /// Steps taken.
        steps: usize,
        /// The seed, to replay.
        seed: u64,
    },
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Timeout { steps, seed } => {
                write!(
                    f,
                    "condition not reached within {steps} steps (seed {seed})"
                )
            }
        }
    }
}

impl std::error::Error for SimError {}
