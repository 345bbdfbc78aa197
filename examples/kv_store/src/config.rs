//! The node's config file: the OmniPaxos tables exactly as the guide's TOML
//! (`[cluster_config]`, `[server_config]`), plus `[node]` (this node's addresses and data
//! directory) and `[peers]` (pid = "address" of every other node). Every error names the file
//! and the field.

use omnipaxos::{ClusterConfig, OmniPaxosConfig, ServerConfig};
use omnipaxos_runtime::config::TlsFiles;
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
    /// HTTP addresses of the other nodes: where a node fetches the state from when it needs a
    /// state transfer, and the dashboard's view of the whole cluster.
    #[serde(default)]
    http_peers: BTreeMap<String, String>,
    /// Mutual TLS between the nodes: the cluster's CA, this node's certificate and key (PEM
    /// files; relative paths are relative to the config file's directory).
    tls: Option<TlsTable>,
    /// Clients' credentials.
    #[serde(default)]
    auth: AuthTable,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthTable {
    /// A file holding the password `root` gets at the first start of the cluster.
    root_password_file: Option<PathBuf>,
    #[serde(default = "default_token_ttl")]
    token_ttl_secs: u64,
    /// `GET /metrics` without credentials (for a scraper on a trusted network).
    #[serde(default)]
    metrics_open: bool,
}

impl Default for AuthTable {
    fn default() -> Self {
        Self {
            root_password_file: None,
            token_ttl_secs: default_token_ttl(),
            metrics_open: false,
        }
    }
}

fn default_token_ttl() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsTable {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    peer_addr: String,
    http_addr: String,
    data_dir: String,
    #[serde(default = "default_tick_ms")]
    tick_ms: u64,
    /// For a node that joins in a reconfiguration: pids of nodes of the previous configuration
    /// (their addresses under `[peers]`) to fetch its state from.
    #[serde(default)]
    join_from: Vec<u64>,
    /// Leader leases for reads: how long (in ticks) a confirmed leader answers reads at once.
    /// Every node must use the same value; safe if tick rates differ by at most
    /// `read_lease_max_drift_percent` (default 10).
    #[serde(default)]
    read_lease_ticks: Option<u64>,
    #[serde(default = "default_drift")]
    read_lease_max_drift_percent: u64,
    /// Size limit of one chunk of a state transfer (bytes of one HTTP body).
    #[serde(default = "default_chunk_bytes")]
    state_chunk_bytes: usize,
    /// Run the peer port without TLS: anyone who can reach it can act as a node. Only for a
    /// network where every host and user is trusted; the node warns every minute.
    #[serde(default)]
    insecure_peers: bool,
    /// Host names clients use for this node (IP addresses and `localhost` are always taken):
    /// a request naming another host is refused, so a page cannot reach the node through a
    /// name made to resolve to it.
    #[serde(default)]
    http_hosts: Vec<String>,
    /// Most HTTP connections at once (default: half the process's open-file limit).
    #[serde(default)]
    http_max_connections: Option<usize>,
    /// Serve clients over plain HTTP instead of HTTPS (tokens and passwords travel in the
    /// clear): only on a loopback address, unless `plain_http_beyond_loopback` too.
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    plain_http_beyond_loopback: bool,
    /// The cluster's name, kept in the data directory's identity (default: derived from the
    /// cluster's CA certificate, or `kv_store` without one): a node refuses a directory of
    /// another cluster.
    #[serde(default)]
    cluster_id: Option<String>,
    /// After a fault a restart can mend (a failed disk), the node keeps answering (`/health`
    /// says why) this long, then exits with code 75 for a supervisor to restart it.
    #[serde(default = "default_fault_grace")]
    fault_grace_secs: u64,
}

fn default_fault_grace() -> u64 {
    crate::serve::FAULT_GRACE.as_secs()
}

fn default_chunk_bytes() -> usize {
    crate::transfer::DEFAULT_CHUNK_BYTES
}

