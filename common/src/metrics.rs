//! Prometheus metrics: one registry per service instance, served as OpenMetrics text at
//! `/metrics`.
//!
//! A service creates a [`Registry`] when it starts, registers its families in it (each
//! service has a `Metrics::new(&registry)`), hands the families to the code that updates them
//! and serves [`Registry::endpoint`]. Nothing is process-global: one process (a test) can run
//! several instances of a service, and each `/metrics` shows only what that instance did.

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
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<prometheus_client::registry::Registry>>);

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
        assert!(a.render().contains("things_total 1"), "{}", a.render());
        assert!(b.render().contains("things_total 0"), "{}", b.render());
    }
}
