//! The repeater's metrics: retries scheduled, dead letters, re-drives of lost messages,
//! expiries, the backlog of open deliveries by status, its own lag on `notify.status` and the
//! workers' lag on each dispatch topic (the scan reads both positions anyway).
//! Admin re-drives of dead letters happen in notification-service and are counted there.

use common::metrics::{Counter, EncodeLabelSet, Family, Gauge, Registry};

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
pub struct TopicLabel {
    pub topic: String,
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
    pub dispatch_lag: Family<TopicLabel, Gauge>,
}

impl Metrics {
    /// The families, registered in this repeater instance's `registry`.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            retries: Family::default(),
            dead: Family::default(),
            stuck_redriven: Family::default(),
            stuck_expired: Family::default(),
            fallbacks: Family::default(),
            duplicates: Counter::default(),
            backlog: Family::default(),
            status_lag: Family::default(),
            dispatch_lag: Family::default(),
        };
        // Every channel's series at zero from the start (see common::metrics).
        for ch in common::events::Channel::ALL.map(|c| c.as_str()) {
            for family in [
                &m.retries,
                &m.stuck_redriven,
                &m.stuck_expired,
                &m.fallbacks,
            ] {
                let _ = family.get_or_create(&channel(ch));
            }
            for reason in delivery::apply::DEAD_REASONS {
                let _ = m.dead.get_or_create(&DeadLabel {
                    channel: ch.to_owned(),
                    reason,
                });
            }
        }
        registry.register(
            "notify_repeater_retries_scheduled",
            "Transient failures given a next attempt, by channel",
            m.retries.clone(),
        );
        registry.register(
            "notify_repeater_dead_letters",
            "Deliveries that ended dead, by channel and reason",
            m.dead.clone(),
        );
        registry.register(
            "notify_repeater_stuck_redriven",
            "Deliveries whose dispatch message was lost, re-driven by the stuck scan",
            m.stuck_redriven.clone(),
        );
        registry.register(
            "notify_repeater_stuck_expired",
            "Lost deliveries whose TTL had passed, expired by the stuck scan",
            m.stuck_expired.clone(),
        );
        registry.register(
            "notify_repeater_fallbacks_requested",
            "Dead deliveries handed to channel fallback, by the failed channel",
            m.fallbacks.clone(),
        );
        registry.register(
            "notify_repeater_duplicate_status_events",
            "Status events for an attempt already recorded (ignored)",
            m.duplicates.clone(),
        );
        registry.register(
            "notify_repeater_open_deliveries",
            "Deliveries not yet terminal, by status (refreshed by the scan)",
            m.backlog.clone(),
        );
        registry.register(
            "notify_repeater_status_lag_messages",
            "Messages on notify.status the repeater has not committed yet, by partition",
            m.status_lag.clone(),
        );
        registry.register(
            "notify_repeater_dispatch_lag_messages",
            "Messages on each dispatch topic the workers have not committed yet (refreshed by the scan)",
            m.dispatch_lag.clone(),
        );
        m
    }
}

pub fn channel(c: &str) -> ChannelLabel {
    ChannelLabel {
        channel: c.to_owned(),
    }
}

/// The delivery lifecycle tells the repeater's counters what it did.
impl delivery::apply::Observer for Metrics {
    fn duplicate(&self) {
        self.duplicates.inc();
    }

    fn retrying(&self, ch: &str) {
        self.retries.get_or_create(&channel(ch)).inc();
    }

    fn dead(&self, ch: &str, reason: &'static str) {
        self.dead
            .get_or_create(&DeadLabel {
                channel: ch.to_owned(),
                reason,
            })
            .inc();
    }

    fn fallback(&self, ch: &str) {
        self.fallbacks.get_or_create(&channel(ch)).inc();
    }
}