fn default_drift() -> u64 {
    10
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
    /// Nodes of the previous configuration to fetch the state from (empty unless joining).
    pub join_from: Vec<u64>,
    /// Leader leases for reads, if configured.
    pub read_lease: Option<omnipaxos::ReadLease>,
    /// Addresses of the other nodes, by pid.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// HTTP addresses of the other nodes, by pid (donors of state transfers, and the
    /// dashboard; a node without them cannot catch up once the others compacted its gap).
    pub http_peers: BTreeMap<u64, SocketAddr>,
    /// Size limit of one chunk of a state transfer.
    pub state_chunk_bytes: usize,
    /// How the peer port is secured.
    pub peer_security: PeerSecurity,
    /// The cluster's name in the data directory's identity.
    pub cluster_id: String,
    /// How long a node with a fault a restart can mend answers before it exits.
    pub fault_grace: std::time::Duration,
    /// Host names clients may use besides IP addresses and `localhost`.
    pub http_hosts: Vec<String>,
    /// Most HTTP connections at once.
    pub http_max_connections: usize,
    /// HTTPS for clients with the `[tls]` files (client certificates optional), or `None`
    /// for plain HTTP (`plain_http = true`).
    pub https: Option<TlsFiles>,
    /// The root password's file, read at start (`[auth] root_password_file`).
    pub root_password_file: Option<PathBuf>,
    /// How long a token is valid.
    pub token_ttl: std::time::Duration,
    /// `GET /metrics` without credentials.
    pub metrics_open: bool,
}

