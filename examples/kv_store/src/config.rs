//! The node's config file: the OmniPaxos tables exactly as the guide's TOML
//! (`[cluster_config]`, `[server_config]`), plus `[node]` (this node's addresses and data
//! directory) and `[peers]` (pid = "address" of every other node). Every error names the file
//! and the field.

use omnipaxos::{ClusterConfig, OmniPaxosConfig, ServerConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    cluster_config: ClusterConfig,
    server_config: ServerConfig,
    node: NodeSection,
    #[serde(default)]
    peers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    peer_addr: String,
    http_addr: String,
    data_dir: String,
    #[serde(default = "default_tick_ms")]
    tick_ms: u64,
}

fn default_tick_ms() -> u64 {
    5
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub omnipaxos: OmniPaxosConfig,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub tick_ms: u64,
    /// Addresses of the other nodes, by pid.
    pub peers: BTreeMap<u64, SocketAddr>,
}

/// Why a config file was refused: the file, the field, and what is wrong.
#[derive(Debug)]
pub struct ConfigFileError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config file {}: field `{}`: {}",
            self.file, self.field, self.reason
        )
    }
}

impl NodeConfig {
    pub fn load(path: &str) -> Result<Self, ConfigFileError> {
        let err = |field: &str, reason: String| ConfigFileError {
            file: path.to_string(),
            field: field.to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err("-", format!("cannot read: {e}")))?;
        let file: File = toml::from_str(&text).map_err(|e| {
            let message = e.message().to_string();
            let field = message
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| "-".into());
            err(&field, message.replace('\n', " "))
        })?;
        let omnipaxos = OmniPaxosConfig {
            cluster_config: file.cluster_config,
            server_config: file.server_config,
        };
        omnipaxos
            .validate()
            .map_err(|e| err("cluster_config/server_config", e.to_string()))?;
        let addr = |field: &str, value: &str| -> Result<SocketAddr, ConfigFileError> {
            value
                .parse()
                .map_err(|e| err(field, format!("{value:?} is not an address: {e}")))
        };
        let mut peers = BTreeMap::new();
        for (pid, address) in &file.peers {
            let field = format!("peers.{pid}");
            let pid: u64 = pid
                .parse()
                .map_err(|_| err(&field, "the key must be a pid".into()))?;
            peers.insert(pid, addr(&field, address)?);
        }
        let me = omnipaxos.server_config.pid;
        for pid in &omnipaxos.cluster_config.nodes {
            if *pid != me && !peers.contains_key(pid) {
                return Err(err(
                    &format!("peers.{pid}"),
                    "missing the address of a cluster node".into(),
                ));
            }
        }
        if file.node.tick_ms == 0 {
            return Err(err("node.tick_ms", "must be positive".into()));
        }
        Ok(NodeConfig {
            peer_addr: addr("node.peer_addr", &file.node.peer_addr)?,
            http_addr: addr("node.http_addr", &file.node.http_addr)?,
            data_dir: PathBuf::from(file.node.data_dir),
            tick_ms: file.node.tick_ms,
            peers,
            omnipaxos,
        })
    }

    /// The TOML text of a config (used by the demo to write its files).
    pub fn to_toml(
        pid: u64,
        nodes: &[u64],
        peer_addrs: &BTreeMap<u64, SocketAddr>,
        http_addr: SocketAddr,
        data_dir: &str,
    ) -> String {
        let mut text = format!(
            "[cluster_config]\nconfiguration_id = 1\nnodes = {nodes:?}\n\n\
             [server_config]\npid = {pid}\nelection_tick_timeout = 10\nresend_message_tick_timeout = 40\n\n\
             [node]\npeer_addr = \"{}\"\nhttp_addr = \"{http_addr}\"\ndata_dir = {data_dir:?}\n\n[peers]\n",
            peer_addrs[&pid]
        );
        for (p, a) in peer_addrs {
            if *p != pid {
                text.push_str(&format!("{p} = \"{a}\"\n"));
            }
        }
        text
    }
}
