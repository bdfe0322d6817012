//! The channel-independent part of a worker: decode → dedupe → send → report.
//!
//! Duplicate-send protection: after the provider answered, the status event is stored in
//! Redis under `dispatch:<delivery>:<attempt>` **before** it is published. A redelivered
//! message (crash, rebalance) whose key exists is not sent again; its stored status is
//! re-published instead. So a provider sees a second send only if a worker dies between the
//! provider accepting and this key being written.

use std::{sync::Arc, time::Instant};

use common::{
    events::{DispatchMessage, Outcome, SCHEMA, STATUS_TOPIC, StatusEvent},
    kafka::{
        KafkaConfig, owned_headers,
        runner::{HandleError, MessageHandler},
    },
    redis::RedisConfig,
    telemetry::RequestContext,
};
use rdkafka::{
    Message,
    message::OwnedMessage,
    producer::{FutureProducer, FutureRecord},
};
use redis::AsyncCommands;

use crate::{config::Config, provider::Provider};

pub struct Dispatcher<P> {
    provider: Arc<P>,
    producer: FutureProducer,
    redis: redis::aio::ConnectionManager,
    redis_cfg: RedisConfig,
    kafka: KafkaConfig,
    dedupe_ttl_secs: u64,
}

impl<P: Provider> Dispatcher<P> {
    pub fn new(
        provider: Arc<P>,
        producer: FutureProducer,
        redis: redis::aio::ConnectionManager,
        cfg: &Config,
    ) -> Self {
        Self {
            provider,
            producer,
            redis,
            redis_cfg: cfg.redis.clone(),
            kafka: cfg.kafka.clone(),
            dedupe_ttl_secs: cfg.dedupe_ttl_secs,
        }
    }

    fn dedupe_key(&self, msg: &DispatchMessage) -> String {
        self.redis_cfg
            .key(&format!("dispatch:{}:{}", msg.delivery_id, msg.attempt))
    }

    /// Sends one dispatch (unless it was already handled) and returns its status event,
    /// without publishing it. Tests step a worker with this.
    pub async fn process(&self, msg: &DispatchMessage) -> StatusEvent {
        let key = self.dedupe_key(msg);
        let mut redis = self.redis.clone();
        match redis.get::<_, Option<String>>(&key).await {
            Ok(Some(stored)) => match serde_json::from_str::<StatusEvent>(&stored) {
                Ok(ev) => {
                    tracing::info!(delivery_id = %msg.delivery_id, attempt = msg.attempt, "already handled; re-reporting");
                    return ev;
                }
                Err(e) => tracing::warn!(error = %e, "unreadable dedupe record; sending"),
            },
            Ok(None) => {}
            // At-least-once beats at-most-once: without Redis we still send.
            Err(e) => tracing::warn!(error = %e, "dedupe lookup failed; sending anyway"),
        }

        let started = Instant::now();
        let result = if msg.not_after.is_some_and(|t| t < chrono::Utc::now()) {
            crate::provider::ProviderResult::failed(
                Outcome::PermanentFailure,
                "expired",
                "the notification's TTL passed before sending",
            )
        } else {
            self.provider.send(msg).await
        };
        let event = StatusEvent {
            schema: SCHEMA,
            delivery_id: msg.delivery_id,
            attempt: msg.attempt,
            channel: msg.channel,
            outcome: result.outcome,
            provider: self.provider.provider_for(msg).to_owned(),
            provider_message_id: result.provider_message_id,
            error: result.error,
            retry_after_ms: result.retry_after_ms,
            at: chrono::Utc::now(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            delivery_id = %msg.delivery_id,
            attempt = msg.attempt,
            outcome = event.outcome.as_str(),
            duration_ms = event.duration_ms,
            "dispatch handled"
        );
        match serde_json::to_string(&event) {
            Ok(json) => {
                if let Err(e) = redis
                    .set_ex::<_, _, ()>(&key, json, self.dedupe_ttl_secs)
                    .await
                {
                    tracing::warn!(error = %e, "could not record the dispatch for dedupe");
                }
            }
            Err(e) => tracing::warn!(error = %e, "status event not serialisable"),
        }
        event
    }

    /// Publishes a status event and waits for the broker's acknowledgement.
    pub async fn report(&self, event: &StatusEvent) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(event)?;
        let key = event.delivery_id.to_string();
        let mut headers = RequestContext::current_or_new().to_headers();
        headers.insert("delivery-id".into(), key.clone());
        headers.insert("attempt".into(), event.attempt.to_string());
        let topic = self.kafka.topic(STATUS_TOPIC);
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&payload)
            .headers(owned_headers(&headers));
        self.producer
            .send(record, std::time::Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing the status event: {e}"))?;
        Ok(())
    }
}

impl<P: Provider> MessageHandler for Dispatcher<P> {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let payload = raw.payload().unwrap_or_default();
        let msg: DispatchMessage = serde_json::from_slice(payload)
            .map_err(|e| HandleError::Skip(anyhow::anyhow!("undecodable dispatch message: {e}")))?;
        let event = self.process(&msg).await;
        // If this fails the message is retried: the dedupe record makes the retry re-report
        // instead of re-sending.
        self.report(&event).await.map_err(HandleError::Retry)
    }
}
