//! Runs one node: opens its storage (one directory per configuration under `data_dir` for the
//! log, `data_dir/state` for the keys), binds
//! the peer transport and the HTTP listener, starts the runtime's node and the state machine,
//! and serves HTTP until the process is stopped.

use crate::client::Client;
use crate::config::PeerSecurity;
use crate::entry::KvCommand;
use crate::state_store::StateStore;
use crate::telemetry::Telemetry;
use crate::{auth, config, health, http, http_auth, http_guard, http_server, node};
use omnipaxos::OmniPaxos;
use omnipaxos_runtime::directory::DirectoryStorage;
use omnipaxos_runtime::transport::tcp::TcpTransport;
use omnipaxos_runtime::transport::tls;
use omnipaxos_runtime::{spawn_reconfigurable, NetworkConfig, RuntimeConfig, StorageFactory};
use omnipaxos_storage::journal_storage::JournalStorage;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// The version of the data directory's formats (the journal's, the state store's).
pub const DATA_FORMAT: u32 = 1;

/// Checks that the data directory is this node's (writing its identity at the first start):
/// a node started on another node's directory, another cluster's, or a newer release's,
/// refuses to run with promises that are not its own.
fn claim_data_dir(config: &config::NodeConfig) -> Result<(), String> {
    use omnipaxos_storage::files::identity::{self, DirIdentity, IDENTITY_FILE};
    let dir = &config.data_dir;
    let has_state = match std::fs::read_dir(dir) {
        Ok(names) => names
            .flatten()
            .any(|e| e.file_name() != IDENTITY_FILE && e.file_name() != "lock"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let expected = DirIdentity {
        cluster: config.cluster_id.clone(),
        pid: config.omnipaxos.server_config.pid,
        format: DATA_FORMAT,
    };
    identity::claim(
        &omnipaxos_storage::files::OsFiles,
        dir,
        &expected,
        has_state,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Why a node stopped: the process's exit code and the message.
#[derive(Debug)]
pub struct Stopped {
    pub code: i32,
    pub reason: String,
}

impl From<String> for Stopped {
    fn from(reason: String) -> Self {
        // A store that refuses its files says "corrupt at byte" (`Corruption`'s message).
        let code = match reason.contains("corrupt at byte") {
            true => health::EXIT_CORRUPT,
            false => 1,
        };
        Self { code, reason }
    }
}

/// How long a node with a fault a restart can mend keeps answering (`/health` says why) before
/// it exits with [`health::EXIT_FAULT`], by default (`[node] fault_grace_secs`).
pub const FAULT_GRACE: Duration = Duration::from_secs(10);

/// Runs the node described by `config`.
pub async fn serve(config: config::NodeConfig) -> Result<(), Stopped> {
    let pid = config.omnipaxos.server_config.pid;
    let cluster = config.omnipaxos.cluster_config.clone();
    // A joiner's history starts with the handover of the configuration before its own.
    let first_config = match config.join_from.is_empty() {
        true => cluster.configuration_id,
        false => 0,
    };
    claim_data_dir(&config).map_err(|reason| Stopped {
        code: health::EXIT_CORRUPT,
        reason,
    })?;
    let mut storage = DirectoryStorage::new(&config.data_dir);
    // The log holds about a checkpoint's worth of entries: a journal of a few times that.
    storage.set_journal_rewrite_bytes(crate::compaction::JOURNAL_REWRITE_BYTES);
    #[cfg(feature = "failpoints")]
    if let Some(writes) = std::env::var("KV_STORE_FAIL_JOURNAL_WRITES_AFTER")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        use omnipaxos_storage::files::{faulty::FaultyFiles, os};
        tracing::warn!("failpoint: the journal's writes fail after {writes}");
        storage.set_file_system(Arc::new(FaultyFiles::failing_after(os(), writes)));
    }
    let first: JournalStorage<KvCommand> = storage.open(cluster.configuration_id)?;
    let mut op: OmniPaxos<KvCommand, JournalStorage<KvCommand>> = cluster
        .build_for_server(config.omnipaxos.server_config.clone(), first)
        .map_err(|e| e.to_string())?;
    op.set_read_lease(config.read_lease);
    // The log's snapshots are markers of the state store's checkpoints: only this node knows
    // when its state is durable, so no other node may compact its log.
    op.set_remote_compaction(false);
    let peers = config
        .peers
        .iter()
        .map(|(pid, addr)| (*pid, addr.to_string()))
        .collect();
    let mut network = NetworkConfig::new(config.peer_addr, peers);
    match &config.peer_security {
        PeerSecurity::Tls(files) => network.tls = Some(files.clone()),
        PeerSecurity::Insecure => {
            tokio::spawn(warn_insecure_peers(pid, config.peer_addr));
        }
    }
    let transport = TcpTransport::bind(pid, network)
        .map_err(|e| format!("cannot listen on {} (peers): {e}", config.peer_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.http_addr))?;
    let runtime = RuntimeConfig {
        tick_period: Duration::from_millis(config.tick_ms),
        append_notify_timeout: node::REQUEST_TIMEOUT,
        read_timeout: node::REQUEST_TIMEOUT,
        // Entries wait here while the node copies the state (and applies nothing): 1024 of
        // 100 kB would be 100 MB of memory. The runtime reads on from the log when there is
        // room; nothing is skipped.
        decided_channel_capacity: 64,
        ..RuntimeConfig::default()
    };
    let mut registry = Registry::default();
    storage.register_prometheus(&mut registry);
    let handle = spawn_reconfigurable(op, runtime, transport, storage, config.join_from.clone());
    handle.register_prometheus(&mut registry);
    let health = Arc::new(health::Health::default());
    health.register_prometheus(&mut registry);
    let telemetry = Arc::new(Telemetry::new(registry));
    tokio::spawn(telemetry.clone().record_timeline(handle.metrics()));
    // This node's client for the others' HTTP APIs: its node certificate is its credential.
    let node_client = match &config.https {
        Some(files) => Client::https(&files.ca, Some((&files.cert, &files.key)))
            .map_err(|e| format!("the [tls] files: {e}"))?,
        None => Client::plain(),
    };
    let https = match &config.https {
        Some(files) => {
            let server = tls::server_config(files, tls::ClientAuth::Optional)
                .map_err(|e| format!("the [tls] files: {e}"))?;
            Some(tokio_rustls::TlsAcceptor::from(server))
        }
        None => {
            tracing::warn!(http = %config.http_addr, "plain_http = true: clients' passwords and tokens travel in the clear");
            None
        }
    };
    let root_password = match &config.root_password_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    let store = StateStore::open(&config.data_dir.join("state"))?;
    let donors = config.http_peers.iter().filter(|(p, _)| **p != pid);
    let donors = donors.map(|(p, a)| (*p, *a)).collect();
    let donors = crate::transfer::HttpDonors::new(donors, node_client.clone());
    let node = node::Node::start(
        pid,
        first_config,
        handle,
        store,
        donors,
        config.state_chunk_bytes,
        health.clone(),
    )
    .await?;
    match root_password {
        // Creates root at the first start of the cluster; ignored by the state machine once
        // the cluster has users.
        Some(password) if !node.auth_is_set_up() => {
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
                .await
                .map_err(|e| e.to_string())??;
            let bootstrapping = node.clone();
            tokio::spawn(async move {
                if let Err(e) = bootstrapping.bootstrap(hash).await {
                    tracing::error!("cannot create root: {e}");
                }
            });
        }
        Some(_) => {}
        None if !node.auth_is_set_up() => tracing::warn!(
            "the cluster has no user yet and this node has no [auth] root_password_file: \
             another node must create root"
        ),
        None => {}
    }
    let compared = config.http_peers.iter().filter(|(p, _)| **p != pid);
    tokio::spawn(crate::divergence::compare_with_peers(
        node.clone(),
        compared.map(|(p, a)| (*p, *a)).collect(),
        node_client.clone(),
        health.clone(),
    ));
    let mut http_addrs = config.http_peers.clone();
    http_addrs.insert(pid, config.http_addr);
    let app = http::App {
        node: node.clone(),
        telemetry,
        http_addrs: Arc::new(http_addrs),
        guard: Arc::new(http_guard::Guard {
            port: config.http_addr.port(),
            host_names: config.http_hosts.clone(),
        }),
        gate: Arc::new(http_auth::Gate::new(
            node.clone(),
            config.metrics_open,
            config.token_ttl,
        )),
        node_client,
    };
    tracing::info!(pid, peer = %config.peer_addr, http = %config.http_addr, "node started");
    let serving = http_server::serve(
        http_listener,
        http::router(app),
        config.http_max_connections,
        https,
    );
    let outcome = tokio::select! {
        () = serving => Ok(()),
        fault = exit_after_fault(&health, config.fault_grace) => Err(fault),
    };
    node.handle().shutdown().await;
    outcome
}

/// Returns `grace` after a fault that a restart can mend.
async fn exit_after_fault(health: &health::Health, grace: Duration) -> Stopped {
    let mut faults = health.subscribe();
    loop {
        if let Some(fault) = faults.borrow_and_update().clone() {
            if fault.kind.restart_mends() {
                tracing::error!(
                    "exiting in {} s for a restart ({:?}: {})",
                    grace.as_secs(),
                    fault.kind,
                    fault.cause
                );
                tokio::time::sleep(grace).await;
                return Stopped {
                    code: health::EXIT_FAULT,
                    reason: fault.cause,
                };
            }
        }
        if faults.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// How often a node without peer TLS says so.
const INSECURE_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Warns at start and every minute that the peer port takes anyone.
async fn warn_insecure_peers(pid: u64, addr: std::net::SocketAddr) {
    let mut every = tokio::time::interval(INSECURE_WARNING_EVERY);
    loop {
        every.tick().await;
        tracing::warn!(
            pid,
            peer = %addr,
            "insecure_peers = true: the peer port has no TLS, anyone who can reach it can act as a node"
        );
    }
}
