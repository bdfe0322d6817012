//! Several providers for one channel, in priority order, each behind a circuit breaker
//! ([`crate::breaker`]). A message goes to the first provider whose breaker lets it through;
//! a transient failure (timeout, refused connection, 429, 5xx) moves it to the next one at
//! once. An answer about the message itself — sent, an invalid address, a permanent refusal —
//! is final: an invalid number is never tried on the next provider. When every breaker is
//! open the attempt fails transiently and the repeater retries it on its schedule.
//!
//! With a single provider there is nothing to fail over to, so no breaker is consulted: the
//! provider is simply called (its failures are retried by the repeater as before).
//!
//! A timeout is ambiguous — the first provider may have sent the message and not answered in
//! time — so failover after a timeout can deliver an SMS twice. That is the price of not
//! waiting out an outage; the attempt log shows both providers.

use std::sync::Arc;

use common::events::{Channel, DispatchMessage, Outcome};

use crate::{
    breaker::{Breakers, Permit, State},
    metrics::Metrics,
    provider::{Provider, ProviderResult},
};

pub struct Failover<G> {
    channel: Channel,
    gateways: Vec<G>,
    breakers: Breakers,
    metrics: Arc<Metrics>,
}

impl<G: Provider> Failover<G> {
    pub fn new(
        channel: Channel,
        gateways: Vec<G>,
        breakers: Breakers,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !gateways.is_empty(),
            "the {} channel has no provider configured",
            channel.as_str()
        );
        for g in &gateways {
            metrics.breaker_state(channel, g.name(), State::Closed);
        }
        for pair in gateways.windows(2) {
            metrics.declare_failover(channel, pair[0].name(), pair[1].name());
        }
        Ok(Self {
            channel,
            gateways,
            breakers,
            metrics,
        })
    }
}

impl<G: Provider> Provider for Failover<G> {
    fn name(&self) -> &'static str {
        self.gateways[0].name()
    }

    fn providers(&self) -> Vec<&'static str> {
        self.gateways.iter().map(|g| g.name()).collect()
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        if let [only] = self.gateways.as_slice() {
            return only.send(msg).await.answered_by(only.name());
        }
        let mut last: Option<ProviderResult> = None;
        let mut previous: Option<&'static str> = None;
        for g in &self.gateways {
            let name = g.name();
            match self.breakers.allow(name).await {
                Permit::Open => {
                    self.metrics.breaker_state(self.channel, name, State::Open);
                    continue;
                }
                Permit::Probe => self
                    .metrics
                    .breaker_state(self.channel, name, State::HalfOpen),
                Permit::Closed => {}
            }
            if let Some(from) = previous {
                self.metrics.failover(self.channel, from, name);
            }
            let result = g.send(msg).await.answered_by(name);
            let up = result.outcome != Outcome::TransientFailure;
            let state = self.breakers.record(name, up).await;
            self.metrics.breaker_state(self.channel, name, state);
            if up {
                return result;
            }
            tracing::warn!(
                delivery_id = %msg.delivery_id,
                provider = name,
                error = ?result.error,
                "provider failed transiently; trying the next one"
            );
            previous = Some(name);
            last = Some(result);
        }
        last.unwrap_or_else(|| {
            ProviderResult::failed(
                Outcome::TransientFailure,
                format!("{}_providers_unavailable", self.channel.as_str()),
                "every provider of this channel is skipped by its open circuit breaker",
            )
        })
    }
}
