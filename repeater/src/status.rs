//! Applying one status event to its delivery, in one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    events::{
        Channel, Content, DispatchMessage, DomainEvent, EVENTS_TOPIC, Lane, Outcome, RecipientRef,
        SCHEMA, StatusEvent, dispatch_topic, parse_push_address,
    },
    kafka::runner::{HandleError, MessageHandler},
    outbox::{self, OutboxMessage},
};
use rdkafka::{Message, message::OwnedMessage};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{config::RetryConfig, retry};

/// Statuses after which nothing changes a delivery any more.
const TERMINAL: [&str; 5] = ["sent", "dead", "suppressed", "cancelled", "expired"];

pub struct StatusHandler {
    pool: PgPool,
    retry: RetryConfig,
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

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    status: String,
    current_attempt: i32,
    notification_id: Uuid,
    channel: String,
    lane: String,
    user_id: Option<Uuid>,
    address: Option<String>,
    locale: Option<String>,
    content: sqlx::types::Json<Content>,
    /// Renderings per recipient locale (template notifications).
    localized: Option<sqlx::types::Json<std::collections::BTreeMap<String, Content>>>,
    created_at: DateTime<Utc>,
    send_at: Option<DateTime<Utc>>,
    ttl_seconds: Option<i32>,
}

impl StatusHandler {
    pub fn new(pool: PgPool, retry: RetryConfig) -> Self {
        Self { pool, retry }
    }

    /// Records the attempt and moves the delivery on. Idempotent.
    pub async fn apply(&self, ev: &StatusEvent) -> anyhow::Result<Applied> {
        let mut tx = self.pool.begin().await?;
        let applied = apply(&mut tx, ev, &self.retry).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

async fn apply(
    conn: &mut PgConnection,
    ev: &StatusEvent,
    cfg: &RetryConfig,
) -> anyhow::Result<Applied> {
    let error_json = ev
        .error
        .as_ref()
        .map(|e| serde_json::json!({ "code": e.code, "message": e.message }));
    // Lock the delivery first: inserting the attempt before would take a KEY SHARE lock (the
    // foreign key) and then upgrade it to FOR UPDATE, which deadlocks against a concurrent
    // cancel queued for the same row.
    let Some(d): Option<DeliveryRow> = sqlx::query_as(
        "SELECT d.status, d.current_attempt, d.notification_id, d.channel, d.lane, d.user_id, d.address, d.locale,
                n.content, n.localized, n.created_at, n.send_at, n.ttl_seconds
         FROM deliveries d JOIN notifications n ON n.id = d.notification_id
         WHERE d.id = $1
         FOR NO KEY UPDATE OF d",
    )
    .bind(ev.delivery_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
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
        return Ok(Applied::Duplicate);
    }

    sqlx::query("UPDATE deliveries SET attempts = attempts + 1, updated_at = now() WHERE id = $1")
        .bind(ev.delivery_id)
        .execute(&mut *conn)
        .await?;
    if TERMINAL.contains(&d.status.as_str()) || (ev.attempt as i32) < d.current_attempt {
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
            Applied::Dead {
                reason: "invalid_address",
            }
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
            Applied::Dead {
                reason: "permanent_failure",
            }
        }
        Outcome::TransientFailure => {
            let retry_after = ev.retry_after_ms.map(Duration::from_millis);
            let delay = retry::next_delay(cfg, ev.attempt, retry_after, &mut rand::rng());
            match delay {
                None => {
                    set("dead", Some("attempts_exhausted"))
                        .execute(&mut *conn)
                        .await?;
                    Applied::Dead {
                        reason: "attempts_exhausted",
                    }
                }
                Some(delay) => {
                    let next_attempt = ev.attempt + 1;
                    let at = Utc::now() + chrono::Duration::from_std(delay)?;
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
                    let msg = redispatch(ev.delivery_id, &d, next_attempt)?;
                    let key = d
                        .user_id
                        .map(|u| u.to_string())
                        .or(d.address.clone())
                        .unwrap_or_default();
                    let out = OutboxMessage::new(dispatch_topic(msg.channel, msg.lane), key, &msg)?
                        .header("delivery-id", ev.delivery_id)
                        .header("attempt", next_attempt)
                        .available_at(Some(at));
                    outbox::enqueue(conn, &[out]).await?;
                    Applied::Retrying {
                        next_attempt,
                        delay,
                    }
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
    d: &DeliveryRow,
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

/// The dispatch message of a later attempt, rebuilt from the stored notification.
fn redispatch(delivery_id: Uuid, d: &DeliveryRow, attempt: u32) -> anyhow::Result<DispatchMessage> {
    let channel = Channel::parse(&d.channel)
        .ok_or_else(|| anyhow::anyhow!("unknown channel {}", d.channel))?;
    let lane = Lane::parse(&d.lane).ok_or_else(|| anyhow::anyhow!("unknown lane {}", d.lane))?;
    Ok(DispatchMessage {
        schema: SCHEMA,
        delivery_id,
        notification_id: d.notification_id,
        attempt,
        channel,
        lane,
        recipient: RecipientRef {
            user_id: d.user_id,
            address: d.address.clone().unwrap_or_default(),
        },
        content: d
            .localized
            .as_ref()
            .and_then(|l| l.0.get(d.locale.as_deref().unwrap_or_default()))
            .unwrap_or(&d.content.0)
            .clone(),
        locale: d.locale.clone(),
        not_after: d
            .ttl_seconds
            .map(|ttl| d.send_at.unwrap_or(d.created_at) + chrono::Duration::seconds(ttl.into())),
        created_at: d.created_at,
    })
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
