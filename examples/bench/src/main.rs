//! The benchmark of DESIGN.md §4. N servers in one process and one thread, messages moved
//! through in-memory queues until none remain, `MemoryStorage` (or `PersistentStorage`). The
//! leader appends windows of W entries; each window is drained until every server decided it.
//! Latency mode: W = 1, the time from `append` to decided on the leader.
//!
//! One run prints one JSON line:
//! ```text
//! cargo run --release -p bench -- [--impl ours|upstream] [--mode throughput|latency]
//!     [--nodes 3] [--window 1000] [--entries 1000000] [--payload 8|100]
//!     [--storage memory|persistent] [--sync on|off] [--wal on|off] [--samples 100000]
//! ```
//! `--table [--reps 3]` runs the whole matrix, each run in its own process (so peak memory is
//! per run), implementations interleaved, and prints a Markdown table of medians. Build with
//! `--features upstream` to include crates.io omnipaxos 0.2.4.

mod driver;
mod persistent;
mod table;

use std::collections::BTreeMap;

/// Command-line options of one run.
#[derive(Clone, Debug)]
pub struct Run {
    pub implementation: String,
    pub mode: String,
    pub nodes: u64,
    pub window: usize,
    pub entries: usize,
    pub payload: usize,
    pub storage: String,
    pub sync: bool,
    /// `PersistentStorage`'s write-ahead log.
    pub wal: bool,
    pub samples: usize,
}

impl Default for Run {
    fn default() -> Self {
        Self {
            implementation: "ours".into(),
            mode: "throughput".into(),
            nodes: 3,
            window: 1000,
            entries: 1_000_000,
            payload: 8,
            storage: "memory".into(),
            sync: true,
            wal: true,
            samples: 100_000,
        }
    }
}

impl Run {
    /// The arguments that reproduce this run in a child process.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--impl",
            &self.implementation,
            "--mode",
            &self.mode,
            "--storage",
            &self.storage,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        for (flag, value) in [
            ("--nodes", self.nodes.to_string()),
            ("--window", self.window.to_string()),
            ("--entries", self.entries.to_string()),
            ("--payload", self.payload.to_string()),
            ("--samples", self.samples.to_string()),
            ("--sync", if self.sync { "on".into() } else { "off".into() }),
            ("--wal", if self.wal { "on".into() } else { "off".into() }),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args
    }
}

fn parse(args: &[String]) -> Result<(Run, Option<usize>), String> {
    let mut run = Run::default();
    let mut table = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--impl" => run.implementation = value()?,
            "--mode" => run.mode = value()?,
            "--nodes" => run.nodes = number(value()?)? as u64,
            "--window" => run.window = number(value()?)?,
            "--entries" => run.entries = number(value()?)?,
            "--payload" => run.payload = number(value()?)?,
            "--storage" => run.storage = value()?,
            "--sync" => run.sync = value()? == "on",
            "--wal" => run.wal = value()? == "on",
            "--samples" => run.samples = number(value()?)?,
            "--table" => table = Some(table.unwrap_or(3)),
            "--reps" => table = Some(number(value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if run.window == 0 || run.nodes == 0 || run.entries == 0 || run.samples == 0 {
        return Err("--nodes, --window, --entries and --samples must be positive".into());
    }
    Ok((run, table))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs one configuration in this process and returns its JSON result.
fn run_once(run: &Run) -> Result<serde_json::Value, String> {
    let mut result: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    macro_rules! measure {
        ($module:path) => {{
            use $module as imp;
            let payload = run.payload;
            match run.mode.as_str() {
                "throughput" => {
                    let t = if payload <= 8 {
                        imp::throughput(run.nodes, run.window, run.entries, imp::Small)
                    } else {
                        imp::throughput(run.nodes, run.window, run.entries, |i| {
                            imp::Payload(vec![i as u8; payload])
                        })
                    };
                    result.insert("entries_per_sec", (run.entries as f64 / t.seconds).round().into());
                    result.insert("messages_per_entry", (t.messages as f64 / run.entries as f64).into());
                }
                "latency" => {
                    let l = if payload <= 8 {
                        imp::latency(run.nodes, run.samples, imp::Small)
                    } else {
                        imp::latency(run.nodes, run.samples, |i| imp::Payload(vec![i as u8; payload]))
                    };
                    let at = |q: f64| l.samples[((l.samples.len() - 1) as f64 * q) as usize];
                    result.insert("latency_median_ns", at(0.5).into());
                    result.insert("latency_p99_ns", at(0.99).into());
                }
                other => return Err(format!("unknown mode {other}")),
            }
        }};
    }
    match (run.implementation.as_str(), run.storage.as_str()) {
        ("ours", "memory") => measure!(driver::ours),
        ("ours", "persistent") => {
            let p = persistent::throughput(run)?;
            result.insert("entries_per_sec", (run.entries as f64 / p.seconds).round().into());
            result.insert("messages_per_entry", (p.messages as f64 / run.entries as f64).into());
            result.insert("flushes_per_entry", (p.flushes as f64 / run.entries as f64).into());
        }
        #[cfg(feature = "upstream")]
        ("upstream", "memory") => measure!(driver::upstream),
        (i, s) => return Err(format!("cannot run implementation {i} on storage {s} (build with --features upstream for upstream)")),
    }
    result.insert("impl", run.implementation.clone().into());
    result.insert("mode", run.mode.clone().into());
    result.insert("storage", run.storage.clone().into());
    result.insert("nodes", run.nodes.into());
    result.insert("payload_bytes", run.payload.into());
    if run.mode == "throughput" {
        result.insert("window", run.window.into());
        result.insert("entries", run.entries.into());
    } else {
        result.insert("samples", run.samples.into());
    }
    if run.storage == "persistent" {
        result.insert("sync", run.sync.into());
        result.insert("wal", run.wal.into());
    }
    result.insert("peak_rss_kib", peak_rss_kib().into());
    Ok(serde_json::to_value(result).expect("a map of JSON values"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (run, table) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let outcome = match table {
        Some(reps) => table::run_matrix(reps),
        None => run_once(&run).map(|json| println!("{json}")),
    };
    if let Err(e) = outcome {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
