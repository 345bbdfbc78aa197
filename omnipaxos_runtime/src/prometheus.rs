//! A node's metrics in the Prometheus (OpenMetrics) text format, through the
//! `prometheus-client` crate: [`OmniPaxosHandle::register_prometheus`] adds them to a
//! [`Registry`], and `prometheus_client::encoding::text::encode` writes them out.
//!
//! Everything but the latency histograms is read from the node's latest [`Metrics`] when the
//! registry is encoded, so a scrape costs the node nothing and agrees with
//! `OmniPaxosHandle::metrics()`. The histograms are recorded by the node's thread as things
//! happen. Every name starts with `omnipaxos_`; `docs/observability.md` lists them all.
//!
//! [`OmniPaxosHandle::register_prometheus`]: crate::OmniPaxosHandle::register_prometheus

use crate::status::KindCounts;
use crate::status::{Metrics, Role};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::fmt::Error;
use std::time::Duration;
use tokio::sync::watch;

/// Histogram buckets for latencies: 50 us doubling up to 6.5 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 18)
}

/// A latency histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Records `elapsed` in `histogram`, in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

/// The latencies the node's thread records (shared with its handles, which register them).
#[derive(Clone, Debug)]
pub(crate) struct Latencies {
    /// From an append reaching the node to its decision being known there.
    pub(crate) append_to_decide: Histogram,
    /// One storage write call of the protocol (with its sync on a durable store).
    pub(crate) storage_write: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            append_to_decide: latency_histogram(),
            storage_write: latency_histogram(),
        }
    }
}

/// Encodes a node's metrics on each scrape.
#[derive(Debug)]
pub(crate) struct NodeCollector {
    pub(crate) metrics: watch::Receiver<Metrics>,
    pub(crate) latencies: Latencies,
}

