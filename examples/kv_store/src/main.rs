//! `kv_store`: a replicated key-value service on OmniPaxos.
//!
//! ```text
//! kv_store certs --nodes 1,2,3 --out certs  a CA and the nodes' certificates (mutual TLS)
//! kv_store certs --client alice --out certs a user's client certificate
//! kv_store node --config node1.toml        run one node
//! kv_store client --addr 127.0.0.1:8001 --cacert certs/ca.pem --token T
//!                 put KEY VALUE | get KEY | delete KEY | status
//! kv_store auth --addr .. --cacert .. token USER PASSWORD | user-add NAME [PASSWORD] | grant ..
//! kv_store demo [--keep]                   a 3-process cluster on localhost, with a crash
//!                                          (--keep: leave it running, with its dashboards)
//! kv_store bench                           wrk against it and, if installed, against etcd
//! ```

use kv_store::{bench, certs, client, config, demo, large_state, serve};

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "A replicated key-value service on OmniPaxos")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Node {
        /// The node's TOML config file.
        #[arg(long)]
        config: String,
    },
    /// Write a cluster CA and a certificate per node for mutual TLS between the nodes (into
    /// OUT: ca.pem, ca.key, node-<pid>.pem, node-<pid>.key). With a CA already in OUT, the new
    /// certificates are issued by it (a node that joins later, a renewal).
    Certs {
        /// The pids to issue node certificates for, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<u64>,
        /// Users to issue client certificates for (client-<name>.pem/.key), e.g. alice.
        #[arg(long, value_delimiter = ',')]
        client: Vec<String>,
        /// Addresses and names clients use for the nodes' HTTPS ports, put in every node
        /// certificate (localhost, 127.0.0.1 and ::1 always are).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// The directory to write them to.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Talk to a node's HTTP API.
    Client {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        op: ClientOp,
    },
    /// Manage users, roles and grants (as an admin) and get tokens.
    Auth {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        op: AuthCmd,
    },
    /// Start a 3-node cluster on localhost (three processes), write through it, kill the
    /// leader, restart it, and check every acknowledged write.
    Demo {
        /// Keys to write in each phase.
        #[arg(long, default_value_t = 300)]
        keys: usize,
        /// Keep the cluster running after the script (with a light load), print the
        /// dashboards' addresses, and stop every node on Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Measure a local 3-node cluster with wrk, side by side with a local etcd cluster when
    /// `etcd` is installed: PUT and linearizable GET at several connection counts.
    Bench {
        /// Connection counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        connections: Vec<usize>,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Repetitions (interleaved; the table shows medians).
        #[arg(long, default_value_t = 3)]
        repetitions: usize,
        /// Measure kv_store alone, even if etcd is installed.
        #[arg(long)]
        without_etcd: bool,
        /// Plain TCP between the members of both clusters (default: mutual TLS, as they run),
        /// to measure what peer TLS costs.
        #[arg(long)]
        insecure_peers: bool,
    },
    /// The large-state scenarios on a local 3-node cluster: load, write everything again,
    /// catch-up of a restarted follower, a node joining by reconfiguration; prints the figures
    /// and exits 1 if a check failed (see docs/large_state.md).
    LargeState {
        /// Keys to write.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Bytes per value.
        #[arg(long, default_value_t = 100_000)]
        value_bytes: usize,
        /// Size limit of one chunk of a state transfer.
        #[arg(long, default_value_t = kv_store::transfer::DEFAULT_CHUNK_BYTES)]
        chunk_bytes: usize,
    },
}

/// How to reach a node and who to be.
#[derive(clap::Args)]
struct Connection {
    /// The node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    addr: SocketAddr,
    /// The cluster's CA (HTTPS); without it, plain HTTP.
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// A client certificate (client-<user>.pem) and its key.
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// A token from `kv_store auth token` (or the environment's KV_TOKEN).
    #[arg(long, env = "KV_TOKEN")]
    token: Option<String>,
    /// The name the node's certificate must carry, if not the address (e.g. node-1).
    #[arg(long)]
    server_name: Option<String>,
}

impl Connection {
    fn client(&self) -> Result<client::Client, String> {
        let mut c = match &self.cacert {
            None => client::Client::plain(),
            Some(ca) => {
                let cert_and_key = self.cert.as_deref().zip(self.key.as_deref());
                client::Client::https(ca, cert_and_key).map_err(|e| e.to_string())?
            }
        };
        if let Some(token) = &self.token {
            c = c.with_token(token.clone());
        }
        if let Some(name) = &self.server_name {
            c = c.with_server_name(name.clone());
        }
        Ok(c)
    }
}

#[derive(Subcommand)]
enum AuthCmd {
    /// Prints a token for USER (asks nothing: the password is an argument or $KV_PASSWORD).
    Token {
        user: String,
        #[arg(env = "KV_PASSWORD")]
        password: String,
    },
    /// Creates a user or sets its password (none: certificate only).
    UserAdd {
        name: String,
        password: Option<String>,
    },
    UserDelete {
        name: String,
    },
    /// Defines a role: read and read-write key prefixes ("" is every key).
    RolePut {
        name: String,
        #[arg(long)]
        read: Vec<String>,
        #[arg(long)]
        write: Vec<String>,
    },
    RoleDelete {
        name: String,
    },
    Grant {
        user: String,
        role: String,
    },
    Revoke {
        user: String,
        role: String,
    },
    /// Lists users (with their roles) and roles.
    List,
}

#[derive(Subcommand)]
enum ClientOp {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    Delete {
        key: String,
    },
    Status,
    /// Replaces node OLD (e.g. one refused for corruption) by the new node NEW through a
    /// reconfiguration: the next configuration is the current one without OLD, with NEW at
    /// peer address PEER. Start NEW with `join_from` and an empty data directory.
    Replace {
        #[arg(long)]
        old: u64,
        #[arg(long)]
        new: u64,
        #[arg(long)]
        peer: SocketAddr,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Node { config } => run_node(&config),
        Command::Certs {
            nodes,
            client,
            hosts,
            out,
        } => run_certs(&nodes, &client, &hosts, &out),
        Command::Auth { conn, op } => run_auth(&conn, op),
        Command::Client { conn, op } => run_client(&conn, op),
        Command::Demo { keys, keep } => demo::run(keys, keep),
        Command::Bench {
            connections,
            seconds,
            repetitions,
            without_etcd,
            insecure_peers,
        } => bench::run(bench::BenchConfig {
            connections,
            seconds,
            repetitions,
            with_etcd: !without_etcd,
            insecure_peers,
        }),
        Command::LargeState {
            keys,
            value_bytes,
            chunk_bytes,
        } => run_large_state(large_state::Spec {
            keys,
            value_bytes,
            chunk_bytes,
        }),
    };
    std::process::exit(code);
}

fn run_certs(nodes: &[u64], clients: &[String], hosts: &[String], out: &std::path::Path) -> i32 {
    if nodes.is_empty() && clients.is_empty() {
        eprintln!("kv_store certs: name --nodes, --client, or both");
        return 2;
    }
    let mut files = Vec::new();
    let mut issued = || -> Result<bool, String> {
        let written = certs::write_with_hosts(out, nodes, hosts)?;
        files.extend(written.files);
        for name in clients {
            let (cert, key) = certs::write_client(out, name)?;
            files.extend([cert, key]);
        }
        Ok(written.new_ca)
    };
    match issued() {
        Ok(new_ca) => {
            if new_ca {
                println!(
                    "new cluster CA in {} (keep ca.key safe: it issues nodes and users)",
                    out.display()
                );
            } else {
                println!("issued with the CA already in {}", out.display());
            }
            for file in files {
                println!("  {}", file.display());
            }
            0
        }
        Err(e) => {
            eprintln!("kv_store certs: {e}");
            1
        }
    }
}

/// Sends one request and prints the answer; 0 if it was a 200.
fn send(conn: &Connection, method: &str, path: &str, body: &str) -> i32 {
    let client = match conn.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kv_store: {e}");
            return 2;
        }
    };
    match client.request(conn.addr, method, path, body, Duration::from_secs(15)) {
        Ok(r) => {
            println!("{} {}", r.status, r.body);
            i32::from(r.status != 200)
        }
        Err(e) => {
            eprintln!("kv_store: {}: {e}", conn.addr);
            1
        }
    }
}

