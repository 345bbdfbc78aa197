//! Reading a node's `GET /metrics` in tests.

use kv_store::demo::Demo;
use omnipaxos_runtime::prometheus::{parse_text, Sample};

/// The samples of node `pid`'s `/metrics`.
pub fn scrape(cluster: &Demo, pid: u64) -> Vec<Sample> {
    let body = cluster
        .get(pid, "/metrics")
        .expect("GET /metrics answers 200");
    let text = body.as_str().expect("a text body");
    parse_text(text).unwrap_or_else(|e| panic!("not valid OpenMetrics: {e}\n{text}"))
}

/// The value of `name` with all of `labels`, if present.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
}

/// The sum of `name` over every sample with all of `labels` (other labels free: all peers).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}
