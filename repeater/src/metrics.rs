//! The repeater's metrics: retries scheduled, dead letters, re-drives of lost messages,
//! expiries, the backlog of open deliveries by status and its own lag on `notify.status`.
//! Admin re-drives of dead letters happen in notification-service and are counted there.

use std::sync::LazyLock;

use common::metrics::{Counter, EncodeLabelSet, Family, Gauge};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLabel {
    pub channel: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

pub struct Metrics {
    pub retries: Family<ChannelLabel, Counter>,
    pub dead: Family<DeadLabel, Counter>,
    pub stuck_redriven: Family<ChannelLabel, Counter>,
    pub stuck_expired: Family<ChannelLabel, Counter>,
    pub fallbacks: Family<ChannelLabel, Counter>,
    pub duplicates: Counter,
    pub backlog: Family<StatusLabel, Gauge>,
    pub status_lag: Family<PartitionLabel, Gauge>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        retries: Family::default(),
        dead: Family::default(),
        stuck_redriven: Family::default(),
        stuck_expired: Family::default(),
        fallbacks: Family::default(),
        duplicates: Counter::default(),
        backlog: Family::default(),
        status_lag: Family::default(),
    };

    common::metrics::register(
        "notify_repeater_retries_scheduled",
        "Transient failures given a next attempt, by channel",
        m.retries.clone(),
    );
    common::metrics::register(
        "notify_repeater_dead_letters",
        "Deliveries that ended dead, by channel and reason",
        m.dead.clone(),
    );
    common::metrics::register(
        "notify_repeater_stuck_redriven",
        "Deliveries whose dispatch message was lost, re-driven by the stuck scan",
        m.stuck_redriven.clone(),
    );
    common::metrics::register(
        "notify_repeater_stuck_expired",
        "Lost deliveries whose TTL had passed, expired by the stuck scan",
        m.stuck_expired.clone(),
    );
    common::metrics::register(
        "notify_repeater_fallbacks_requested",
        "Dead deliveries handed to channel fallback, by the failed channel",
        m.fallbacks.clone(),
    );
    common::metrics::register(
        "notify_repeater_duplicate_status_events",
        "Status events for an attempt already recorded (ignored)",
        m.duplicates.clone(),
    );
    common::metrics::register(
        "notify_repeater_open_deliveries",
        "Deliveries not yet terminal, by status (refreshed by the scan)",
        m.backlog.clone(),
    );
    common::metrics::register(
        "notify_repeater_status_lag_messages",
        "Messages on notify.status the repeater has not committed yet, by partition",
        m.status_lag.clone(),
    );
    m
});

/// Registers the families, so `/metrics` lists them before the first event.
pub fn init() {
    LazyLock::force(&METRICS);
}

pub fn channel(c: &str) -> ChannelLabel {
    ChannelLabel {
        channel: c.to_owned(),
    }
}
