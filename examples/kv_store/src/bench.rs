//! `kv_store bench`: the same HTTP load, by `wrk`, against a local 3-node kv_store cluster and,
//! when `etcd` is installed, a local 3-member etcd cluster with the same durability (both sync
//! their log to disk before a write is acknowledged) and the same peer security (mutual TLS
//! between the members). Writes and linearizable reads of random
//! keys, sent to the leader, at several connection counts; repetitions interleaved, medians
//! printed as one table with the ratios.
//!
//! etcd is driven through its JSON gateway (`POST /v3/kv/put`, `POST /v3/kv/range`, whose reads
//! are linearizable by default). Needs `wrk` (Debian: `wrk`) and optionally `etcd`
//! (`etcd-server`).

use crate::client::Client;
use crate::demo::Demo;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Keys the load picks from (written once before the reads).
const KEYS: usize = 10_000;

/// What `kv_store bench` runs.
pub struct BenchConfig {
    pub connections: Vec<usize>,
    pub seconds: u64,
    pub repetitions: usize,
    /// Whether to measure etcd too (when it is installed).
    pub with_etcd: bool,
    /// Plain TCP between the members of both clusters (to measure what peer TLS costs).
    pub insecure_peers: bool,
}

/// One wrk run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum System {
    KvStore,
    Etcd,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Load {
    Put,
    Get,
}