fn run_auth(conn: &Connection, op: AuthCmd) -> i32 {
    use serde_json::json;
    let (method, path, body) = match op {
        AuthCmd::Token { user, password } => (
            "POST",
            "/auth/token".to_string(),
            json!({ "user": user, "password": password }),
        ),
        AuthCmd::UserAdd { name, password } => (
            "PUT",
            format!("/auth/users/{name}"),
            json!({ "password": password }),
        ),
        AuthCmd::UserDelete { name } => ("DELETE", format!("/auth/users/{name}"), json!(null)),
        AuthCmd::RolePut { name, read, write } => (
            "PUT",
            format!("/auth/roles/{name}"),
            json!({ "read": read, "write": write }),
        ),
        AuthCmd::RoleDelete { name } => ("DELETE", format!("/auth/roles/{name}"), json!(null)),
        AuthCmd::Grant { user, role } => (
            "PUT",
            format!("/auth/users/{user}/roles/{role}"),
            json!(null),
        ),
        AuthCmd::Revoke { user, role } => (
            "DELETE",
            format!("/auth/users/{user}/roles/{role}"),
            json!(null),
        ),
        AuthCmd::List => ("GET", "/auth/users".to_string(), json!(null)),
    };
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    send(conn, method, &path, &body)
}

fn run_large_state(spec: large_state::Spec) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("large-state FAILED: {e}");
            return 1;
        }
    };
    match large_state::run(exe, spec) {
        Ok(report) => {
            println!("\n{}", report.table());
            let violations = report.violations();
            for v in &violations {
                eprintln!("large-state check FAILED: {v}");
            }
            i32::from(!violations.is_empty())
        }
        Err(e) => {
            eprintln!("large-state FAILED: {e}");
            1
        }
    }
}

