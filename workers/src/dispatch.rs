//! The channel-independent part of a worker: decode → claim → send → record → report.
//!
//! Duplicate-send protection (decision 0004): before sending, a worker claims
//! `dispatch:<delivery>:<attempt>` in Redis (`SET NX`, `claim_ttl_secs`). After the provider
//! answered, the claim is overwritten with the status event (kept `dedupe_ttl_secs`) **before**
//! that event is published. A redelivered message (crash, rebalance, a duplicate in Kafka)
//! finds either the status — re-published, not re-sent — or a live claim, and then waits (the
//! message is retried in place) until the status appears or the claim of a worker that died
//! mid-send expires. A provider sees a second send only if a worker dies between the provider
//! accepting and the status being written, or a send outlives its claim. While Redis cannot be
//! reached nothing is sent (that could send twice): the message is retried in place, stays
//! uncommitted in Kafka, and goes out once Redis answers again.
//!
//! A successful send is also recorded per delivery (`dispatch:<delivery>:sent`). A later
//! attempt of the same delivery — the repeater re-drove it because the first attempt's status
//! was lost with its Kafka cluster — is then reported `sent` (with the first send's provider
//! message id) and not sent again.

use std::{sync::Arc, time::Instant};

use tracing::Instrument as _;

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

use crate::{config::Config, metrics::Metrics, provider::Provider};

pub struct Dispatcher<P> {
    provider: Arc<P>,
    producer: FutureProducer,
    redis: redis::aio::ConnectionManager,
    redis_cfg: RedisConfig,
    kafka: KafkaConfig,
    dedupe_ttl_secs: u64,
    claim_ttl_secs: u64,
    metrics: Arc<Metrics>,
    /// Outcomes of sends whose record could not be written to Redis (it went away mid-send),
    /// by dedupe key. Consulted before claiming: a retried message re-reports its outcome
    /// instead of sending again once the claim expires. Written to Redis as soon as it answers.
    unrecorded: std::sync::Mutex<std::collections::HashMap<String, StatusEvent>>,
}

/// The value of a claim whose send has not finished.
const CLAIMED: &str = "sending";

enum Claim {
    /// This worker sends.
    Won,
    /// This worker holds the claim, but an earlier attempt of the delivery was sent: report
    /// that, do not send.
    SentBefore(Box<StatusEvent>),
    /// Already sent (or failed) by someone: re-report this status.
    Done(Box<StatusEvent>),
    /// Someone is sending it now.
    Busy,
    /// Redis cannot tell whether it was sent: do not send now.
    Unavailable,
}

/// Why a dispatch was not sent now; the caller tries the same message again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// Another worker is sending this attempt right now.
    Busy,
    /// Redis cannot be asked whether this attempt was already sent; sending could send twice.
    ClaimUnavailable,
}

