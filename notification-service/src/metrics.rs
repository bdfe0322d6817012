//! notification-service's metrics: admin re-drives of dead letters, fallback deliveries
//! planned, receipts, events skipped, fan-out progress (the repeater counts the rest of the delivery life cycle).

use common::metrics::{Counter, EncodeLabelSet, Family, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

pub struct Metrics {
    pub dead_letters_redriven: Counter,
    pub fallbacks_planned: Family<ChannelLabel, Counter>,
    receipts: Family<ReceiptLabel, Counter>,
    events_skipped: Family<EventLabel, Counter>,
    rechecks: Family<OutcomeLabel, Counter>,
    fanout_subscribers: Counter,
    fanout_deliveries: Counter,
    throttled: Family<ChannelLabel, Counter>,
    digests_closed: Counter,
    digest_items: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabel {
    provider: &'static str,
    outcome: &'static str,
}

impl Metrics {
    /// The families, registered in this instance's `registry`.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            dead_letters_redriven: Counter::default(),
            fallbacks_planned: Family::default(),
            receipts: Family::default(),
            events_skipped: Family::default(),
            rechecks: Family::default(),
            fanout_subscribers: Counter::default(),
            fanout_deliveries: Counter::default(),
            throttled: Family::default(),
            digests_closed: Counter::default(),
            digest_items: Counter::default(),
        };
        for outcome in ["passed", "suppressed", "readdressed", "deferred"] {
            let _ = m.rechecks.get_or_create(&OutcomeLabel { outcome });
        }
        for event in [
            "user.registered",
            "delivery.dead",
            "fanout",
            "digest",
            "unknown",
        ] {
            let _ = m.events_skipped.get_or_create(&EventLabel {
                event: event.to_owned(),
            });
        }
        // Every series at zero from the start (see common::metrics).
        for c in common::events::Channel::ALL {
            let _ = m.throttled.get_or_create(&ChannelLabel {
                channel: c.as_str().to_owned(),
            });
            let _ = m.fallbacks_planned.get_or_create(&ChannelLabel {
                channel: c.as_str().to_owned(),
            });
        }
        for outcome in [
            "applied",
            "ignored",
            "unmatched",
            "replayed",
            "invalid_signature",
        ] {
            let _ = m.receipts.get_or_create(&ReceiptLabel {
                provider: "twilio",
                outcome,
            });
        }
        registry.register(
            "notify_dead_letters_redriven",
            "Dead letters an admin re-drove",
            m.dead_letters_redriven.clone(),
        );
        registry.register(
            "notify_fallbacks_planned",
            "Fallback deliveries planned after a dead one, by the fallback channel",
            m.fallbacks_planned.clone(),
        );
        registry.register(
            "notify_events_skipped",
            "notify.events messages that could never be handled, recorded in skipped_events and skipped, by event",
            m.events_skipped.clone(),
        );
        registry.register(
            "notify_rechecks",
            "Dispatches re-checked before a later attempt (decision 0026), by outcome: passed, suppressed, readdressed, deferred",
            m.rechecks.clone(),
        );
        registry.register(
            "notify_receipts",
            "Delivery receipts by provider and outcome (applied, ignored, unmatched, replayed, invalid_signature)",
            m.receipts.clone(),
        );
        registry.register(
            "notify_fanout_subscribers_planned",
            "Topic subscribers planned by fan-outs (each chunk counted once, when written)",
            m.fanout_subscribers.clone(),
        );
        registry.register(
            "notify_fanout_deliveries_planned",
            "Deliveries written by fan-out chunks (suppressed ones included)",
            m.fanout_deliveries.clone(),
        );
        registry.register(
            "notify_throttled",
            "Deliveries a frequency cap held back (suppressed, reason throttled), by channel",
            m.throttled.clone(),
        );
        registry.register(
            "notify_digests_closed",
            "Digest windows closed into one notification each",
            m.digests_closed.clone(),
        );
        registry.register(
            "notify_digest_items",
            "Notifications folded into the digests that were closed",
            m.digest_items.clone(),
        );
        m
    }

    /// Counts one delivery a cap held back.
    pub fn throttled(&self, channel: common::events::Channel) {
        self.throttled
            .get_or_create(&ChannelLabel {
                channel: channel.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts one digest closed with its items.
    pub fn digest_closed(&self, items: i64) {
        self.digests_closed.inc();
        self.digest_items.inc_by(items.max(0) as u64);
    }

    /// Counts one fan-out chunk written.
    pub fn fanout_planned(&self, subscribers: usize, deliveries: usize) {
        self.fanout_subscribers.inc_by(subscribers as u64);
        self.fanout_deliveries.inc_by(deliveries as u64);
    }

    /// Counts one skipped event.
    pub fn event_skipped(&self, event: &str) {
        self.events_skipped
            .get_or_create(&EventLabel {
                event: event.to_owned(),
            })
            .inc();
    }

    /// Counts one re-checked dispatch.
    pub fn rechecked(&self, outcome: &'static str) {
        self.rechecks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts one receipt.
    pub fn receipt(&self, provider: &'static str, outcome: &'static str) {
        self.receipts
            .get_or_create(&ReceiptLabel { provider, outcome })
            .inc();
    }
}
