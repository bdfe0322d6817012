//! Prometheus metrics: one registry per service instance, served as OpenMetrics text at
//! `/metrics`.
//!
//! A service creates a [`Registry`] when it starts, registers its families in it (each
//! service has a `Metrics::new(&registry)`), hands the families to the code that updates them
//! and serves [`Registry::endpoint`]. Nothing is process-global: one process (a test) can run
//! several instances of a service, and each `/metrics` shows only what that instance did.
//!
//! Every registry also carries the process's own figures ([`ProcessCollector`]: resident
//! memory, CPU time, open files, start time — the names Prometheus's own clients use) and,
//! once [`crate::http::with_edge_layers`] has been given it, the HTTP requests the instance
//! answered ([`HttpMetrics`]).
//!
//! A labelled family is only printed once it has a child, so each service creates the
//! children it can name at start (every channel, outcome, reason): dashboards and alerts see
//! a zero instead of no series, and `rate()` has a first sample to start from.

use std::sync::{Arc, Mutex};

use axum::{
    http::{StatusCode, header},
    response::IntoResponse,
    routing::MethodRouter,
};
use prometheus_client::encoding::text::encode;
pub use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
};

/// One service instance's metric families. Cloning shares the registry.
#[derive(Clone)]
pub struct Registry(Arc<Mutex<prometheus_client::registry::Registry>>);

impl Default for Registry {
    /// An empty registry with the process collector in it.
    fn default() -> Self {
        let mut inner = prometheus_client::registry::Registry::default();
        inner.register_collector(Box::new(ProcessCollector));
        Self(Arc::new(Mutex::new(inner)))
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Adds a metric (a family, usually). Names follow Prometheus conventions; counters get
    /// `_total` appended when rendered.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.0
            .lock()
            .expect("metrics registry poisoned")
            .register(name, help, metric);
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.0.lock().expect("metrics registry poisoned");
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// `GET /metrics` for this registry, mountable in any router.
    pub fn endpoint<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let registry = self.clone();
        axum::routing::get(move || {
            let body = registry.render();
            async move {
                (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
                    .into_response()
            }
        })
    }
}

/// Latency buckets from 5 ms to ~41 s (×2).
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Request latency buckets from 1 ms to ~16 s (×2): intake answers in milliseconds.
pub fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    method: String,
    route: String,
}

/// The HTTP requests one instance answered: `notify_http_requests_total{method, route,
/// status}` and `notify_http_request_duration_seconds{method, route}`. `route` is the
/// matched route pattern (`/v1/notifications/{id}`), never the raw path, so the number of
/// series is bounded by the route table; a path no route matches counts as `unmatched`.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabel, Counter>,
    duration: Family<RouteLabel, Histogram>,
    /// The API's in-flight limit now (`crate::http::limit`).
    pub concurrency_limit: Gauge,
}

impl HttpMetrics {
    /// The families, registered in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            concurrency_limit: Gauge::default(),
        };
        registry.register(
            "notify_http_concurrency_limit",
            "Requests this instance's API takes at once now (adapted to latency: http.concurrency); one more is answered 503 overloaded",
            m.concurrency_limit.clone(),
        );
        registry.register(
            "notify_http_requests",
            "HTTP requests answered, by method, matched route and status code",
            m.requests.clone(),
        );
        registry.register(
            "notify_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by method and matched route",
            m.duration.clone(),
        );
        m
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabel {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabel {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }
}

/// The process's resident memory, CPU time, open file descriptors and start time, read from
/// `/proc/self` at each scrape (Linux; elsewhere nothing is reported). Names and meanings are
/// those of Prometheus's client libraries, so stock dashboards and alerts work.
#[derive(Debug)]
pub struct ProcessCollector;

/// What [`ProcessCollector`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: i64,
    pub virtual_memory_bytes: i64,
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub open_fds: i64,
}

impl ProcessStats {
    /// This process's figures now, or `None` where `/proc` is not there.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), numbered from 3 (`state`).
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        // Clock ticks are USER_HZ, 100 on every Linux (part of the user-space ABI).
        let ticks = 100.0;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| {
            status.lines().find_map(|l| {
                let v = l.strip_prefix(key)?.trim().strip_suffix("kB")?;
                v.trim().parse::<i64>().ok().map(|k| k * 1024)
            })
        };
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            start_time_seconds: boot + field(22)? / ticks,
            virtual_memory_bytes: kib("VmSize:")?,
            resident_memory_bytes: kib("VmRSS:")?,
            open_fds,
        })
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{counter::ConstCounter, gauge::ConstGauge},
        };
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let start = ConstGauge::new(p.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            None,
            start.metric_type(),
        )?)?;
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_independent() {
        let (a, b) = (Registry::default(), Registry::default());
        let (ca, cb) = (Counter::<u64>::default(), Counter::<u64>::default());
        a.register("things", "Things", ca.clone());
        b.register("things", "Things", cb.clone());
        ca.inc();
        // Whole lines: `things_total 1` must not pass for `things_total 10`.
        assert!(
            a.render().lines().any(|l| l == "things_total 1"),
            "{}",
            a.render()
        );
        assert!(
            b.render().lines().any(|l| l == "things_total 0"),
            "{}",
            b.render()
        );
    }

    /// The process figures are this process's: memory is at least what a buffer it holds
    /// takes, and the counter is rendered with its `_total`.
    #[test]
    fn process_figures_are_real() {
        let held = vec![1u8; 32 << 20];
        let stats = ProcessStats::read().expect("/proc is there on Linux");
        assert!(
            stats.resident_memory_bytes >= held.len() as i64,
            "{stats:?}"
        );
        assert!(
            stats.open_fds > 0 && stats.start_time_seconds > 1.6e9,
            "{stats:?}"
        );
        let text = Registry::default().render();
        for name in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        drop(held);
    }
}