fn run_node(path: &str) -> i32 {
    let config = match config::NodeConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kv_store: {e}");
            return 2;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kv_store: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve::serve(config)) {
        Ok(()) => 0,
        Err(stopped) => {
            eprintln!("kv_store: {}", stopped.reason);
            stopped.code
        }
    }
}

fn run_client(conn: &Connection, op: ClientOp) -> i32 {
    if let ClientOp::Replace { old, new, peer } = op {
        return match replace_body(conn, old, new, peer) {
            Ok(body) => send(conn, "POST", "/reconfigure", &body),
            Err(e) => {
                eprintln!("kv_store client replace: {e}");
                1
            }
        };
    }
    let (method, path, body) = match &op {
        ClientOp::Put { key, value } => ("PUT", client::key_path(key), value.clone()),
        ClientOp::Get { key } => ("GET", client::key_path(key), String::new()),
        ClientOp::Delete { key } => ("DELETE", client::key_path(key), String::new()),
        ClientOp::Status => ("GET", "/status".to_string(), String::new()),
        ClientOp::Replace { .. } => return 2,
    };
    send(conn, method, &path, &body)
}

/// The `/reconfigure` body that replaces `old` by `new` in the configuration the node at
/// `conn` runs.
fn replace_body(conn: &Connection, old: u64, new: u64, peer: SocketAddr) -> Result<String, String> {
    let client = conn.client()?;
    let status = client
        .request(conn.addr, "GET", "/status", "", Duration::from_secs(15))
        .map_err(|e| format!("{}: {e}", conn.addr))?;
    if status.status != 200 {
        return Err(format!("/status: {} {}", status.status, status.body));
    }
    let id = status.body["configuration_id"]
        .as_u64()
        .ok_or("/status has no configuration_id")?;
    let nodes: Vec<u64> = status.body["nodes"]
        .as_array()
        .ok_or("/status has no nodes")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    if !nodes.contains(&old) {
        return Err(format!(
            "node {old} is not in configuration {id} ({nodes:?})"
        ));
    }
    if nodes.contains(&new) {
        return Err(format!(
            "node {new} is already in configuration {id}: choose a new pid"
        ));
    }
    let mut next: Vec<u64> = nodes.into_iter().filter(|p| *p != old).collect();
    next.push(new);
    next.sort_unstable();
    let body = serde_json::json!({
        "configuration_id": id + 1,
        "nodes": next,
        "new_peers": { new.to_string(): peer.to_string() },
    });
    Ok(body.to_string())
}
