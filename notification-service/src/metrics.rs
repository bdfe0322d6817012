//! notification-service's metrics: admin re-drives of dead letters and fallback deliveries
//! planned (the repeater counts the rest of the delivery life cycle).

use std::sync::LazyLock;

use common::metrics::{Counter, EncodeLabelSet, Family};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

pub struct Metrics {
    pub dead_letters_redriven: Counter,
    pub fallbacks_planned: Family<ChannelLabel, Counter>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        dead_letters_redriven: Counter::default(),
        fallbacks_planned: Family::default(),
    };
    common::metrics::register(
        "notify_dead_letters_redriven",
        "Dead letters an admin re-drove",
        m.dead_letters_redriven.clone(),
    );
    common::metrics::register(
        "notify_fallbacks_planned",
        "Fallback deliveries planned after a dead one, by the fallback channel",
        m.fallbacks_planned.clone(),
    );
    m
});

/// Registers the families, so `/metrics` lists them before the first event.
pub fn init() {
    LazyLock::force(&METRICS);
}
