//! What a node tells about itself beyond `/status`: Prometheus metrics (`GET /metrics`: the
//! runtime's, the storage's fsync histogram, and this service's HTTP requests), and a timeline
//! for the dashboard (a sample a second over the last five minutes, and the recent leader
//! changes and reconfigurations this node saw).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use omnipaxos_runtime::prometheus::{latency_histogram, observe};
use omnipaxos_runtime::{Metrics, Role};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Samples kept: five minutes at one a second.
const SAMPLES: usize = 300;
/// Events kept.
const EVENTS: usize = 50;

/// A request's labels: which route, which method, which answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// A latency histogram's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

type Latencies = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// One second of the node's life, for the dashboard's charts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: u64,
    /// Entries decided per second (the whole cluster's write rate, as seen here).
    pub decided_per_s: f64,
    /// PUT and DELETE requests this node answered per second.
    pub writes_per_s: f64,
    /// GET requests of keys this node answered per second.
    pub reads_per_s: f64,
    /// Their mean latency in milliseconds over the second (none if there were none).
    pub write_ms: Option<f64>,
    /// The same for reads.
    pub read_ms: Option<f64>,
}

/// Something the dashboard lists under recent events.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub t: u64,
    /// `leader` or `reconfiguration`.
    pub kind: &'static str,
    /// The new leader, or the configuration that ended.
    pub pid: Option<u64>,
    pub ballot: Option<u32>,
    pub configuration_id: u32,
}

/// What `GET /history` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    pub samples: VecDeque<Sample>,
    pub events: VecDeque<Event>,
}

/// The node's metrics registry, request metrics and timeline.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latencies: Latencies,
    /// Key writes and reads answered and their total time, for the timeline's rates and means
    /// (the histograms do not expose their sums).
    writes: Totals,
    reads: Totals,
    timeline: Mutex<Timeline>,
}

/// A count of requests and their total time.
#[derive(Default)]
struct Totals {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Totals {
    fn add(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (count, seconds).
    fn read(&self) -> (u64, f64) {
        let nanos = self.nanos.load(Ordering::Relaxed);
        (self.count.load(Ordering::Relaxed), nanos as f64 / 1e9)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const KEY_ROUTE: &str = "/kv/{key}";

/// The route a path belongs to: one label value per route, never the key.
/// The route a path belongs to, as a label value (a bounded set: no keys or user names).
pub fn route_of(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/kv/") => KEY_ROUTE,
        p if p.starts_with("/auth/") => "/auth",
        "/health" => "/health",
        "/state/chunk" => "/state/chunk",
        "/" => "/",
        "/status" => "/status",
        "/metrics" => "/metrics",
        "/cluster" => "/cluster",
        "/history" => "/history",
        "/handover" => "/handover",
        "/digests" => "/digests",
        "/reconfigure" => "/reconfigure",
        _ => "other",
    }
}

/// The method as a label value: the ones the API uses, every other one as `other`.
fn method_of(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

impl Telemetry {
    /// A registry that already holds the runtime's and the storage's metrics; adds the HTTP
    /// request metrics to it.
    pub fn new(mut registry: Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latencies = Latencies::new_with_constructor(latency_histogram);
        registry.register(
            "kv_store_http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "kv_store_http_request_duration",
            "Time to answer an HTTP request, by route and method",
            Unit::Seconds,
            latencies.clone(),
        );
        Self {
            registry,
            requests,
            latencies,
            writes: Totals::default(),
            reads: Totals::default(),
            timeline: Mutex::new(Timeline::default()),
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        text
    }

    fn timeline(&self) -> MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The samples and events so far.
    pub fn history(&self) -> Timeline {
        self.timeline().clone()
    }

    /// Adds one sample a second, and an event per leader change or ended configuration (read
    /// from the metrics the node publishes every tick), for as long as the node runs.
    pub async fn record_timeline(self: Arc<Self>, mut metrics: watch::Receiver<Metrics>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let decided = metrics.borrow().decided_entries;
                    let now = (Instant::now(), decided, self.writes.read(), self.reads.read());
                    if let Some(before) = last.replace(now) {
                        self.add_sample(before, now);
                    }
                }
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return; // the node stopped
                    }
                    let m = metrics.borrow_and_update().clone();
                    for event in seen.update(&m) {
                        self.add_event(event);
                    }
                }
            }
        }
    }

    fn add_sample(&self, before: Reading, now: Reading) {
        let seconds = now.0.duration_since(before.0).as_secs_f64().max(0.001);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
        let mean_ms = |a: (u64, f64), b: (u64, f64)| {
            let n = b.0.saturating_sub(a.0);
            (n > 0).then(|| (b.1 - a.1) * 1000.0 / n as f64)
        };
        let sample = Sample {
            t: unix_ms(),
            decided_per_s: rate(before.1, now.1),
            writes_per_s: rate(before.2 .0, now.2 .0),
            reads_per_s: rate(before.3 .0, now.3 .0),
            write_ms: mean_ms(before.2, now.2),
            read_ms: mean_ms(before.3, now.3),
        };
        let mut timeline = self.timeline();
        if timeline.samples.len() == SAMPLES {
            timeline.samples.pop_front();
        }
        timeline.samples.push_back(sample);
    }

