//! notification-service's metrics: admin re-drives of dead letters and fallback deliveries
//! planned (the repeater counts the rest of the delivery life cycle).

use common::metrics::{Counter, EncodeLabelSet, Family, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

pub struct Metrics {
    pub dead_letters_redriven: Counter,
    pub fallbacks_planned: Family<ChannelLabel, Counter>,
    receipts: Family<ReceiptLabel, Counter>,
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
        };
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
            "notify_receipts",
            "Delivery receipts by provider and outcome (applied, ignored, unmatched, replayed, invalid_signature)",
            m.receipts.clone(),
        );
        m
    }

    /// Counts one receipt.
    pub fn receipt(&self, provider: &'static str, outcome: &'static str) {
        self.receipts
            .get_or_create(&ReceiptLabel { provider, outcome })
            .inc();
    }
}
