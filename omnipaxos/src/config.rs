//! Configuration: [`ClusterConfig`] is shared by all servers of a configuration, [`ServerConfig`]
//! is per server, and [`OmniPaxosConfig`] combines the two and builds an [`OmniPaxos`] instance.

use crate::errors::ConfigError;
use crate::ids::{ConfigurationId, NodeId};
use crate::quorum::FlexibleQuorum;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Default initial capacity of the outgoing message buffer.
const DEFAULT_BUFFER_SIZE: usize = 100_000;
/// Default ticks per heartbeat round: every tick ends a round.
const DEFAULT_ELECTION_TICK_TIMEOUT: u64 = 1;
/// Default ticks between checks for messages to resend.
const DEFAULT_RESEND_MESSAGE_TICK_TIMEOUT: u64 = 100;
/// Default ticks after which a partial batch is flushed.
const DEFAULT_FLUSH_BATCH_TICK_TIMEOUT: u64 = 200;

/// The configuration of a whole server, as one value (and one TOML file with `toml_config`).
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "toml_config", derive(Deserialize), serde(default))]
pub struct OmniPaxosConfig {
    /// Settings every server of the configuration shares.
    pub cluster_config: ClusterConfig,
    /// Settings of this server.
    pub server_config: ServerConfig,
}

impl OmniPaxosConfig {
    /// Checks both parts and that this server's pid is one of the cluster's nodes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster_config.validate()?;
        self.server_config.validate()?;
        let pid = self.server_config.pid;
        if !self.cluster_config.nodes.contains(&pid) {
            return Err(invalid(format!(
                "server pid {pid} is not in the cluster's nodes {:?}",
                self.cluster_config.nodes
            )));
        }
        Ok(())
    }

    /// Reads, parses and validates a TOML file with the tables `[cluster_config]` and
    /// `[server_config]`. Missing keys take their defaults; unknown keys are ignored.
    #[cfg(feature = "toml_config")]
    pub fn with_toml(file_path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file_path)?;
        let config: OmniPaxosConfig = toml::from_str(&text)?;
        config.validate()?;
        Ok(config)
    }
}

/// The settings all servers of one configuration share.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "toml_config", serde(default))]
pub struct ClusterConfig {
    /// Identifies this configuration; must be non-zero and should grow with every reconfiguration.
    pub configuration_id: ConfigurationId,
    /// Every server of the configuration, this one included. Distinct and non-zero.
    pub nodes: Vec<NodeId>,
    /// Custom quorum sizes; `None` means majorities.
    pub flexible_quorum: Option<FlexibleQuorum>,
}

/// The most servers a configuration proposed through `reconfigure` may name: every message
/// round goes to each of them, so a list of thousands is a mistake, not a cluster.
pub(crate) const MAX_RECONFIGURATION_NODES: usize = 1024;

impl ClusterConfig {
    /// Checks a configuration proposed to follow configuration `current`: valid on its own,
    /// with a greater id (a StopSign naming the current id or an older one would retire the
    /// cluster into a configuration that already ran), and at most
    /// [`MAX_RECONFIGURATION_NODES`] servers.
    pub(crate) fn validate_successor_of(
        &self,
        current: ConfigurationId,
    ) -> Result<(), ConfigError> {
        self.validate()?;
        if self.configuration_id <= current {
            return Err(invalid(format!(
                "configuration_id {} must be greater than the current configuration's ({current})",
                self.configuration_id
            )));
        }
        if self.nodes.len() > MAX_RECONFIGURATION_NODES {
            return Err(invalid(format!(
                "{} nodes: a configuration may name at most {MAX_RECONFIGURATION_NODES}",
                self.nodes.len()
            )));
        }
        Ok(())
    }

    /// Checks the configuration: a non-zero id, at least one node, distinct non-zero pids, and
    /// flexible quorums whose read and write quorums intersect.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.configuration_id == 0 {
            return Err(invalid("configuration_id must be non-zero"));
        }
        if self.nodes.is_empty() {
            return Err(invalid("nodes must name at least one server"));
        }
        if self.nodes.contains(&0) {
            return Err(invalid(
                "pid 0 is reserved for \"no server\"; use pids >= 1",
            ));
        }
        let distinct: BTreeSet<_> = self.nodes.iter().collect();
        if distinct.len() != self.nodes.len() {
            return Err(invalid(format!(
                "nodes has duplicate pids: {:?}",
                self.nodes
            )));
        }
        if let Some(fq) = self.flexible_quorum {
            let n = self.nodes.len();
            let (r, w) = (fq.read_quorum_size, fq.write_quorum_size);
            if r + w <= n {
                return Err(invalid(format!(
                    "read_quorum_size ({r}) + write_quorum_size ({w}) must exceed the number of nodes ({n})"
                )));
            }
            if !(2..=n).contains(&r) {
                return Err(invalid(format!(
                    "read_quorum_size ({r}) must be in 2..={n}"
                )));
            }
            if !(2..=n).contains(&w) {
                return Err(invalid(format!(
                    "write_quorum_size ({w}) must be in 2..={n}"
                )));
            }
            if r < w {
                return Err(invalid(format!(
                    "read_quorum_size ({r}) must be at least write_quorum_size ({w})"
                )));
            }
        }
        Ok(())
    }
}