/// Registers `collector` in `registry`.
pub(crate) fn register(registry: &mut Registry, collector: NodeCollector) {
    registry.register_collector(Box::new(collector));
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), Error> {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), Error> {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &Histogram,
) -> Result<(), Error> {
    let unit = Some(&Unit::Seconds);
    metric.encode(enc.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// Encodes one labelled gauge per `(label value, value)` under `name`.
fn gauges_by(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, i64)>,
) -> Result<(), Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_of_label, value) in values {
        let labels = [(label, value_of_label)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes per-peer, per-kind message counters (messages or bytes, picked by `pick`).
fn traffic(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metrics: &Metrics,
    pick: fn(&KindCounts) -> (u64, u64),
) -> Result<(), Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (peer, kinds) in &metrics.messages_by_peer {
        for (kind, counts) in kinds {
            let (sent, received) = pick(counts);
            for (direction, value) in [("out", sent), ("in", received)] {
                let labels = [
                    ("peer", peer.to_string()),
                    ("kind", kind.to_string()),
                    ("direction", direction.to_string()),
                ];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Candidate => "candidate",
        Role::Follower => "follower",
        Role::Retired => "retired",
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        // A copy, so that the node never waits for a scrape to publish.
        let m = self.metrics.borrow().clone();
        let e = &mut enc;
        let int = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let flag = |b: bool| i64::from(b);
        gauge(e, "omnipaxos_node_id", "This node's pid", m.pid as i64)?;
        gauge(
            e,
            "omnipaxos_leader",
            "The leader this node knows of (0: none)",
            m.leader.unwrap_or(0) as i64,
        )?;
        gauge(
            e,
            "omnipaxos_ballot_round",
            "The round of the ballot this node promised",
            i64::from(m.ballot.n),
        )?;
        gauges_by(
            e,
            "omnipaxos_role",
            "1 for the role this node plays, 0 for the others",
            "role",
            [Role::Leader, Role::Candidate, Role::Follower, Role::Retired]
                .map(|r| (role_name(r).to_string(), flag(r == m.role))),
        )?;
        gauge(
            e,
            "omnipaxos_configuration_id",
            "The configuration this node runs",
            i64::from(m.configuration_id),
        )?;
        gauge(
            e,
            "omnipaxos_decided_index",
            "The decided index",
            int(m.decided_idx),
        )?;
        gauge(
            e,
            "omnipaxos_accepted_index",
            "The accepted index",
            int(m.accepted_idx),
        )?;
        gauge(
            e,
            "omnipaxos_compacted_index",
            "The compacted (trimmed or snapshotted) index",
            int(m.compacted_idx),
        )?;
        gauge(
            e,
            "omnipaxos_quorum_connected",
            "1 if a quorum answered in the last election round",
            flag(m.quorum_connected),
        )?;
        let connected = m.peers.values().filter(|p| p.connected).count();
        gauge(
            e,
            "omnipaxos_connected_peers",
            "Peers the transport is connected to",
            int(connected),
        )?;
        gauges_by(
            e,
            "omnipaxos_peer_connected",
            "1 if the transport is connected to the peer",
            "peer",
            m.peers
                .iter()
                .map(|(pid, p)| (pid.to_string(), flag(p.connected))),
        )?;
        gauges_by(
            e,
            "omnipaxos_peer_heartbeat",
            "1 if the peer answered a heartbeat in the last election round",
            "peer",
            m.peers
                .iter()
                .map(|(pid, p)| (pid.to_string(), flag(p.heartbeat))),
        )?;
        gauges_by(
            e,
            "omnipaxos_peer_accepted_index",
            "The peer's accepted index as the leader knows it (only on the leader)",
            "peer",
            m.peers
                .iter()
                .filter_map(|(pid, p)| Some((pid.to_string(), int(p.accepted_idx?)))),
        )?;
        gauge(
            e,
            "omnipaxos_pending_requests",
            "Appends and reads waiting for an outcome here",
            int(m.pending_requests),
        )?;
        gauge(
            e,
            "omnipaxos_storage_failed",
            "1 once the storage failed (the node stopped taking part)",
            flag(m.storage_failed),
        )?;
        counter(
            e,
            "omnipaxos_proposals",
            "Appends submitted on this node",
            m.appends_submitted,
        )?;
        counter(
            e,
            "omnipaxos_appends_decided",
            "Appends of this node answered as decided",
            m.appends_decided,
        )?;
        counter(
            e,
            "omnipaxos_decided_entries",
            "Entries decided since the node started",
            m.decided_entries,
        )?;
        counter(
            e,
            "omnipaxos_leader_changes",
            "Leader changes seen by this node",
            m.leader_changes,
        )?;
        counter(
            e,
            "omnipaxos_storage_writes",
            "Storage write calls (one flush each on a durable store)",
            m.storage_writes,
        )?;
        counter(
            e,
            "omnipaxos_storage_failures",
            "Storage failures (the node stops at the first)",
            u64::from(m.storage_failed),
        )?;
        counter(
            e,
            "omnipaxos_loop_passes",
            "Passes of the node's loop",
            m.passes,
        )?;
        counter(
            e,
            "omnipaxos_transport_writes",
            "Write system calls of the transport",
            m.transport_writes,
        )?;
        counter(
            e,
            "omnipaxos_messages_dropped",
            "Messages the transport dropped",
            m.messages_dropped,
        )?;
        counter(
            e,
            "omnipaxos_frames_refused",
            "Frames refused: too large, undecodable, unauthenticated",
            m.frames_refused,
        )?;
        gauge(
            e,
            "omnipaxos_largest_frame_bytes",
            "The largest frame the transport wrote or read (larger messages travel in parts)",
            m.largest_frame_bytes as i64,
        )?;
        traffic(
            e,
            "omnipaxos_messages",
            "Messages by peer, kind and direction",
            &m,
            |c| (c.msgs_out, c.msgs_in),
        )?;
        traffic(
            e,
            "omnipaxos_message_bytes",
            "Encoded bytes by peer, kind and direction",
            &m,
            |c| (c.bytes_out, c.bytes_in),
        )?;
        histogram(
            e,
            "omnipaxos_append_to_decide",
            "From an append reaching this node to its decision being known here",
            &self.latencies.append_to_decide,
        )?;
        histogram(
            e,
            "omnipaxos_storage_write",
            "One storage write call of the protocol, its sync included",
            &self.latencies.storage_write,
        )
    }
}

/// One sample of a scrape: the metric name as written (with `_total`, `_bucket`, ...), its
/// labels in order, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name.
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if it has one.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an OpenMetrics text exposition strictly, as a check that a scrape is well formed:
/// every line is a `# HELP`/`# TYPE`/`# UNIT` line, a sample or the final `# EOF`; names and
/// label names are valid; label values are quoted and escaped; every sample belongs to the
/// family declared just before it, with a suffix its type allows; no family is declared twice;
/// histogram buckets are cumulative and end in `le="+Inf"` equal to `_count`. Returns the
/// samples, or what is wrong and on which line.
pub fn parse_text(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut declared = std::collections::BTreeSet::new();
    let mut family: Option<(String, String)> = None;
    let mut histogram = HistogramSeen::new();
    let mut ended = false;
    for (n, line) in text.lines().enumerate() {
        let at = |what: String| format!("line {}: {what}: {line:?}", n + 1);
        if ended {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            close_histogram(&mut histogram).map_err(at)?;
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let value = parts.next().unwrap_or("");
            check_name(name).map_err(at)?;
            match keyword {
                "TYPE" => {
                    const TYPES: [&str; 8] = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "stateset",
                        "info",
                        "summary",
                        "unknown",
                    ];
                    if !TYPES.contains(&value) {
                        return Err(at(format!("unknown type {value:?}")));
                    }
                    if !declared.insert(name.to_string()) {
                        return Err(at(format!("family {name} declared twice")));
                    }
                    close_histogram(&mut histogram).map_err(at)?;
                    family = Some((name.to_string(), value.to_string()));
                }
                "HELP" | "UNIT" => {}
                _ => return Err(at(format!("unknown line kind {keyword:?}"))),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let Some((fam, kind)) = &family else {
            return Err(at("a sample before any # TYPE".into()));
        };
        let suffix = sample.name.strip_prefix(fam.as_str()).unwrap_or("?");
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("sample outside its family {fam} ({kind})")));
        }
        if kind == "histogram" {
            check_histogram(&sample, suffix, &mut histogram).map_err(at)?;
        }
        samples.push(sample);
    }
    if !ended {
        return Err("no # EOF at the end".into());
    }
    Ok(samples)
}

/// What a histogram family showed, per label set (without `le`): its `_count`, and its last
/// bucket's `le` and value.
type HistogramSeen = BTreeMap<Vec<(String, String)>, (Option<f64>, Option<(String, f64)>)>;

/// Buckets must grow with `le`.
fn check_histogram(sample: &Sample, suffix: &str, seen: &mut HistogramSeen) -> Result<(), String> {
    let others: Vec<(String, String)> = sample
        .labels
        .iter()
        .filter(|(k, _)| k != "le")
        .cloned()
        .collect();
    let (count, last) = seen.entry(others).or_default();
    match suffix {
        "_bucket" => {
            let le = sample.label("le").ok_or("a bucket without le")?;
            if last.as_ref().is_some_and(|(_, v)| sample.value < *v) {
                return Err("buckets are not cumulative".into());
            }
            *last = Some((le.to_string(), sample.value));
        }
        "_count" => *count = Some(sample.value),
        _ => {}
    }
    Ok(())
}

/// At the end of a histogram family: every label set ends in `le="+Inf"` equal to `_count`.
fn close_histogram(seen: &mut HistogramSeen) -> Result<(), String> {
    for (labels, (count, last)) in std::mem::take(seen) {
        match (count, last) {
            (Some(count), Some((le, inf))) if le == "+Inf" && inf == count => {}
            _ => {
                return Err(format!(
                    "histogram {labels:?}: no +Inf bucket equal to _count"
                ))
            }
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "a sample without a value".to_string())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
        } else {
            loop {
                let (label, after) = parse_label(rest)?;
                labels.push(label);
                if let Some(after) = after.strip_prefix('}') {
                    rest = after;
                    break;
                }
                rest = after
                    .strip_prefix(',')
                    .ok_or_else(|| "labels not separated by commas".to_string())?;
            }
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or_else(|| "no space before the value".to_string())?
        .split(' ');
    let value = match fields.next().unwrap_or("") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if fields.count() > 1 {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `key="value"` at the start of `text`; returns it and what follows.
fn parse_label(text: &str) -> Result<((String, String), &str), String> {
    let eq = text
        .find("=\"")
        .ok_or_else(|| "a label without =\"".to_string())?;
    let key = &text[..eq];
    check_name(key)?;
    let quoted = &text[eq + 2..];
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    loop {
        match chars.next() {
            Some((i, '"')) => return Ok(((key.to_string(), value), &quoted[i + 1..])),
            Some((_, '\\')) => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c @ ('\\' | '"'))) => value.push(c),
                _ => return Err("a bad escape in a label value".into()),
            },
            Some((_, c)) => value.push(c),
            None => return Err("an unterminated label value".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "# HELP a_total Things.\n# TYPE a counter\na_total{peer=\"2\",kind=\"x\\\"y\"} 3\n\
                        # TYPE h_seconds histogram\n# UNIT h_seconds seconds\n\
                        h_seconds_sum 0.5\nh_seconds_count 2\nh_seconds_bucket{le=\"0.1\"} 1\n\
                        h_seconds_bucket{le=\"+Inf\"} 2\n# TYPE g gauge\ng 7\n# EOF\n";

    #[test]
    fn a_well_formed_exposition_is_read_with_its_labels() {
        let samples = parse_text(GOOD).unwrap();
        assert_eq!(samples.len(), 6);
        assert_eq!(samples[0].label("kind"), Some("x\"y"));
        assert_eq!(samples[0].value, 3.0);
    }

    #[test]
    fn the_count_is_checked_against_the_last_bucket() {
        // _count before the buckets, as the crate writes it, then a mismatch.
        let wrong = GOOD.replace("h_seconds_count 2\n", "h_seconds_count 3\n");
        assert!(parse_text(&wrong).is_err());
        let no_inf = GOOD.replace("h_seconds_bucket{le=\"+Inf\"} 2\n", "");
        assert!(parse_text(&no_inf).is_err());
    }

    #[test]
    fn malformed_expositions_are_refused() {
        for bad in [
            GOOD.replace("# EOF\n", ""),
            GOOD.replace("g 7", "g_other 7"),
            GOOD.replace("g 7", "g seven"),
            GOOD.replace("{le=\"0.1\"} 1", "{le=\"0.1\"} 5"),
            GOOD.replace("peer=\"2\"", "peer=2"),
            GOOD.replace("peer=\"2\",", "peer=\"2\""),
            GOOD.replace("# TYPE g gauge", "# TYPE a gauge"),
            GOOD.replace("# TYPE g gauge", "# TYPE g gauges"),
            format!("{GOOD}g 1\n"),
        ] {
            assert!(parse_text(&bad).is_err(), "accepted: {bad}");
        }
    }
}