impl<P: Provider> Dispatcher<P> {
    pub fn new(
        provider: Arc<P>,
        producer: FutureProducer,
        redis: redis::aio::ConnectionManager,
        cfg: &Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            provider,
            producer,
            redis,
            redis_cfg: cfg.redis.clone(),
            kafka: cfg.kafka.clone(),
            dedupe_ttl_secs: cfg.dedupe_ttl_secs,
            claim_ttl_secs: cfg.claim_ttl_secs.max(1),
            metrics,
            unrecorded: Default::default(),
        }
    }

    fn dedupe_key(&self, msg: &DispatchMessage) -> String {
        self.redis_cfg
            .key(&format!("dispatch:{}:{}", msg.delivery_id, msg.attempt))
    }

    /// Where a delivery's successful send is recorded, whichever attempt made it.
    fn sent_key(&self, delivery_id: uuid::Uuid) -> String {
        self.redis_cfg.key(&format!("dispatch:{delivery_id}:sent"))
    }

    /// Sends one dispatch (unless it was already handled) and returns its status event,
    /// without publishing it. Tests step a worker with this.
    ///
    /// `Err(Deferred::Busy)`: another worker holds the claim for this attempt right now; the
    /// caller tries again later and then finds its status (or, if that worker died, an expired
    /// claim). `Err(Deferred::ClaimUnavailable)`: Redis did not answer; nothing was sent.
    pub async fn process(&self, msg: &DispatchMessage) -> Result<StatusEvent, Deferred> {
        let key = self.dedupe_key(msg);
        let mut redis = self.redis.clone();
        let unrecorded = self
            .unrecorded
            .lock()
            .expect("unrecorded lock poisoned")
            .get(&key)
            .cloned();
        if let Some(ev) = unrecorded {
            // Sent already; the record is still owed to Redis.
            if self.record(&mut redis, &key, &ev).await {
                let mut held = self.unrecorded.lock().expect("unrecorded lock poisoned");
                held.remove(&key);
                self.metrics.unrecorded.set(held.len() as i64);
            }
            tracing::info!(delivery_id = %msg.delivery_id, attempt = msg.attempt, "sent before; re-reporting");
            return Ok(ev);
        }
        let sent_before = match self.claim(&mut redis, &key, msg).await {
            Claim::Won => None,
            Claim::SentBefore(first) => Some(first),
            Claim::Done(ev) => {
                tracing::info!(delivery_id = %msg.delivery_id, attempt = msg.attempt, "already handled; re-reporting");
                return Ok(*ev);
            }
            Claim::Busy => return Err(Deferred::Busy),
            Claim::Unavailable => {
                self.metrics.claim_unavailable(msg.channel);
                return Err(Deferred::ClaimUnavailable);
            }
        };
        let event = match sent_before {
            // Re-driven after its status was lost: the provider has it already.
            Some(first) => {
                tracing::warn!(
                    delivery_id = %msg.delivery_id,
                    attempt = msg.attempt,
                    sent_by_attempt = first.attempt,
                    "sent by an earlier attempt; reporting sent without sending again"
                );
                self.metrics.resend_avoided(msg.channel);
                StatusEvent {
                    attempt: msg.attempt,
                    at: chrono::Utc::now(),
                    duration_ms: 0,
                    retry_after_ms: None,
                    ..*first
                }
            }
            None => self.send(msg).await,
        };
        // The claim becomes the record: a redelivery now re-reports instead of re-sending. If
        // Redis is gone, this process keeps the outcome until it can write it.
        if !self.record(&mut redis, &key, &event).await {
            let mut held = self.unrecorded.lock().expect("unrecorded lock poisoned");
            held.insert(key, event.clone());
            self.metrics.unrecorded.set(held.len() as i64);
        }
        Ok(event)
    }

    /// Calls the provider (unless the TTL passed) and makes the attempt's status event.
    async fn send(&self, msg: &DispatchMessage) -> StatusEvent {
        let started = Instant::now();
        let result = if msg.not_after.is_some_and(|t| t < chrono::Utc::now()) {
            crate::provider::ProviderResult::failed(
                Outcome::PermanentFailure,
                "expired",
                "the notification's TTL passed before sending",
            )
        } else {
            let provider = self.provider.provider_for(msg);
            let span = tracing::info_span!(
                "provider",
                otel.name = format!("send {} via {provider}", msg.channel.as_str()),
                otel.kind = "client",
                channel = msg.channel.as_str(),
                provider,
                delivery_id = %msg.delivery_id,
                attempt = msg.attempt,
                outcome = tracing::field::Empty,
                error_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let result = self.provider.send(msg).instrument(span.clone()).await;
            // What the trace shows of the answer: its outcome, and a failure's code as an
            // error status.
            span.record("outcome", result.outcome.as_str());
            if let Some(e) = &result.error {
                span.record("error_code", e.code.as_str());
                span.record("otel.status_code", "ERROR");
            }
            result
        };
        let event = StatusEvent {
            schema: SCHEMA,
            delivery_id: msg.delivery_id,
            attempt: msg.attempt,
            channel: msg.channel,
            outcome: result.outcome,
            provider: result
                .provider
                .unwrap_or_else(|| self.provider.provider_for(msg))
                .to_owned(),
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
        self.metrics.record(&event);
        event
    }

    /// Overwrites the claim with the outcome; false when Redis did not take it.
    async fn record(
        &self,
        redis: &mut redis::aio::ConnectionManager,
        key: &str,
        event: &StatusEvent,
    ) -> bool {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(error = %e, "status event not serialisable");
                return false;
            }
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(key, &json, self.dedupe_ttl_secs)
            .ignore();
        if event.outcome == Outcome::Sent {
            pipe.set_ex(
                self.sent_key(event.delivery_id),
                &json,
                self.dedupe_ttl_secs,
            )
            .ignore();
        }
        match pipe.query_async::<()>(redis).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not record the dispatch for dedupe; keeping it in this process");
                false
            }
        }
    }

    /// `SET key sending NX EX claim_ttl`, and in the same round trip the delivery's sent
    /// record; when the claim is taken, what the key holds decides.
    async fn claim(
        &self,
        redis: &mut redis::aio::ConnectionManager,
        key: &str,
        msg: &DispatchMessage,
    ) -> Claim {
        let claimed: redis::RedisResult<(Option<String>, Option<String>)> = redis::pipe()
            .get(self.sent_key(msg.delivery_id))
            .cmd("SET")
            .arg(key)
            .arg(CLAIMED)
            .arg("NX")
            .arg("EX")
            .arg(self.claim_ttl_secs)
            .query_async(redis)
            .await;
        match claimed {
            Ok((sent, Some(_))) => {
                return match sent
                    .and_then(|s| serde_json::from_str::<StatusEvent>(&s).ok())
                    .filter(|ev| ev.attempt != msg.attempt)
                {
                    Some(first) => Claim::SentBefore(Box::new(first)),
                    None => Claim::Won,
                };
            }
            Ok((_, None)) => {}
            // Sending without the claim could send twice; the message waits for Redis.
            Err(e) => {
                tracing::warn!(error = %e, "dedupe claim failed; holding the send until Redis answers");
                return Claim::Unavailable;
            }
        }
        match redis.get::<_, Option<String>>(key).await {
            Ok(Some(v)) if v == CLAIMED => Claim::Busy,
            Ok(Some(stored)) => match serde_json::from_str::<StatusEvent>(&stored) {
                Ok(ev) => Claim::Done(Box::new(ev)),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable dedupe record; sending");
                    Claim::Unavailable
                }
            },
            // The claim expired between the two commands: try again shortly.
            Ok(None) => Claim::Busy,
            Err(e) => {
                tracing::warn!(error = %e, "dedupe lookup failed; holding the send until Redis answers");
                Claim::Unavailable
            }
        }
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
        let event = self.process(&msg).await.map_err(|why| {
            HandleError::Retry(match why {
                Deferred::Busy => anyhow::anyhow!(
                    "delivery {} attempt {} is being sent by another worker",
                    msg.delivery_id,
                    msg.attempt
                ),
                Deferred::ClaimUnavailable => anyhow::anyhow!(
                    "delivery {} attempt {} held back: Redis cannot tell whether it was sent",
                    msg.delivery_id,
                    msg.attempt
                ),
            })
        })?;
        // If this fails the message is retried: the dedupe record makes the retry re-report
        // instead of re-sending.
        self.report(&event).await.map_err(HandleError::Retry)
    }
}