/// The settings of one server.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "toml_config", derive(Deserialize), serde(default))]
pub struct ServerConfig {
    /// This server's pid; non-zero and one of the cluster's nodes.
    pub pid: NodeId,
    /// Ticks per heartbeat round of leader election (non-zero; default 1, as upstream).
    /// Messages must be delivered within one round for a heartbeat reply to count; a leader is
    /// stood against after two round ends in a row without its reply, so a failover takes about
    /// three rounds. The default fits a loop that ticks every 100 ms or so. Under
    /// `omnipaxos_runtime`, which ticks every 10 ms, a `ServerConfig` built in code keeps the
    /// value given here (1 = a 10 ms round, far too short for a real network): set it to
    /// `omnipaxos_runtime::config::DEFAULT_ELECTION_TICKS` (30, a 300 ms round), which is what
    /// the runtime's TOML loader (`NodeConfig::from_toml`) picks when the file leaves it out.
    pub election_tick_timeout: u64,
    /// Ticks between checks for lost messages to resend (non-zero).
    pub resend_message_tick_timeout: u64,
    /// Initial capacity of the outgoing message buffer (non-zero).
    pub buffer_size: usize,
    /// Entries collected before they are written and replicated as one batch (non-zero; 1 = no
    /// batching).
    pub batch_size: usize,
    /// Ticks after which a partial batch is flushed anyway; 0 disables the timer.
    pub flush_batch_tick_timeout: u64,
    /// Preference for leadership: among equal ballot numbers the higher priority wins.
    pub leader_priority: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            pid: 0,
            election_tick_timeout: DEFAULT_ELECTION_TICK_TIMEOUT,
            resend_message_tick_timeout: DEFAULT_RESEND_MESSAGE_TICK_TIMEOUT,
            buffer_size: DEFAULT_BUFFER_SIZE,
            batch_size: 1,
            flush_batch_tick_timeout: DEFAULT_FLUSH_BATCH_TICK_TIMEOUT,
            leader_priority: 0,
        }
    }
}

impl ServerConfig {
    /// Checks that the pid and every timeout and size that must be non-zero are.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pid == 0 {
            return Err(invalid("pid must be non-zero"));
        }
        for (name, value) in [
            ("election_tick_timeout", self.election_tick_timeout),
            (
                "resend_message_tick_timeout",
                self.resend_message_tick_timeout,
            ),
            ("buffer_size", self.buffer_size as u64),
            ("batch_size", self.batch_size as u64),
        ] {
            if value == 0 {
                return Err(invalid(format!("{name} must be non-zero")));
            }
        }
        Ok(())
    }
}

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidConfig(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: Vec<NodeId>) -> ClusterConfig {
        ClusterConfig {
            configuration_id: 1,
            nodes,
            flexible_quorum: None,
        }
    }

    fn assert_invalid(result: Result<(), ConfigError>, needle: &str) {
        match result {
            Err(ConfigError::InvalidConfig(msg)) => {
                assert!(msg.contains(needle), "{msg:?} should mention {needle:?}")
            }
            other => panic!("expected InvalidConfig mentioning {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_published_api() {
        let s = ServerConfig::default();
        assert_eq!(
            (
                s.pid,
                s.election_tick_timeout,
                s.resend_message_tick_timeout
            ),
            (0, 1, 100)
        );
        assert_eq!((s.buffer_size, s.batch_size), (100_000, 1));
        assert_eq!((s.flush_batch_tick_timeout, s.leader_priority), (200, 0));
        assert_eq!(ClusterConfig::default(), cluster(vec![]).clone_with_id(0));
    }

    impl ClusterConfig {
        fn clone_with_id(mut self, id: ConfigurationId) -> Self {
            self.configuration_id = id;
            self
        }
    }

    #[test]
    fn cluster_validation() {
        assert!(cluster(vec![1]).validate().is_ok(), "one node is allowed");
        assert!(
            cluster(vec![5, 6, 7]).validate().is_ok(),
            "sparse pids are fine"
        );
        assert_invalid(cluster(vec![]).validate(), "at least one");
        assert_invalid(
            cluster(vec![1, 2]).clone_with_id(0).validate(),
            "configuration_id",
        );
        assert_invalid(cluster(vec![0, 1]).validate(), "pid 0");
        assert_invalid(cluster(vec![1, 2, 2]).validate(), "duplicate");
    }

    #[test]
    fn flexible_quorum_validation() {
        let with = |r, w, n: u64| ClusterConfig {
            flexible_quorum: Some(FlexibleQuorum {
                read_quorum_size: r,
                write_quorum_size: w,
            }),
            ..cluster((1..=n).collect())
        };
        assert!(with(5, 3, 7).validate().is_ok());
        assert!(with(4, 4, 7).validate().is_ok());
        assert_invalid(with(4, 3, 7).validate(), "must exceed");
        assert_invalid(with(8, 3, 7).validate(), "read_quorum_size (8)");
        assert_invalid(with(6, 1, 7).validate(), "write_quorum_size (1)");
        assert_invalid(with(3, 5, 7).validate(), "at least write_quorum_size");
    }

    #[test]
    fn server_validation_and_membership() {
        let server = |pid| ServerConfig {
            pid,
            ..Default::default()
        };
        assert_invalid(server(0).validate(), "pid");
        let zero_batch = ServerConfig {
            batch_size: 0,
            ..server(1)
        };
        assert_invalid(zero_batch.validate(), "batch_size");
        let op = OmniPaxosConfig {
            cluster_config: cluster(vec![1, 2, 3]),
            server_config: server(4),
        };
        assert_invalid(op.validate(), "not in the cluster");
    }
}
