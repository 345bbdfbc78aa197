//! `--table`: the whole matrix, each run in a child process (so peak memory is per run),
//! implementations interleaved within each repetition, medians in a Markdown table.

use crate::Run;
use std::process::Command;

fn implementations() -> Vec<&'static str> {
    if cfg!(feature = "upstream") {
        vec!["ours", "upstream"]
    } else {
        vec!["ours"]
    }
}

fn matrix() -> Vec<Run> {
    let mut runs = Vec::new();
    for payload in [8, 100] {
        for nodes in [3, 5] {
            for window in [100, 1000, 10_000] {
                runs.push(Run {
                    nodes,
                    window,
                    payload,
                    ..Run::default()
                });
            }
        }
    }
    runs.push(Run {
        mode: "latency".into(),
        window: 1,
        ..Run::default()
    });
    runs
}

fn run_child(run: &Run) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(run.to_args())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            run.to_args(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(json)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn run_matrix(reps: usize) -> Result<(), String> {
    let impls = implementations();
    let configs = matrix();
    // results[config][impl] = one JSON value per repetition
    let mut results = vec![vec![Vec::new(); impls.len()]; configs.len()];
    for _ in 0..reps {
        for (c, config) in configs.iter().enumerate() {
            for (i, imp) in impls.iter().enumerate() {
                let run = Run {
                    implementation: imp.to_string(),
                    ..config.clone()
                };
                results[c][i].push(run_child(&run)?);
            }
        }
    }
    let metric = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(0.0);
    println!();
    print!("| workload | nodes | window | entry |");
    for imp in &impls {
        print!(" {imp} |");
    }
    if impls.len() == 2 {
        print!(" ours / upstream |");
    }
    print!(" messages/entry (ours) |");
    for imp in &impls {
        print!(" peak RSS {imp} |");
    }
    println!();
    println!(
        "|{}",
        "---|".repeat(5 + impls.len() * 2 + usize::from(impls.len() == 2))
    );
    for (c, config) in configs.iter().enumerate() {
        let latency = config.mode == "latency";
        let key = if latency {
            "latency_median_ns"
        } else {
            "entries_per_sec"
        };
        let medians: Vec<f64> = results[c]
            .iter()
            .map(|runs| median(&mut runs.iter().map(|r| metric(r, key)).collect::<Vec<_>>()))
            .collect();
        let (name, unit) = if latency {
            ("latency, median", " ns")
        } else {
            ("throughput", "/s")
        };
        print!(
            "| {name} | {} | {} | {} B |",
            config.nodes,
            if latency {
                "1".to_string()
            } else {
                config.window.to_string()
            },
            config.payload
        );
        for m in &medians {
            if latency {
                print!(" {m:.0}{unit} |");
            } else {
                print!(" {:.2} M{unit} |", m / 1e6);
            }
        }
        if medians.len() == 2 {
            let ratio = if latency {
                medians[1] / medians[0]
            } else {
                medians[0] / medians[1]
            };
            print!(" {ratio:.2}x |");
        }
        let msgs = median(
            &mut results[c][0]
                .iter()
                .map(|r| metric(r, "messages_per_entry"))
                .collect::<Vec<_>>(),
        );
        if latency {
            let p99 = median(
                &mut results[c][0]
                    .iter()
                    .map(|r| metric(r, "latency_p99_ns"))
                    .collect::<Vec<_>>(),
            );
            print!(" p99 {p99:.0} ns |");
        } else {
            print!(" {msgs:.4} |");
        }
        for runs in &results[c] {
            let rss = median(
                &mut runs
                    .iter()
                    .map(|r| metric(r, "peak_rss_kib"))
                    .collect::<Vec<_>>(),
            );
            print!(" {:.1} MiB |", rss / 1024.0);
        }
        println!();
    }
    Ok(())
}
