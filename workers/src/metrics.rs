//! The workers' metrics: attempts per channel × provider × outcome, and send latency.

use std::sync::LazyLock;

use common::{
    events::StatusEvent,
    metrics::{Counter, EncodeLabelSet, Family, Histogram},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    channel: &'static str,
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Provider {
    channel: &'static str,
    provider: String,
}

struct Metrics {
    sends: Family<Outcome, Counter>,
    latency: Family<Provider, Histogram>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        sends: Family::default(),
        latency: Family::new_with_constructor(common::metrics::latency_histogram),
    };
    common::metrics::register(
        "notify_worker_sends",
        "Provider attempts by channel, provider and outcome",
        m.sends.clone(),
    );
    common::metrics::register(
        "notify_worker_send_duration_seconds",
        "Time from claiming a dispatch to the provider's answer",
        m.latency.clone(),
    );
    m
});

/// Registers the families, so `/metrics` lists them before the first send.
pub fn init() {
    LazyLock::force(&METRICS);
}

/// Counts one attempt and its latency.
pub fn record(ev: &StatusEvent) {
    METRICS
        .sends
        .get_or_create(&Outcome {
            channel: ev.channel.as_str(),
            provider: ev.provider.clone(),
            outcome: ev.outcome.as_str(),
        })
        .inc();
    METRICS
        .latency
        .get_or_create(&Provider {
            channel: ev.channel.as_str(),
            provider: ev.provider.clone(),
        })
        .observe(ev.duration_ms as f64 / 1000.0);
}
