//! What a node tells about itself beyond `/status`: Prometheus metrics (`GET /metrics`: the
//! runtime's, the storage's fsync histogram, and this service's HTTP requests), and a timeline
//! for the dashboard (a sample a second over the last five minutes, and the recent leader
//! changes and reconfigurations this node saw).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use omnipaxos_runtime::prometheus::{latency_histogram, observe};
use omnipaxos_runtime::{Metrics, OmniPaxosEvent};
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
use tokio::sync::{broadcast, watch};

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
fn route_of(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/kv/") => KEY_ROUTE,
        "/" => "/",
        "/status" => "/status",
        "/metrics" => "/metrics",
        "/cluster" => "/cluster",
        "/history" => "/history",
        "/handover" => "/handover",
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

    /// Adds one sample a second and one event per leader change or ended configuration, for
    /// as long as the node runs.
    pub async fn record_timeline(
        self: Arc<Self>,
        mut metrics: watch::Receiver<Metrics>,
        mut events: broadcast::Receiver<OmniPaxosEvent>,
    ) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let m = metrics.borrow_and_update().clone();
                    let now = (Instant::now(), m.decided_entries, self.writes.read(), self.reads.read());
                    if let Some(before) = last.replace(now) {
                        self.add_sample(before, now);
                    }
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        // The node publishes its metrics (with the new ballot) right after
                        // the event: read that picture, not an older one.
                        if matches!(event, OmniPaxosEvent::LeaderElected { .. }) {
                            let _ = tokio::time::timeout(Duration::from_secs(1), metrics.changed()).await;
                        }
                        self.add_event(event, &metrics.borrow_and_update())
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
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

    fn add_event(&self, event: OmniPaxosEvent, m: &Metrics) {
        let event = match event {
            OmniPaxosEvent::LeaderElected { pid, .. } => Event {
                t: unix_ms(),
                kind: "leader",
                pid: Some(pid),
                ballot: Some(m.ballot.n),
                configuration_id: m.configuration_id,
            },
            OmniPaxosEvent::Reconfigured { .. } => Event {
                t: unix_ms(),
                kind: "reconfiguration",
                pid: None,
                ballot: None,
                configuration_id: m.configuration_id,
            },
            _ => return,
        };
        let mut timeline = self.timeline();
        if timeline.events.len() == EVENTS {
            timeline.events.pop_front();
        }
        timeline.events.push_back(event);
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