/// How nodes know each other on the peer port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSecurity {
    /// Mutual TLS with certificates from the cluster's CA (the default: a config without a
    /// `[tls]` table must say `insecure_peers = true`).
    Tls(TlsFiles),
    /// Plain TCP: a peer is whoever claims its pid (`insecure_peers = true`).
    Insecure,
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
        let by_pid = |table: &str, entries: &BTreeMap<String, String>| {
            let mut addresses = BTreeMap::new();
            for (pid, address) in entries {
                let field = format!("{table}.{pid}");
                let pid: u64 = pid
                    .parse()
                    .map_err(|_| err(&field, "the key must be a pid".into()))?;
                addresses.insert(pid, addr(&field, address)?);
            }
            Ok(addresses)
        };
        let peers = by_pid("peers", &file.peers)?;
        let http_peers = by_pid("http_peers", &file.http_peers)?;
        let me = omnipaxos.server_config.pid;
        for pid in &omnipaxos.cluster_config.nodes {
            if *pid != me && !peers.contains_key(pid) {
                return Err(err(
                    &format!("peers.{pid}"),
                    "missing the address of a cluster node".into(),
                ));
            }
        }
        for pid in &file.node.join_from {
            if !peers.contains_key(pid) {
                return Err(err(
                    "node.join_from",
                    format!("node {pid} has no address under [peers]"),
                ));
            }
        }
        let chunk_limit = 4096..=crate::transfer::MAX_CHUNK_BYTES;
        if !chunk_limit.contains(&file.node.state_chunk_bytes) {
            return Err(err(
                "node.state_chunk_bytes",
                format!(
                    "must be from {} to {}",
                    chunk_limit.start(),
                    chunk_limit.end()
                ),
            ));
        }
        if file.node.tick_ms == 0 {
            return Err(err("node.tick_ms", "must be positive".into()));
        }
        if file.node.read_lease_max_drift_percent >= 100 {
            return Err(err(
                "node.read_lease_max_drift_percent",
                "must be below 100".into(),
            ));
        }
        let peer_addr = addr("node.peer_addr", &file.node.peer_addr)?;
        let http_addr = addr("node.http_addr", &file.node.http_addr)?;
        let base = std::path::Path::new(path)
            .parent()
            .unwrap_or(std::path::Path::new("."));
        let peer_security = match (file.tls, file.node.insecure_peers) {
            (Some(_), true) => {
                return Err(err(
                    "node.insecure_peers",
                    "a [tls] table and insecure_peers = true: choose one".into(),
                ))
            }
            (Some(tls), false) => {
                let files = TlsFiles {
                    ca: base.join(tls.ca),
                    cert: base.join(tls.cert),
                    key: base.join(tls.key),
                };
                for (field, file) in [
                    ("tls.ca", &files.ca),
                    ("tls.cert", &files.cert),
                    ("tls.key", &files.key),
                ] {
                    if !file.is_file() {
                        return Err(err(field, format!("{} is not a file", file.display())));
                    }
                }
                PeerSecurity::Tls(files)
            }
            (None, true) => PeerSecurity::Insecure,
            (None, false) => {
                return Err(err(
                    "tls",
                    "no [tls] table: the peer port would take anyone who claims a node's pid. \
                     Create certificates with `kv_store certs --nodes 1,2,3 --out certs` and add \
                     [tls] ca/cert/key, or set insecure_peers = true under [node] on a network \
                     you trust entirely"
                        .into(),
                ))
            }
        };
        let cluster_id = match (file.node.cluster_id, &peer_security) {
            (Some(id), _) if id.is_empty() || id.len() > 256 => {
                return Err(err("node.cluster_id", "1 to 256 characters".into()))
            }
            (Some(id), _) => id,
            (None, PeerSecurity::Tls(files)) => {
                let ca = std::fs::read(&files.ca)
                    .map_err(|e| err("tls.ca", format!("{}: {e}", files.ca.display())))?;
                let digest = ring::digest::digest(&ring::digest::SHA256, &ca);
                let hex: String = digest.as_ref()[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("ca-{hex}")
            }
            (None, PeerSecurity::Insecure) => "kv_store".to_string(),
        };
        // A node that fell behind a compaction can only catch up by a state transfer from
        // another node's HTTP port: a cluster where it cannot is refused here, not later.
        for pid in &omnipaxos.cluster_config.nodes {
            if *pid != me && !http_peers.contains_key(pid) {
                return Err(err(
                    &format!("http_peers.{pid}"),
                    "missing the HTTP address of a cluster node (where a node that fell behind \
                     fetches the state, and the dashboard's view of the cluster)"
                        .into(),
                ));
            }
        }
        let http_max_connections = file
            .node
            .http_max_connections
            .unwrap_or_else(crate::http_server::default_max_connections);
        if http_max_connections == 0 {
            return Err(err("node.http_max_connections", "must be positive".into()));
        }
        let https = match (&peer_security, file.node.plain_http) {
            (_, true) => {
                let loopback = http_addr.ip().is_loopback();
                if !loopback && !file.node.plain_http_beyond_loopback {
                    return Err(err(
                        "node.plain_http",
                        format!(
                            "plain HTTP on {http_addr} would carry passwords and tokens in the clear \
                             beyond this machine; use HTTPS, or set plain_http_beyond_loopback = true"
                        ),
                    ));
                }
                None
            }
            (PeerSecurity::Tls(files), false) => Some(files.clone()),
            (PeerSecurity::Insecure, false) => return Err(err(
                "node.plain_http",
                "HTTPS for clients uses the [tls] files, and there are none: add [tls], or set \
                     plain_http = true"
                    .into(),
            )),
        };
        if file.auth.token_ttl_secs == 0 {
            return Err(err("auth.token_ttl_secs", "must be positive".into()));
        }
        let root_password_file = file.auth.root_password_file.map(|p| base.join(p));
        if let Some(f) = &root_password_file {
            if !f.is_file() {
                return Err(err(
                    "auth.root_password_file",
                    format!("{} is not a file", f.display()),
                ));
            }
        }
        let read_lease = file
            .node
            .read_lease_ticks
            .map(|duration_ticks| omnipaxos::ReadLease {
                duration_ticks,
                max_drift_percent: file.node.read_lease_max_drift_percent,
            });
        Ok(NodeConfig {
            peer_addr,
            http_addr,
            data_dir: PathBuf::from(file.node.data_dir),
            tick_ms: file.node.tick_ms,
            join_from: file.node.join_from,
            read_lease,
            peers,
            http_peers,
            state_chunk_bytes: file.node.state_chunk_bytes,
            peer_security,
            cluster_id,
            fault_grace: std::time::Duration::from_secs(file.node.fault_grace_secs),
            http_hosts: file.node.http_hosts,
            http_max_connections,
            https,
            root_password_file,
            token_ttl: std::time::Duration::from_secs(file.auth.token_ttl_secs),
            metrics_open: file.auth.metrics_open,
            omnipaxos,
        })
    }
}

