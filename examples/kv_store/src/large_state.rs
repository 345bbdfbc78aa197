//! `kv_store large-state`: the large-state scenarios on a local cluster of `kv_store node`
//! processes, with their figures and checks. The CI tests run it with 50 MB; the documented
//! manual run with 1 GB (`docs/large_state.md`).
//!
//! 1. **Load**: `keys` values of `value_bytes` written through all nodes.
//! 2. **Snapshot while writing**: every key written again (every node checkpoints and compacts
//!    its log many times on the way).
//! 3. **Catch-up after restart**: a follower is killed, half the keys are written again (the
//!    others compact past it), the follower restarts and copies the state in chunks while an
//!    eighth of the keys is written again through the other nodes.
//! 4. **Join by reconfiguration**: node 4 replaces node 3 and copies the state in chunks while
//!    another eighth is written again; then the first quarter is written again in the new
//!    configuration.
//!
//! Then every key is read back from every node. Checked: no leader change without a fault
//! (on the nodes that stayed up, outside the reconfiguration itself), every key's last value on
//! every node, disk and memory per node at most twice the data, no frame and no chunk above
//! its configured limit, and that both copies really went through chunked transfers.

use crate::client::{key_path, KeepAlive};
use crate::demo::Demo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The runtime's default `max_frame_bytes` (the kv_store does not change it).
pub const FRAME_LIMIT: u64 = 16 << 20;
const WRITERS: usize = 16;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub keys: usize,
    pub value_bytes: usize,
    /// `state_chunk_bytes` of every node.
    pub chunk_bytes: usize,
}

/// One chunked state transfer, as the receiving node reported it.
#[derive(Clone, Debug, Default)]
pub struct Copy {
    /// From the node's start to applying everything the leader had decided.
    pub caught_up_seconds: f64,
    pub transfers: u64,
    pub bytes: u64,
    /// The copy alone (the node's own figure).
    pub copy_seconds: f64,
    pub mb_per_s: f64,
}

/// The figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub spec: Option<Spec>,
    /// Keys and values held (what every node stores).
    pub data_bytes: u64,
    pub load_mb_per_s: f64,
    pub rewrite_mb_per_s: f64,
    /// Leader changes seen by nodes that stayed up, outside the reconfiguration.
    pub leader_changes: u64,
    pub catch_up: Copy,
    pub join: Copy,
    /// Per node: the largest disk use (data directory) and memory (anonymous RSS) sampled.
    pub disk_bytes: BTreeMap<u64, u64>,
    pub rss_bytes: BTreeMap<u64, u64>,
    pub largest_frame: u64,
    pub largest_chunk: u64,
    /// Keys read back per node.
    pub verified: BTreeMap<u64, usize>,
}

impl Report {
    /// What the run was expected to show and did not.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let limit = 2 * self.data_bytes;
        if self.leader_changes != 0 {
            out.push(format!(
                "{} leader changes without a fault",
                self.leader_changes
            ));
        }
        for (pid, disk) in &self.disk_bytes {
            if *disk > limit {
                out.push(format!(
                    "node {pid}: {disk} bytes on disk, above 2x the data"
                ));
            }
        }
        for (pid, rss) in &self.rss_bytes {
            if *rss > limit {
                out.push(format!(
                    "node {pid}: {rss} bytes of memory, above 2x the data"
                ));
            }
        }
        if self.largest_frame > FRAME_LIMIT + 5 {
            out.push(format!("a frame of {} bytes", self.largest_frame));
        }
        let chunk_limit = self.spec.map_or(0, |s| s.chunk_bytes as u64);
        if self.largest_chunk > chunk_limit || self.largest_chunk == 0 {
            out.push(format!(
                "largest chunk {} bytes (limit {chunk_limit})",
                self.largest_chunk
            ));
        }
        for (what, copy) in [("catch-up", &self.catch_up), ("join", &self.join)] {
            if copy.transfers == 0 {
                out.push(format!("the {what} made no state transfer"));
            }
        }
        out
    }

    /// The figures as a Markdown table.
    pub fn table(&self) -> String {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let per_node = |m: &BTreeMap<u64, u64>| {
            let v: Vec<String> = m.iter().map(|(p, b)| format!("{p}: {}", mb(*b))).collect();
            v.join(", ")
        };
        let copy = |c: &Copy| {
            format!(
                "{:.2} s to caught up; copy {} in {:.2} s = {:.0} MB/s ({} transfer(s))",
                c.caught_up_seconds,
                mb(c.bytes),
                c.copy_seconds,
                c.mb_per_s,
                c.transfers
            )
        };
        let spec = self.spec.map_or(String::new(), |s| {
            format!("{} keys of {} bytes", s.keys, s.value_bytes)
        });
        let rows = [
            ("state", format!("{spec}: {}", mb(self.data_bytes))),
            ("load", format!("{:.0} MB/s", self.load_mb_per_s)),
            (
                "every key written again",
                format!("{:.0} MB/s", self.rewrite_mb_per_s),
            ),
            ("leader changes", self.leader_changes.to_string()),
            ("catch-up after restart", copy(&self.catch_up)),
            ("join by reconfiguration", copy(&self.join)),
            ("largest disk use", per_node(&self.disk_bytes)),
            ("largest RSS (anonymous)", per_node(&self.rss_bytes)),
            ("largest frame", format!("{} bytes", self.largest_frame)),
            ("largest chunk", format!("{} bytes", self.largest_chunk)),
            (
                "keys read back",
                format!("{:?}", self.verified.iter().collect::<Vec<_>>()),
            ),
        ];
        let mut out = String::from("| | |\n|---|---|\n");
        for (what, value) in rows {
            out.push_str(&format!("| {what} | {value} |\n"));
        }
        out
    }
}

