//! `kv_store`: a replicated key-value service on OmniPaxos.
//!
//! ```text
//! kv_store certs --nodes 1,2,3 --out certs  a CA and the nodes' certificates (mutual TLS)
//! kv_store node --config node1.toml        run one node
//! kv_store client --addr 127.0.0.1:8001 put KEY VALUE | get KEY | delete KEY | status
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
        /// The pids to issue certificates for, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
        /// The directory to write them to.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Talk to a node's HTTP API.
    Client {
        /// The node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: SocketAddr,
        #[command(subcommand)]
        op: ClientOp,
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

#[derive(Subcommand)]
enum ClientOp {
    Put { key: String, value: String },
    Get { key: String },
    Delete { key: String },
    Status,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Node { config } => run_node(&config),
        Command::Certs { nodes, out } => run_certs(&nodes, &out),
        Command::Client { addr, op } => run_client(addr, op),
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

fn run_certs(nodes: &[u64], out: &std::path::Path) -> i32 {
    match certs::write(out, nodes) {
        Ok(written) => {
            if written.new_ca {
                println!(
                    "new cluster CA in {} (keep ca.key safe: it issues nodes)",
                    out.display()
                );
            } else {
                println!("issued with the CA already in {}", out.display());
            }
            for file in written.files {
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
        Err(e) => {
            eprintln!("kv_store: {e}");
            1
        }
    }
}

fn run_client(addr: SocketAddr, op: ClientOp) -> i32 {
    let (method, path, body) = match &op {
        ClientOp::Put { key, value } => ("PUT", client::key_path(key), value.clone()),
        ClientOp::Get { key } => ("GET", client::key_path(key), String::new()),
        ClientOp::Delete { key } => ("DELETE", client::key_path(key), String::new()),
        ClientOp::Status => ("GET", "/status".to_string(), String::new()),
    };
    match client::request(addr, method, &path, &body, Duration::from_secs(15)) {
        Ok(r) => {
            println!("{} {}", r.status, r.body);
            if r.status == 200 {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("kv_store: {addr}: {e}");
            1
        }
    }
}
