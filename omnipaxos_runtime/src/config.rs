//! The runtime's settings, and a node's whole configuration in the guide's TOML: the
//! `[cluster_config]` and `[server_config]` tables of `OmniPaxosConfig` plus a `[runtime]` table.
//!
//! ```toml
//! [cluster_config]
//! configuration_id = 1
//! nodes = [1, 2, 3]
//!
//! [server_config]
//! pid = 1
//!
//! [runtime]
//! tick_period_ms = 10
//! listen = "127.0.0.1:7001"
//! peers = { 2 = "127.0.0.1:7002", 3 = "127.0.0.1:7003" }
//! # tls = { ca = "ca.pem", cert = "node1.pem", key = "node1.key" }   # feature `tls`
//! ```

use crate::wire::NodeId;
use omnipaxos::errors::ConfigError;
use omnipaxos::OmniPaxosConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Election round used when a TOML file does not set `election_tick_timeout`: 30 ticks of
/// 10 ms. Why 300 ms: on a loaded 2-core machine (load 7-9) heartbeat replies were seen late by
/// more than 50 ms often enough to cause 18-29 needless elections a minute, and by more than
/// 150 ms rarely; a round of 300 ms keeps a busy node a leader, and a crashed leader is still
/// replaced within about three rounds (under a second).
pub const DEFAULT_ELECTION_TICKS: u64 = 30;
/// Resend period used when a TOML file does not set `resend_message_tick_timeout`: 20 ticks.
pub const DEFAULT_RESEND_TICKS: u64 = 20;

/// How the node's task runs. All fields are public; start from `Default`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeConfig {
    /// Wall-clock time per `tick()` of the core (10 ms). The core counts its election rounds,
    /// resends and batch flushes in ticks.
    pub tick_period: Duration,
    /// Requests from handles waiting to be taken by the node (1024). A full queue answers
    /// `TooManyOutstanding`.
    pub cmd_channel_capacity: usize,
    /// Messages from the transport waiting to be taken (10,000). A full queue drops messages.
    pub incoming_capacity: usize,
    /// Events buffered per `subscribe_events` receiver (1024); a slow receiver skips events.
    pub event_capacity: usize,
    /// How long `append_notify` waits for a decision before `Timeout` (5 s).
    pub append_notify_timeout: Duration,
    /// How long `read_linearizable` waits for a read index (5 s).
    pub read_timeout: Duration,
    /// How long an append waits for a reachable leader before `NoLeader`: about one election
    /// round (300 ms).
    pub leader_unreachable_timeout: Duration,
    /// Decided entries buffered per `subscribe_decided` subscriber (1024). A full buffer makes
    /// the node wait for that subscriber's next read; nothing is skipped.
    pub decided_channel_capacity: usize,
    /// Appends waiting for their outcome on this node, local and from other nodes (10,000);
    /// beyond, `append_notify` answers `TooManyOutstanding`.
    pub max_pending_appends: usize,
    /// Live `subscribe_decided` subscribers (128).
    pub max_decided_subscribers: usize,
    /// Inputs the node takes in one pass before it writes and sends (4096): bounds latency
    /// under a flood while still batching everything that arrived together.
    pub max_inputs_per_pass: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            tick_period: Duration::from_millis(10),
            cmd_channel_capacity: 1024,
            incoming_capacity: 10_000,
            event_capacity: 1024,
            append_notify_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            leader_unreachable_timeout: Duration::from_millis(300),
            decided_channel_capacity: 1024,
            max_pending_appends: 10_000,
            max_decided_subscribers: 128,
            max_inputs_per_pass: 4096,
        }
    }
}

/// Certificates for mutual TLS between peers (feature `tls`). Every node's certificate must be
/// signed by the cluster's CA and name the node as the DNS name `node-<pid>`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TlsFiles {
    /// The cluster's CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// The TCP transport's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Where this node accepts its peers' connections.
    pub listen: SocketAddr,
    /// Every peer's address (`host:port`), by pid.
    pub peers: BTreeMap<NodeId, String>,
    /// The largest frame on a connection (16 MiB): a larger one is refused (and logged) on
    /// receipt; a larger message is sent as several frames.
    pub max_frame_bytes: usize,
    /// The largest message (1 GiB, also the most allowed): a larger one is not sent, and one
    /// announced larger is refused on receipt. Messages above `max_frame_bytes` (a log
    /// synchronisation with a large snapshot) are sent in parts of at most 1 MiB (or that
    /// size), with heartbeats let through between them.
    pub max_message_bytes: usize,
    /// A connection that carried nothing for this long (not even a keepalive) is dead: it is
    /// closed, what was queued on it dropped, and a new one made (600 ms, two election rounds).
    pub peer_timeout: Duration,
    /// The longest wait between reconnection attempts (250 ms).
    pub max_backoff: Duration,
    /// Mutual TLS; `None` means plain TCP, which any host that can reach the port can talk to:
    /// use it only on a network you trust.
    pub tls: Option<TlsFiles>,
}

