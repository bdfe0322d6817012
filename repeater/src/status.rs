//! Applying one status event to its delivery, in one transaction.

use std::{sync::Arc, time::Duration};

use common::{
    delivery::LockedDelivery,
    events::{
        Channel, DomainEvent, EVENTS_TOPIC, Outcome, SCHEMA, StatusEvent, parse_push_address,
    },
    kafka::runner::{HandleError, MessageHandler},
    outbox::{self, OutboxMessage},
};
use rdkafka::{Message, message::OwnedMessage};
use sqlx::{PgConnection, PgPool};

use crate::{
    config::RetryConfig,
    metrics::{self, Metrics},
    retry,
};

pub struct StatusHandler {
    pool: PgPool,
    retry: RetryConfig,
    metrics: Arc<Metrics>,
}

/// What applying an event did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The attempt was already recorded (a redelivered event).
    Duplicate,
    /// Recorded, but the delivery had moved on (terminal, or a newer attempt is in flight).
    Stale,
    Sent,
    Retrying {
        next_attempt: u32,
        delay: Duration,
    },
    Dead {
        reason: &'static str,
    },
    Expired,
}

impl StatusHandler {
    pub fn new(pool: PgPool, retry: RetryConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            retry,
            metrics,
        }
    }

    /// Records the attempt and moves the delivery on. Idempotent.
    pub async fn apply(&self, ev: &StatusEvent) -> anyhow::Result<Applied> {
        let mut tx = self.pool.begin().await?;
        let applied = apply(&mut tx, ev, &self.retry, &self.metrics).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

async fn apply(
    conn: &mut PgConnection,
    ev: &StatusEvent,
    cfg: &RetryConfig,
    metrics: &Metrics,
) -> anyhow::Result<Applied> {
    let error_json = ev
        .error
        .as_ref()
        .map(|e| serde_json::json!({ "code": e.code, "message": e.message }));
    // Lock the delivery first: inserting the attempt before would take a KEY SHARE lock (the
    // foreign key) and then upgrade it to FOR UPDATE, which deadlocks against a concurrent
    // cancel queued for the same row.
    let Some(d) = LockedDelivery::lock(conn, ev.delivery_id).await? else {
        anyhow::bail!("status event for unknown delivery {}", ev.delivery_id);
    };
    let inserted = sqlx::query(
        "INSERT INTO attempts (delivery_id, attempt, outcome, provider, provider_message_id, error_code,
                               error_message, duration_ms, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(ev.delivery_id)
    .bind(ev.attempt as i32)
    .bind(ev.outcome.as_str())
    .bind(&ev.provider)
    .bind(&ev.provider_message_id)
    .bind(ev.error.as_ref().map(|e| &e.code))
    .bind(ev.error.as_ref().map(|e| &e.message))
    .bind(ev.duration_ms as i64)
    .bind(ev.at)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    if inserted == 0 {
        metrics.duplicates.inc();
        return Ok(Applied::Duplicate);
    }

    sqlx::query("UPDATE deliveries SET attempts = attempts + 1, updated_at = now() WHERE id = $1")
        .bind(ev.delivery_id)
        .execute(&mut *conn)
        .await?;
    if d.is_terminal() || (ev.attempt as i32) < d.current_attempt {
        return Ok(Applied::Stale);
    }

    let set = |status: &'static str, reason: Option<&'static str>| {
        sqlx::query(
            "UPDATE deliveries
             SET status = $2, reason = $3, last_error = COALESCE($4, last_error),
                 sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END, next_attempt_at = NULL
             WHERE id = $1",
        )
        .bind(ev.delivery_id)
        .bind(status)
        .bind(reason)
        .bind(error_json.clone())
        .bind(ev.at)
    };

    let applied = match ev.outcome {
        Outcome::Sent => {
            set("sent", None).execute(&mut *conn).await?;
            Applied::Sent
        }
        Outcome::InvalidAddress => {
            set("dead", Some("invalid_address"))
                .execute(&mut *conn)
                .await?;
            device_invalidated(conn, ev, &d).await?;
            died(conn, &d, metrics, ev.at, "invalid_address").await?
        }
        Outcome::PermanentFailure if ev.error.as_ref().is_some_and(|e| e.code == "expired") => {
            set("expired", Some("ttl_passed"))
                .execute(&mut *conn)
                .await?;
            Applied::Expired
        }
        Outcome::PermanentFailure => {
            set("dead", Some("permanent_failure"))
                .execute(&mut *conn)
                .await?;
            died(conn, &d, metrics, ev.at, "permanent_failure").await?
        }
        Outcome::TransientFailure => {
            let retry_after = ev.retry_after_ms.map(Duration::from_millis);
            let in_run = (ev.attempt as i32 - d.retry_base).max(1) as u32;
            let delay = retry::next_delay(
                cfg.schedule(&d.channel),
                cfg.jitter,
                in_run,
                retry_after,
                &mut rand::rng(),
            );
            // On the database's clock, like `recorded_at` and the relay's `available_at <= now()`.
            let at =
                delay.and_then(|delay| Some(d.db_now + chrono::Duration::from_std(delay).ok()?));
            match (delay, at) {
                (Some(_), Some(at)) if d.not_after().is_some_and(|end| at > end) => {
                    set("expired", Some("ttl_passed"))
                        .execute(&mut *conn)
                        .await?;
                    Applied::Expired
                }
                (Some(delay), Some(at)) => {
                    let next_attempt = ev.attempt + 1;
                    sqlx::query(
                        "UPDATE deliveries
                         SET status = 'retrying', current_attempt = $2, next_attempt_at = $3,
                             last_error = COALESCE($4, last_error)
                         WHERE id = $1",
                    )
                    .bind(ev.delivery_id)
                    .bind(next_attempt as i32)
                    .bind(at)
                    .bind(error_json.clone())
                    .execute(&mut *conn)
                    .await?;
                    d.enqueue_attempt(conn, next_attempt, Some(at)).await?;
                    metrics
                        .retries
                        .get_or_create(&metrics::channel(&d.channel))
                        .inc();
                    Applied::Retrying {
                        next_attempt,
                        delay,
                    }
                }
                _ => {
                    set("dead", Some("attempts_exhausted"))
                        .execute(&mut *conn)
                        .await?;
                    died(conn, &d, metrics, ev.at, "attempts_exhausted").await?
                }
            }
        }
    };
    Ok(applied)
}

/// A push token the provider called dead is removed from users-service: the event goes out
/// through the outbox, in the transaction that records the attempt.
async fn device_invalidated(
    conn: &mut PgConnection,
    ev: &StatusEvent,
    d: &LockedDelivery,
) -> anyhow::Result<()> {
    let Some((platform, token)) = d.address.as_deref().and_then(parse_push_address) else {
        return Ok(());
    };
    if d.channel != Channel::Push.as_str() {
        return Ok(());
    }
    let event = DomainEvent::DeviceInvalidated {
        schema: SCHEMA,
        user_id: d.user_id,
        platform,
        token: token.to_owned(),
        delivery_id: ev.delivery_id,
        reason: ev
            .error
            .as_ref()
            .map_or_else(|| "invalid_address".to_owned(), |e| e.code.clone()),
        at: ev.at,
    };
    let key = d
        .user_id
        .map_or_else(|| token.to_owned(), |u| u.to_string());
    outbox::enqueue(conn, &[OutboxMessage::new(EVENTS_TOPIC, key, &event)?]).await?;
    Ok(())
}

/// A delivery ended `dead`: counted, and when its notification asked for `fallback` the
/// `delivery.dead` event goes out in this transaction so notification-service plans the next
/// channel. (Also used by the stuck scan for dispatches Kafka refused.)
pub(crate) async fn died(
    conn: &mut PgConnection,
    d: &LockedDelivery,
    metrics: &Metrics,
    at: chrono::DateTime<chrono::Utc>,
    reason: &'static str,
) -> anyhow::Result<Applied> {
    metrics
        .dead
        .get_or_create(&metrics::DeadLabel {
            channel: d.channel.clone(),
            reason,
        })
        .inc();
    let wants_fallback = d
        .fallback
        .as_ref()
        .is_some_and(|f| f.0.iter().any(|c| c != &d.channel));
    if let (true, Some(channel)) = (wants_fallback, Channel::parse(&d.channel)) {
        let event = DomainEvent::DeliveryDead {
            schema: SCHEMA,
            delivery_id: d.id,
            notification_id: d.notification_id,
            user_id: d.user_id,
            channel,
            reason: reason.to_owned(),
            at,
        };
        outbox::enqueue(conn, &[OutboxMessage::new(EVENTS_TOPIC, d.key(), &event)?]).await?;
        metrics
            .fallbacks
            .get_or_create(&metrics::channel(&d.channel))
            .inc();
    }
    Ok(Applied::Dead { reason })
}

impl MessageHandler for StatusHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let ev: StatusEvent = serde_json::from_slice(raw.payload().unwrap_or_default())
            .map_err(|e| HandleError::Skip(anyhow::anyhow!("undecodable status event: {e}")))?;
        match self.apply(&ev).await {
            Ok(applied) => {
                tracing::info!(delivery_id = %ev.delivery_id, attempt = ev.attempt, ?applied, "status applied");
                Ok(())
            }
            Err(e)
                if e.to_string()
                    .starts_with("status event for unknown delivery") =>
            {
                Err(HandleError::Skip(e))
            }
            // Database trouble: keep the event (offset not stored) and try again.
            Err(e) => Err(HandleError::Retry(e)),
        }
    }
}