/// The value of key `i` after it was written in `round`.
fn value(i: usize, round: u8, bytes: usize) -> String {
    let fill = char::from(b'a' + ((i + round as usize) % 26) as u8);
    let mut v = format!("{i}:{round}:");
    v.extend(std::iter::repeat_n(fill, bytes.saturating_sub(v.len())));
    v
}

fn key(i: usize) -> String {
    format!("big-{i:08}")
}

/// Per node: the largest RSS and the largest disk use sampled.
type Peaks = (BTreeMap<u64, u64>, BTreeMap<u64, u64>);

/// Samples every node's RSS and disk use in the background, keeping each node's maximum.
struct Sampler {
    targets: Arc<Mutex<BTreeMap<u64, (u32, std::path::PathBuf)>>>,
    peaks: Arc<Mutex<Peaks>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Self {
        let targets: Arc<Mutex<BTreeMap<u64, (u32, std::path::PathBuf)>>> = Arc::default();
        let peaks: Arc<Mutex<Peaks>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (targets, peaks, stop) = (targets.clone(), peaks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now: Vec<_> = lock(&targets).clone().into_iter().collect();
                    for (pid, (os_pid, dir)) in now {
                        let (rss, disk) = (rss_bytes(os_pid), disk_bytes(&dir));
                        let mut p = lock(&peaks);
                        let r = p.0.entry(pid).or_default();
                        *r = (*r).max(rss);
                        let d = p.1.entry(pid).or_default();
                        *d = (*d).max(disk);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            targets,
            peaks,
            stop,
            thread: Some(thread),
        }
    }

    /// Samples the nodes of `cluster` from now on.
    fn watch(&self, cluster: &Demo) {
        let mut t = lock(&self.targets);
        t.clear();
        for pid in cluster.live() {
            if let Some(os_pid) = cluster.os_pid(pid) {
                t.insert(pid, (os_pid, cluster.data_dir(pid)));
            }
        }
    }

    fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let p = lock(&self.peaks);
        (p.0.clone(), p.1.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident anonymous memory of process `os_pid` (0 if it is gone): the heap and stacks that
/// grow with the data, without the executable's file-backed pages (about 20 MB of code in a
/// debug build, the same for a node holding nothing and one holding everything).
fn rss_bytes(os_pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{os_pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes allocated on disk under `dir` (sparse files count what they use).
pub fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Writes keys `range` in `round` through the live nodes from `WRITERS` threads; MB/s.
fn write_round(
    cluster: &Demo,
    spec: Spec,
    range: std::ops::Range<usize>,
    round: u8,
) -> Result<f64, String> {
    let targets: Vec<_> = cluster.live().iter().map(|p| cluster.http[p]).collect();
    write_through(cluster.client.clone(), targets, spec, range, round)
}

/// Starts writing keys `range` in `round` through `pids` in the background (the cluster keeps
/// serving while a node copies the state).
fn write_meanwhile(
    cluster: &Demo,
    pids: &[u64],
    spec: Spec,
    range: std::ops::Range<usize>,
    round: u8,
) -> std::thread::JoinHandle<Result<f64, String>> {
    let targets: Vec<_> = pids.iter().map(|p| cluster.http[p]).collect();
    let client = cluster.client.clone();
    std::thread::spawn(move || write_through(client, targets, spec, range, round))
}

/// Writes keys `range` in `round` through `targets` from `WRITERS` threads; MB/s.
fn write_through(
    client: crate::client::Client,
    targets: Vec<std::net::SocketAddr>,
    spec: Spec,
    range: std::ops::Range<usize>,
    round: u8,
) -> Result<f64, String> {
    let started = Instant::now();
    let (start, end) = (range.start, range.end);
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let targets = targets.clone();
            let client = client.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let timeout = Duration::from_secs(30);
                let mut nodes: Vec<KeepAlive> = targets
                    .iter()
                    .map(|a| client.keep_alive(*a, timeout))
                    .collect();
                for i in (start + t..end).step_by(WRITERS) {
                    let v = value(i, round, spec.value_bytes);
                    let mut attempt = 0;
                    loop {
                        let node = &mut nodes[(i + attempt) % targets.len()];
                        match node.request("PUT", &key_path(&key(i)), v.as_bytes()) {
                            Ok((200, _)) => break,
                            other if attempt >= 100 => {
                                return Err(format!("PUT {}: {other:?}", key(i)))
                            }
                            // A reconfiguration or an election: a moment later, maybe elsewhere.
                            _ => {
                                attempt += 1;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().map_err(|_| "a writer panicked".to_string())??;
    }
    let bytes = (end - start) * (spec.value_bytes + key(0).len());
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// Reads every key from node `pid` and compares it with its last round.
fn verify(cluster: &Demo, pid: u64, spec: Spec, rounds: &[u8]) -> Result<usize, String> {
    let addr = cluster.http[&pid];
    let rounds: Arc<Vec<u8>> = Arc::new(rounds.to_vec());
    let readers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let rounds = rounds.clone();
            let client = cluster.client.clone();
            std::thread::spawn(move || -> Result<usize, String> {
                let mut node = client.keep_alive(addr, Duration::from_secs(30));
                let mut n = 0;
                for i in (t..rounds.len()).step_by(WRITERS) {
                    let (status, body) = node
                        .request("GET", &key_path(&key(i)), b"")
                        .map_err(|e| format!("node {pid}: GET {}: {e}", key(i)))?;
                    let expected = value(i, rounds[i], spec.value_bytes);
                    let got: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if status != 200 || got["value"].as_str() != Some(expected.as_str()) {
                        let got: String = got.to_string().chars().take(60).collect();
                        return Err(format!("node {pid}: {} is {status} {got}", key(i)));
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for r in readers {
        total += r.join().map_err(|_| "a reader panicked".to_string())??;
    }
    Ok(total)
}

fn leader_changes(cluster: &Demo, pids: &[u64]) -> BTreeMap<u64, u64> {
    pids.iter()
        .filter_map(|p| Some((*p, cluster.status(*p)?["leader_changes"].as_u64()?)))
        .collect()
}

fn changes_since(cluster: &Demo, before: &BTreeMap<u64, u64>) -> u64 {
    let now = leader_changes(cluster, &before.keys().copied().collect::<Vec<_>>());
    before
        .iter()
        .map(|(p, b)| now.get(p).map_or(0, |n| n.saturating_sub(*b)))
        .max()
        .unwrap_or(0)
}

/// Waits until node `pid` applied what the leader `leader` had decided when it was asked, and
/// reports its copy.
fn wait_caught_up(cluster: &Demo, pid: u64, leader: u64, since: Instant) -> Result<Copy, String> {
    let leading = cluster.status(leader).ok_or("the leader does not answer")?;
    let target = (
        leading["configuration_id"].as_u64().unwrap_or(0),
        leading["decided_idx"].as_u64().unwrap_or(0),
    );
    let status = cluster.wait_for(&format!("node {pid} to catch up"), |d| {
        let s = d.status(pid)?;
        let at = &s["state"]["position"];
        let position = (at[0].as_u64()?, at[1].as_u64()?);
        let done = position >= target && s["state"]["receiving"] == false;
        done.then_some(s)
    })?;
    let state: &Value = &status["state"];
    Ok(Copy {
        caught_up_seconds: since.elapsed().as_secs_f64(),
        transfers: state["transfers"].as_u64().unwrap_or(0),
        bytes: state["received_bytes"].as_u64().unwrap_or(0),
        copy_seconds: state["last_transfer_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        mb_per_s: state["last_transfer_mb_per_s"].as_f64().unwrap_or(0.0),
    })
}

fn largest(cluster: &Demo, pid: u64, metric: &str) -> u64 {
    let text = cluster.get(pid, "/metrics").unwrap_or_default();
    let text = text.as_str().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max) as u64
}

fn chunk_peak(cluster: &Demo, pid: u64) -> u64 {
    let s = cluster.status(pid).unwrap_or_default();
    let sent = s["state"]["largest_chunk_sent"].as_u64().unwrap_or(0);
    sent.max(s["state"]["largest_chunk_received"].as_u64().unwrap_or(0))
}

/// Runs the scenarios on a new cluster of the `kv_store` binary `exe`, printing progress.
pub fn run(exe: std::path::PathBuf, spec: Spec) -> Result<Report, String> {
    let say = |what: &str| println!("[large-state] {what}");
    let mut report = Report {
        spec: Some(spec),
        data_bytes: (spec.keys * (spec.value_bytes + key(0).len())) as u64,
        ..Report::default()
    };
    let mut rounds = vec![0u8; spec.keys];
    let mut cluster = Demo::start_with_chunks(exe, spec.chunk_bytes)?;
    let sampler = Sampler::start();
    sampler.watch(&cluster);
    let leader = cluster.wait_for("a leader", |d| d.leader())?;
    let mut watched = leader_changes(&cluster, &[1, 2, 3]);
    let mut peaks = (0u64, 0u64);
    let measure = |cluster: &Demo, peaks: &mut (u64, u64)| {
        for pid in cluster.live() {
            peaks.0 = peaks
                .0
                .max(largest(cluster, pid, "omnipaxos_largest_frame_bytes"));
            peaks.1 = peaks.1.max(chunk_peak(cluster, pid));
        }
    };

    say(&format!("loading {:.0} MB", report.data_bytes as f64 / 1e6));
    report.load_mb_per_s = write_round(&cluster, spec, 0..spec.keys, 0)?;
    say("writing every key again (checkpoints and compactions on the way)");
    report.rewrite_mb_per_s = write_round(&cluster, spec, 0..spec.keys, 1)?;
    rounds.fill(1);

    let n = spec.keys;
    let follower = [1, 2, 3].into_iter().find(|p| *p != leader).unwrap_or(2);
    say(&format!(
        "killing follower {follower}; writing half the keys again"
    ));
    cluster.kill(follower);
    watched.remove(&follower);
    write_round(&cluster, spec, 0..n / 2, 2)?;
    rounds[..n / 2].fill(2);
    say(&format!(
        "restarting node {follower} while an eighth of the keys is written again"
    ));
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|p| *p != follower).collect();
    let writing = write_meanwhile(&cluster, &others, spec, n / 2..5 * n / 8, 4);
    let restarted = Instant::now();
    cluster.spawn(follower)?;
    sampler.watch(&cluster);
    report.catch_up = wait_caught_up(&cluster, follower, leader, restarted)?;
    writing.join().map_err(|_| "a writer panicked")??;
    rounds[n / 2..5 * n / 8].fill(4);
    let changed = changes_since(&cluster, &watched);
    say(&format!("leader changes so far: {changed}"));
    report.leader_changes += changed;
    measure(&cluster, &mut peaks);

    say("node 4 replaces node 3 (join by reconfiguration) while an eighth of the keys is written again");
    let writing = write_meanwhile(&cluster, &[1, 2], spec, 7 * n / 8..n, 5);
    let joined = Instant::now();
    cluster.replace_node_3()?;
    sampler.watch(&cluster);
    let leader2 = cluster.wait_for("a leader in configuration 2", |d| d.leader())?;
    report.join = wait_caught_up(&cluster, 4, leader2, joined)?;
    writing.join().map_err(|_| "a writer panicked")??;
    rounds[7 * n / 8..].fill(5);
    let watched2 = leader_changes(&cluster, &[1, 2, 4]);
    say("writing the first quarter again in configuration 2");
    write_round(&cluster, spec, 0..n / 4, 3)?;
    rounds[..n / 4].fill(3);
    for pid in cluster.live() {
        say(&format!("reading every key back from node {pid}"));
        report
            .verified
            .insert(pid, verify(&cluster, pid, spec, &rounds)?);
    }
    let changed = changes_since(&cluster, &watched2);
    say(&format!("leader changes in configuration 2: {changed}"));
    report.leader_changes += changed;
    measure(&cluster, &mut peaks);
    (report.largest_frame, report.largest_chunk) = peaks;
    (report.rss_bytes, report.disk_bytes) = sampler.finish();
    if !report.violations().is_empty() {
        let kept = cluster.keep_files();
        say(&format!(
            "a check failed: configs, data and logs kept in {}",
            kept.display()
        ));
    }
    Ok(report)
}
