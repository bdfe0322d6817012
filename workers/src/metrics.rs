//! The workers' metrics: attempts per channel × provider × outcome, send latency, and sends
//! held back because Redis could not be asked whether they were already made.

use common::{
    events::{Channel, StatusEvent},
    metrics::{Counter, EncodeLabelSet, Family, Gauge, Histogram, Registry},
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabel {
    channel: &'static str,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

/// One workers instance's metric families.
pub struct Metrics {
    sends: Family<Outcome, Counter>,
    latency: Family<Provider, Histogram>,
    claims_unavailable: Family<ChannelLabel, Counter>,
    resends_avoided: Family<ChannelLabel, Counter>,
    /// Outcomes this process holds because Redis could not take their record.
    pub unrecorded: Gauge,
    breakers: Family<Provider, Gauge>,
    failovers: Family<FailoverLabel, Counter>,
}

impl Metrics {
    /// The families, registered in this instance's `registry`.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            sends: Family::default(),
            latency: Family::new_with_constructor(common::metrics::latency_histogram),
            claims_unavailable: Family::default(),
            resends_avoided: Family::default(),
            unrecorded: Gauge::default(),
            breakers: Family::default(),
            failovers: Family::default(),
        };
        registry.register(
            "notify_worker_sends",
            "Provider attempts by channel, provider and outcome",
            m.sends.clone(),
        );
        registry.register(
            "notify_worker_send_duration_seconds",
            "Time from claiming a dispatch to the provider's answer",
            m.latency.clone(),
        );
        registry.register(
            "notify_worker_unrecorded_outcomes",
            "Sends whose outcome Redis could not record yet, held by this process (re-reported, never re-sent)",
            m.unrecorded.clone(),
        );
        registry.register(
            "notify_worker_claims_unavailable",
            "Dispatches held back (retried in place) because Redis could not be asked whether they were already sent",
            m.claims_unavailable.clone(),
        );
        registry.register(
            "notify_worker_resends_avoided",
            "Re-driven attempts not sent because an earlier attempt of the delivery was sent (its status had been lost)",
            m.resends_avoided.clone(),
        );
        registry.register(
            "notify_worker_breaker_state",
            "Each provider's circuit breaker as this instance last saw it: 0 closed, 1 open, 2 half-open",
            m.breakers.clone(),
        );
        registry.register(
            "notify_worker_failovers",
            "Messages moved to the next provider of their channel after a transient failure",
            m.failovers.clone(),
        );
        m
    }

    /// Creates the series of `channel` sent through `providers` at zero, so `/metrics` shows
    /// every family from the start (a labelled family is printed only once it has a child).
    pub fn declare(&self, channel: Channel, providers: &[&'static str]) {
        let c = channel.as_str();
        for provider in providers {
            for outcome in common::events::Outcome::ALL {
                let _ = self.sends.get_or_create(&Outcome {
                    channel: c,
                    provider: (*provider).to_owned(),
                    outcome: outcome.as_str(),
                });
            }
            let _ = self.latency.get_or_create(&Provider {
                channel: c,
                provider: (*provider).to_owned(),
            });
        }
        let _ = self
            .claims_unavailable
            .get_or_create(&ChannelLabel { channel: c });
        let _ = self
            .resends_avoided
            .get_or_create(&ChannelLabel { channel: c });
    }

    /// What `provider`'s breaker was seen in.
    pub fn breaker_state(&self, channel: Channel, provider: &str, state: crate::breaker::State) {
        self.breakers
            .get_or_create(&Provider {
                channel: channel.as_str(),
                provider: provider.to_owned(),
            })
            .set(state as i64);
    }

    /// Creates the failover series `from` → `to` at zero.
    pub fn declare_failover(&self, channel: Channel, from: &'static str, to: &'static str) {
        let _ = self.failovers.get_or_create(&FailoverLabel {
            channel: channel.as_str(),
            from,
            to,
        });
    }

    /// Counts a message moved from one provider to the next.
    pub fn failover(&self, channel: Channel, from: &'static str, to: &'static str) {
        self.failovers
            .get_or_create(&FailoverLabel {
                channel: channel.as_str(),
                from,
                to,
            })
            .inc();
    }

    /// Counts an attempt reported as sent without sending: an earlier one was.
    pub fn resend_avoided(&self, channel: Channel) {
        self.resends_avoided
            .get_or_create(&ChannelLabel {
                channel: channel.as_str(),
            })
            .inc();
    }

    /// Counts one attempt and its latency.
    pub fn record(&self, ev: &StatusEvent) {
        self.sends
            .get_or_create(&Outcome {
                channel: ev.channel.as_str(),
                provider: ev.provider.clone(),
                outcome: ev.outcome.as_str(),
            })
            .inc();
        self.latency
            .get_or_create(&Provider {
                channel: ev.channel.as_str(),
                provider: ev.provider.clone(),
            })
            .observe(ev.duration_ms as f64 / 1000.0);
    }

    /// Counts a send held back because the dedupe claim could not be taken.
    pub fn claim_unavailable(&self, channel: Channel) {
        self.claims_unavailable
            .get_or_create(&ChannelLabel {
                channel: channel.as_str(),
            })
            .inc();
    }
}