pub fn run(config: BenchConfig) -> i32 {
    match bench(config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench FAILED: {e}");
            1
        }
    }
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn bench(config: BenchConfig) -> Result<(), String> {
    if !found("wrk") {
        return Err("wrk is not installed (Debian package `wrk`)".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let scripts = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kv = match config.insecure_peers {
        true => Demo::start_with_insecure_peers(exe)?,
        false => Demo::start(exe)?,
    };
    kv.wait_for("a kv_store leader", |d| d.leader())?;
    let mut systems = vec![System::KvStore];
    let etcd = if config.with_etcd && found("etcd") {
        systems.push(System::Etcd);
        Some(EtcdCluster::start(!config.insecure_peers)?)
    } else {
        if config.with_etcd {
            println!("etcd not found: measuring kv_store alone (Debian package `etcd-server`)");
        }
        None
    };
    // Both clusters authenticate every request: a token in a header, as clients send it.
    let kv_token = kv.root_token()?;
    for system in &systems {
        let authorization = match (system, &etcd) {
            (System::KvStore, _) => format!("Bearer {kv_token}"),
            (System::Etcd, Some(cluster)) => cluster.token.clone(),
            (System::Etcd, None) => String::new(),
        };
        write_scripts(scripts.path(), *system, &authorization)?;
    }
    let scheme = if config.insecure_peers {
        "http"
    } else {
        "https"
    };
    // Every run goes to the leader of the moment (it may have changed since the last run).
    let leader_of = |system: System| -> Result<SocketAddr, String> {
        match (system, &etcd) {
            (System::KvStore, _) => {
                let pid = kv.wait_for("a kv_store leader", |d| d.leader())?;
                Ok(kv.http[&pid])
            }
            (System::Etcd, Some(cluster)) => cluster.leader(),
            (System::Etcd, None) => Err("no etcd cluster".into()),
        }
    };
    println!(
        "3 nodes each on 127.0.0.1, wrk against the leader, {KEYS} random keys, {} s per run, {} repetitions interleaved",
        config.seconds, config.repetitions
    );
    // Fill the key space so that reads find values.
    for system in &systems {
        wrk(
            scripts.path(),
            *system,
            Load::Put,
            scheme,
            leader_of(*system)?,
            64,
            3,
        )?;
    }
    let mut results: BTreeMap<(Load, usize, System), Vec<Figures>> = BTreeMap::new();
    for rep in 0..config.repetitions {
        for &c in &config.connections {
            for load in [Load::Put, Load::Get] {
                for system in &systems {
                    let addr = leader_of(*system)?;
                    let f = wrk(
                        scripts.path(),
                        *system,
                        load,
                        scheme,
                        addr,
                        c,
                        config.seconds,
                    )?;
                    eprintln!(
                        "  rep {rep}: {load:?} {c:>3} conns {system:?}: {:.0}/s p50 {:.2} ms p99 {:.2} ms",
                        f.rps, f.p50_ms, f.p99_ms
                    );
                    results.entry((load, c, *system)).or_default().push(f);
                }
            }
        }
    }
    print_table(&results, etcd.is_some());
    // What checking a request's token costs, against what a read costs (no log write: an HMAC
    // and the claims' parse).
    let check = token_check_time()?;
    let fewest = config.connections.iter().min().copied().unwrap_or(1);
    if let Some(gets) = results.get(&(Load::Get, fewest, System::KvStore)) {
        let p50_ms = median(gets.iter().map(|f| f.p50_ms).collect());
        println!(
            "\ntoken check: {:.2} us, {:.2}% of a linearizable GET's p50 at {fewest} connection(s) ({p50_ms:.2} ms)",
            check.as_secs_f64() * 1e6,
            100.0 * check.as_secs_f64() * 1e3 / p50_ms
        );
    }
    drop(etcd);
    drop(kv);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn print_table(results: &BTreeMap<(Load, usize, System), Vec<Figures>>, with_etcd: bool) {
    println!();
    println!("| load | connections | kv_store | etcd | throughput ratio | p50 kv_store / etcd | p99 kv_store / etcd |");
    println!("|---|---|---|---|---|---|---|");
    let summary = |f: &[Figures]| {
        (
            median(f.iter().map(|x| x.rps).collect()),
            median(f.iter().map(|x| x.p50_ms).collect()),
            median(f.iter().map(|x| x.p99_ms).collect()),
        )
    };
    let mut rows: Vec<(Load, usize)> = results.keys().map(|(l, c, _)| (*l, *c)).collect();
    rows.dedup();
    for (load, c) in rows {
        let Some(kv) = results.get(&(load, c, System::KvStore)) else {
            continue;
        };
        let (rps, p50, p99) = summary(kv);
        let name = match load {
            Load::Put => "PUT",
            Load::Get => "linearizable GET",
        };
        let ours = format!("{rps:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
        match results.get(&(load, c, System::Etcd)).filter(|_| with_etcd) {
            Some(e) => {
                let (erps, ep50, ep99) = summary(e);
                println!(
                    "| {name} | {c} | {ours} | {erps:.0}/s, p50 {ep50:.2} ms, p99 {ep99:.2} ms | {:.2}x | {:.2} | {:.2} |",
                    rps / erps,
                    p50 / ep50,
                    p99 / ep99
                );
            }
            None => println!("| {name} | {c} | {ours} | - | - | - | - |"),
        }
    }
}

/// Writes `put-<system>.lua` and `get-<system>.lua`: requests for random keys, each with the
/// `Authorization` header `authorization`.
fn write_scripts(dir: &Path, system: System, authorization: &str) -> Result<(), String> {
    let (put, get) = match system {
        System::KvStore => (
            r#"request = function()
  return wrk.format("PUT", "/kv/key-" .. math.random(1, KEYS), nil, "value-" .. math.random(1, 1000000))
end"#
                .to_string(),
            r#"request = function()
  return wrk.format("GET", "/kv/key-" .. math.random(1, KEYS))
end"#
                .to_string(),
        ),
        System::Etcd => {
            // The gateway wants base64 keys and values: a table of the keys, encoded here.
            let keys: Vec<String> = (1..=KEYS)
                .map(|k| format!("\"{}\"", base64(format!("key-{k}").as_bytes())))
                .collect();
            let table = format!("local keys = {{{}}}\n", keys.join(","));
            (
                format!(
                    "{table}wrk.method = \"POST\"\nrequest = function()\n  local body = '{{\"key\":\"' .. keys[math.random(1, KEYS)] .. '\",\"value\":\"{}\"}}'\n  return wrk.format(\"POST\", \"/v3/kv/put\", nil, body)\nend",
                    base64(b"value-of-about-this-size")
                ),
                format!(
                    "{table}wrk.method = \"POST\"\nrequest = function()\n  return wrk.format(\"POST\", \"/v3/kv/range\", nil, '{{\"key\":\"' .. keys[math.random(1, KEYS)] .. '\"}}')\nend"
                ),
            )
        }
    };
    let header = format!(
        "KEYS = {KEYS}\nmath.randomseed(os.time())\nwrk.headers[\"Authorization\"] = \"{authorization}\"\n{}\n",
        LATENCY_REPORT
    );
    for (name, body) in [("put", put), ("get", get)] {
        let path = dir.join(format!("{name}-{system:?}.lua"));
        std::fs::write(&path, format!("{header}{body}\n")).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Prints the figures the table needs in a line that is easy to parse, counting non-2xx
/// answers (a 404 on a read of a key not written is fine; errors are not).
const LATENCY_REPORT: &str = r#"done = function(summary, latency, requests)
  io.write(string.format("BENCH %f %f %f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end"#;

fn wrk(
    dir: &Path,
    system: System,
    load: Load,
    scheme: &str,
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
) -> Result<Figures, String> {
    let name = match load {
        Load::Put => "put",
        Load::Get => "get",
    };
    let script = dir.join(format!("{name}-{system:?}.lua"));
    let threads = connections.min(2);
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script)
        .arg(format!("{scheme}://{addr}"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .ok_or_else(|| format!("no figures from wrk: {text}"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() != 5 {
        return Err(format!("unexpected wrk output: {line}"));
    }
    if v[4] > 0.0 || (load == Load::Put && v[3] > 0.0) {
        eprintln!(
            "  warning: {system:?} {name} at {connections}: {} bad statuses, {} socket errors",
            v[3], v[4]
        );
    }
    Ok(Figures {
        rps: v[0],
        p50_ms: v[1],
        p99_ms: v[2],
    })
}

/// The mean time of checking one token, over many.
fn token_check_time() -> Result<Duration, String> {
    use crate::auth::{AuthOp, AuthState};
    let mut auth = AuthState::default();
    let bootstrap = AuthOp::Bootstrap {
        root_password_hash: crate::auth::hash_password("x")?,
        token_key: crate::auth::new_token_key()?,
    };
    auth.apply(None, &bootstrap).map_err(|e| e.to_string())?;
    let token = auth.issue_token("root", 1, u64::MAX / 2);
    const CHECKS: u32 = 100_000;
    let started = Instant::now();
    for _ in 0..CHECKS {
        let who = auth
            .principal_of_token(&token, 1)
            .map_err(|e| e.to_string())?;
        std::hint::black_box(who);
    }
    Ok(started.elapsed() / CHECKS)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Three etcd members on 127.0.0.1, each with its own data directory; dropped, they stop.
struct EtcdCluster {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    clients: Vec<SocketAddr>,
    /// HTTPS trusting the members' CA (plain HTTP without TLS), with root's token once auth
    /// is on.
    client: Client,
    /// Root's token, as the `Authorization` header's value.
    token: String,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

impl EtcdCluster {
    /// Three members with TLS between them and for clients (`tls`), and authentication on.
    fn start(tls: bool) -> Result<Self, String> {
        let scheme = if tls { "https" } else { "http" };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut peers = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            peers.push(free_port()?);
            clients.push(free_port()?);
        }
        // Peer TLS with client certificates, as the kv_store's nodes run: the comparison is
        // of two closed clusters. Members name themselves by IP address.
        let certs = dir.path().join("certs");
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}={scheme}://{p}"))
            .collect();
        let mut children = Vec::new();
        for i in 0..3 {
            let data: PathBuf = dir.path().join(format!("e{i}"));
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))
                .map_err(|e| e.to_string())?;
            let mut etcd = Command::new("etcd");
            if tls {
                let name = vec![peers[i].ip().to_string()];
                let files = crate::certs::write_named(&certs, &format!("e{i}"), name)?;
                etcd.arg("--peer-cert-file")
                    .arg(&files.cert)
                    .arg("--peer-key-file")
                    .arg(&files.key)
                    .arg("--peer-trusted-ca-file")
                    .arg(&files.ca)
                    .arg("--peer-client-cert-auth")
                    .arg("--cert-file")
                    .arg(&files.cert)
                    .arg("--key-file")
                    .arg(&files.key);
            }
            let child = etcd
                .arg("--name")
                .arg(format!("e{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-peer-urls")
                .arg(format!("{scheme}://{}", peers[i]))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("{scheme}://{}", peers[i]))
                .arg("--listen-client-urls")
                .arg(format!("{scheme}://{}", clients[i]))
                .arg("--advertise-client-urls")
                .arg(format!("{scheme}://{}", clients[i]))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start etcd: {e}"))?;
            children.push(child);
        }
        let client = match tls {
            true => Client::https(&certs.join("ca.pem"), None).map_err(|e| e.to_string())?,
            false => Client::plain(),
        };
        let mut cluster = EtcdCluster {
            _dir: dir,
            children,
            clients,
            client,
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.leader().is_err() {
            if Instant::now() > deadline {
                return Err("etcd did not elect a leader within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster.enable_auth()?;
        Ok(cluster)
    }

    /// Creates root, turns authentication on, and keeps a token of root's.
    fn enable_auth(&mut self) -> Result<(), String> {
        let leader = self.leader()?;
        let password = "bench-root-password";
        for (path, body) in [
            ("/v3/auth/role/add", r#"{"name": "root"}"#.to_string()),
            (
                "/v3/auth/user/add",
                format!(r#"{{"name": "root", "password": "{password}"}}"#),
            ),
            (
                "/v3/auth/user/grant",
                r#"{"user": "root", "role": "root"}"#.to_string(),
            ),
            ("/v3/auth/enable", "{}".to_string()),
        ] {
            let r = self
                .client
                .request(leader, "POST", path, &body, Duration::from_secs(5))
                .map_err(|e| format!("etcd {path}: {e}"))?;
            if r.status != 200 {
                return Err(format!("etcd {path}: {} {}", r.status, r.body));
            }
        }
        let body = format!(r#"{{"name": "root", "password": "{password}"}}"#);
        let r = self
            .client
            .request(
                leader,
                "POST",
                "/v3/auth/authenticate",
                &body,
                Duration::from_secs(5),
            )
            .map_err(|e| format!("etcd authenticate: {e}"))?;
        self.token = r.body["token"]
            .as_str()
            .ok_or_else(|| format!("etcd gave no token: {}", r.body))?
            .to_string();
        self.client = self
            .client
            .clone()
            .with_raw_authorization(self.token.clone());
        Ok(())
    }

    /// The client address of the member that leads.
    fn leader(&self) -> Result<SocketAddr, String> {
        for addr in &self.clients {
            let r = self
                .client
                .request(
                    *addr,
                    "POST",
                    "/v3/maintenance/status",
                    "{}",
                    Duration::from_secs(2),
                )
                .map_err(|e| e.to_string())?;
            let member = r.body["header"]["member_id"].as_str().map(String::from);
            let leader = r.body["leader"].as_str().map(String::from);
            if member.is_some() && member == leader {
                return Ok(*addr);
            }
        }
        Err("no etcd leader yet".into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(super::base64(b"key-1"), "a2V5LTE=");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
    }
}