    fn add_event(&self, event: Event) {
        let mut timeline = self.timeline();
        if timeline.events.len() == EVENTS {
            timeline.events.pop_front();
        }
        timeline.events.push_back(event);
    }
}

/// What the timeline last saw of the leader and the configuration.
#[derive(Default)]
struct Seen {
    /// The leader, its ballot round and the configuration.
    leader: Option<(u64, u32, u32)>,
    configuration: Option<u32>,
    retired: bool,
}

impl Seen {
    /// The events that `m` shows happened since the last picture.
    fn update(&mut self, m: &Metrics) -> Vec<Event> {
        let mut events = Vec::new();
        let ended = |configuration_id| Event {
            t: unix_ms(),
            kind: "reconfiguration",
            pid: None,
            ballot: None,
            configuration_id,
        };
        if let Some(before) = self.configuration.replace(m.configuration_id) {
            if before != m.configuration_id {
                events.push(ended(before));
            }
        }
        if m.role == Role::Retired && !self.retired {
            self.retired = true;
            events.push(ended(m.configuration_id));
        }
        // A leader this node promised (its ballot is the leader's).
        let leader = m
            .leader
            .filter(|pid| *pid == m.ballot.pid)
            .map(|pid| (pid, m.ballot.n, m.configuration_id));
        if leader.is_some() && leader != self.leader {
            self.leader = leader;
            if let Some((pid, ballot, configuration_id)) = leader {
                events.push(Event {
                    t: unix_ms(),
                    kind: "leader",
                    pid: Some(pid),
                    ballot: Some(ballot),
                    configuration_id,
                });
            }
        }
        events
    }
}

/// When a sample was read: the time, decided entries, and (count, seconds) of writes and reads.
type Reading = (Instant, u64, (u64, f64), (u64, f64));

/// Middleware: counts every request and times it.
pub async fn track(State(telemetry): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let route = route_of(req.uri().path());
    let method = method_of(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let latency = RouteLabels { route, method };
    observe(&telemetry.latencies.get_or_create(&latency), elapsed);
    if route == KEY_ROUTE {
        match method {
            "PUT" | "DELETE" => telemetry.writes.add(elapsed),
            "GET" => telemetry.reads.add(elapsed),
            _ => {}
        }
    }
    let counted = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    telemetry.requests.get_or_create(&counted).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos::ballot_leader_election::Ballot;

    fn picture(config: u32, leader: Option<u64>, ballot: (u32, u64), role: Role) -> Metrics {
        Metrics {
            configuration_id: config,
            leader,
            ballot: Ballot::with(config, ballot.0, 0, ballot.1),
            role,
            ..Metrics::default()
        }
    }

    fn kinds(events: &[Event]) -> Vec<(&'static str, Option<u64>, u32)> {
        events
            .iter()
            .map(|e| (e.kind, e.pid, e.configuration_id))
            .collect()
    }

    #[test]
    fn a_leader_is_an_event_once_per_ballot_and_a_new_configuration_ends_the_old_one() {
        let mut seen = Seen::default();
        let follower = Role::Follower;
        assert!(seen.update(&picture(1, None, (0, 0), follower)).is_empty());
        // A candidate heard of but not promised is no leader yet.
        assert!(seen
            .update(&picture(1, Some(2), (1, 1), follower))
            .is_empty());
        let elected = seen.update(&picture(1, Some(2), (1, 2), follower));
        assert_eq!(kinds(&elected), [("leader", Some(2), 1)]);
        assert!(seen
            .update(&picture(1, Some(2), (1, 2), follower))
            .is_empty());
        let again = seen.update(&picture(1, Some(3), (2, 3), follower));
        assert_eq!(kinds(&again), [("leader", Some(3), 1)]);
        let moved = seen.update(&picture(2, Some(3), (1, 3), follower));
        assert_eq!(
            kinds(&moved),
            [("reconfiguration", None, 1), ("leader", Some(3), 2)]
        );
        let retired = seen.update(&picture(2, Some(3), (1, 3), Role::Retired));
        assert_eq!(kinds(&retired), [("reconfiguration", None, 2)]);
        assert!(seen
            .update(&picture(2, Some(3), (1, 3), Role::Retired))
            .is_empty());
    }

    #[test]
    fn keys_never_become_label_values() {
        assert_eq!(route_of("/kv/some-key"), KEY_ROUTE);
        assert_eq!(route_of("/kv/other"), KEY_ROUTE);
        assert_eq!(route_of("/metrics"), "/metrics");
        assert_eq!(route_of("/whatever/else"), "other");
        assert_eq!(method_of(&axum::http::Method::PATCH), "other");
    }
}