/// What a config file says, for writing one (the demo writes its nodes' files with it).
pub struct NodeFile<'a> {
    pub pid: u64,
    pub configuration_id: u32,
    pub nodes: &'a [u64],
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: &'a str,
    /// The other nodes' peer addresses.
    pub peers: &'a BTreeMap<u64, SocketAddr>,
    /// The nodes' HTTP addresses (this node's own is skipped): donors of state transfers, and
    /// the dashboard.
    pub http_peers: &'a BTreeMap<u64, SocketAddr>,
    /// For a node that joins a later configuration: nodes of the previous one (in `peers`).
    pub join_from: &'a [u64],
    /// Leader leases for reads, in ticks.
    pub read_lease_ticks: Option<u64>,
    /// Size limit of a state transfer's chunks (the default if `None`).
    pub state_chunk_bytes: Option<usize>,
    /// The directory `kv_store certs` wrote this node's certificate to (`[tls]`), or `None`
    /// for `insecure_peers = true`.
    pub certs_dir: Option<&'a std::path::Path>,
    /// Most HTTP connections at once (the default if `None`).
    pub http_max_connections: Option<usize>,
    /// The file holding root's first password.
    pub root_password_file: Option<&'a std::path::Path>,
}

impl NodeFile<'_> {
    /// The file's TOML text.
    pub fn to_toml(&self) -> String {
        let NodeFile {
            pid,
            configuration_id,
            nodes,
            peer_addr,
            http_addr,
            data_dir,
            ..
        } = self;
        let mut text = format!(
            "[cluster_config]\nconfiguration_id = {configuration_id}\nnodes = {nodes:?}\n\n\
             [server_config]\npid = {pid}\nelection_tick_timeout = 20\nresend_message_tick_timeout = 40\n\n\
             [node]\npeer_addr = \"{peer_addr}\"\nhttp_addr = \"{http_addr}\"\ndata_dir = {data_dir:?}\n"
        );
        if !self.join_from.is_empty() {
            text.push_str(&format!("join_from = {:?}\n", self.join_from));
        }
        if let Some(ticks) = self.read_lease_ticks {
            text.push_str(&format!("read_lease_ticks = {ticks}\n"));
        }
        if let Some(bytes) = self.state_chunk_bytes {
            text.push_str(&format!("state_chunk_bytes = {bytes}\n"));
        }
        if let Some(n) = self.http_max_connections {
            text.push_str(&format!("http_max_connections = {n}\n"));
        }
        if self.certs_dir.is_none() {
            text.push_str("insecure_peers = true\nplain_http = true\n");
        }
        if let Some(file) = self.root_password_file {
            text.push_str(&format!("\n[auth]\nroot_password_file = {file:?}\n"));
        }
        if let Some(dir) = self.certs_dir {
            let files = crate::certs::node_files(dir, *pid);
            text.push_str(&format!(
                "\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
                files.ca, files.cert, files.key
            ));
        }
        for (table, addresses) in [("peers", self.peers), ("http_peers", self.http_peers)] {
            text.push_str(&format!("\n[{table}]\n"));
            for (p, a) in addresses {
                if p != pid {
                    text.push_str(&format!("{p} = \"{a}\"\n"));
                }
            }
        }
        text
    }
}
