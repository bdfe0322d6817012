//! Prometheus metrics: one registry per process, served as OpenMetrics text at `/metrics`.
//!
//! A service registers its families once (`register`) and updates them where things happen;
//! [`handler`] renders them. The registry is process-wide because a process is one service.

use std::sync::{LazyLock, Mutex};

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use prometheus_client::{encoding::text::encode, registry::Registry};

pub use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
};

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// Adds a metric (a family, usually) to the process registry. Names follow Prometheus
/// conventions; counters get `_total` appended when rendered.
pub fn register(name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
    REGISTRY
        .lock()
        .expect("metrics registry poisoned")
        .register(name, help, metric);
}

/// The registry in the OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    let registry = REGISTRY.lock().expect("metrics registry poisoned");
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// `GET /metrics`.
pub async fn handler() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

/// Latency buckets from 5 ms to ~41 s (×2).
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}