impl NetworkConfig {
    /// Plain TCP on `listen` with the given peers, other settings default.
    pub fn new(listen: SocketAddr, peers: BTreeMap<NodeId, String>) -> Self {
        Self {
            listen,
            peers,
            max_frame_bytes: 16 << 20,
            max_message_bytes: 1 << 30,
            peer_timeout: Duration::from_millis(600),
            max_backoff: Duration::from_millis(250),
            tls: None,
        }
    }
}

/// A whole node: the core's configuration, the runtime's and the network's.
///
/// **Election timing.** Read from TOML ([`NodeConfig::from_toml`]), a `[server_config]` without
/// `election_tick_timeout` or `resend_message_tick_timeout` gets the runtime's
/// [`DEFAULT_ELECTION_TICKS`] (a 300 ms round at the 10 ms tick) and [`DEFAULT_RESEND_TICKS`];
/// a `NodeConfig` or `ServerConfig` built in code keeps what its fields say, and
/// `ServerConfig::default()` says 1 tick (the core's default, a 10 ms round here). Building in
/// code, set both fields from those constants.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The core's configuration (`[cluster_config]`, `[server_config]`).
    pub omnipaxos: OmniPaxosConfig,
    /// The `[runtime]` table's timing and queue settings.
    pub runtime: RuntimeConfig,
    /// The `[runtime]` table's network settings.
    pub network: NetworkConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeTable {
    tick_period_ms: Option<u64>,
    append_notify_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    listen: SocketAddr,
    #[serde(default)]
    peers: BTreeMap<String, String>,
    max_frame_bytes: Option<usize>,
    max_message_bytes: Option<usize>,
    peer_timeout_ms: Option<u64>,
    tls: Option<TlsFiles>,
}

fn invalid(what: String) -> ConfigError {
    ConfigError::InvalidConfig(what)
}

impl NodeConfig {
    /// Reads and checks a node's TOML file.
    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        Self::from_toml(&std::fs::read_to_string(path)?)
    }

    /// Parses and checks a node's TOML text. Where the file leaves `election_tick_timeout` or
    /// `resend_message_tick_timeout` out, the runtime's defaults apply
    /// ([`DEFAULT_ELECTION_TICKS`], [`DEFAULT_RESEND_TICKS`]), not the core's one-tick round.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text)?;
        let runtime = table
            .remove("runtime")
            .ok_or_else(|| invalid("missing table [runtime]".into()))?;
        let runtime: RuntimeTable = runtime
            .try_into()
            .map_err(|e| invalid(format!("[runtime]: {e}")))?;
        let server = table
            .entry("server_config")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(server) = server.as_table_mut() {
            for (key, ticks) in [
                ("election_tick_timeout", DEFAULT_ELECTION_TICKS),
                ("resend_message_tick_timeout", DEFAULT_RESEND_TICKS),
            ] {
                server
                    .entry(key)
                    .or_insert(toml::Value::Integer(ticks as i64));
            }
        }
        let omnipaxos: OmniPaxosConfig = toml::Value::Table(table).try_into()?;
        omnipaxos.validate()?;
        let mut peers = BTreeMap::new();
        for (pid, address) in runtime.peers {
            let pid: NodeId = pid
                .parse()
                .map_err(|_| invalid(format!("[runtime] peers: `{pid}` is not a pid")))?;
            if pid == omnipaxos.server_config.pid {
                return Err(invalid(format!("[runtime] peers: {pid} is this node")));
            }
            peers.insert(pid, address);
        }
        let ms = |v: Option<u64>, default: Duration, name: &str| match v {
            Some(0) => Err(invalid(format!("[runtime] {name} must be positive"))),
            Some(v) => Ok(Duration::from_millis(v)),
            None => Ok(default),
        };
        let defaults = RuntimeConfig::default();
        let runtime_config = RuntimeConfig {
            tick_period: ms(
                runtime.tick_period_ms,
                defaults.tick_period,
                "tick_period_ms",
            )?,
            append_notify_timeout: ms(
                runtime.append_notify_timeout_ms,
                defaults.append_notify_timeout,
                "append_notify_timeout_ms",
            )?,
            read_timeout: ms(
                runtime.read_timeout_ms,
                defaults.read_timeout,
                "read_timeout_ms",
            )?,
            ..defaults
        };
        let mut network = NetworkConfig::new(runtime.listen, peers);
        network.peer_timeout = ms(
            runtime.peer_timeout_ms,
            network.peer_timeout,
            "peer_timeout_ms",
        )?;
        if let Some(max) = runtime.max_frame_bytes {
            if max < 1024 {
                return Err(invalid(
                    "[runtime] max_frame_bytes must be at least 1024".into(),
                ));
            }
            network.max_frame_bytes = max;
        }
        if let Some(max) = runtime.max_message_bytes {
            network.max_message_bytes = max;
        }
        if network.max_message_bytes < network.max_frame_bytes
            || network.max_message_bytes > crate::wire::DECODE_LIMIT
        {
            return Err(invalid(format!(
                "[runtime] max_message_bytes must be between max_frame_bytes ({}) and {}",
                network.max_frame_bytes,
                crate::wire::DECODE_LIMIT
            )));
        }
        network.tls = runtime.tls;
        Ok(Self {
            omnipaxos,
            runtime: runtime_config,
            network,
        })
    }
}
