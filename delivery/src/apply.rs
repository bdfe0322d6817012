//! Applying status events to their deliveries: record the attempt, then move the delivery
//! — sent, a retry scheduled on the database's clock, a dead letter (with the `delivery.dead`
//! event when the notification asked for a fallback), or expired. Idempotent: an attempt
//! already recorded is a duplicate and changes nothing.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use common::{
    events::{Channel, DomainEvent, EVENTS_TOPIC, Outcome, SCHEMA, StatusEvent},
    outbox::{self, OutboxMessage},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{LockedDelivery, Status, retry::RetryConfig};

/// Every `reason` a delivery can end `dead` with (what [`Observer::dead`] is told).
pub const DEAD_REASONS: [&str; 4] = [
    "invalid_address",
    "permanent_failure",
    "attempts_exhausted",
    "undeliverable",
];

/// What the service applying events counts (its metrics), told in the transaction.
pub trait Observer: Send + Sync {
    /// An attempt that was already recorded.
    fn duplicate(&self);
    /// A retry scheduled on `channel`.
    fn retrying(&self, channel: &str);
    /// A delivery on `channel` ended dead, `reason` one of [`DEAD_REASONS`].
    fn dead(&self, channel: &str, reason: &'static str);
    /// A dead delivery on `channel` asked for the next channel.
    fn fallback(&self, channel: &str);
}

/// What applying an event did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The attempt was already recorded (a redelivered event).
    Duplicate,
    /// Recorded, but the delivery had moved on (terminal, or a newer attempt is in flight).
    Stale,
    /// No such delivery: the event is skipped.
    UnknownDelivery,
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

/// Applies `events` in the caller's transaction, answering each in order: one statement locks
/// every delivery, one records every attempt, one moves every delivery that was `sent` (and
/// counts the attempt of the others); retries, dead letters and expiries take a few more each.
/// An event for a delivery that already has one earlier in the batch is applied after it, on
/// a fresh read.
pub async fn apply_many(
    conn: &mut PgConnection,
    events: &[StatusEvent],
    cfg: &RetryConfig,
    obs: &dyn Observer,
) -> anyhow::Result<Vec<Applied>> {
    let mut answers: Vec<Option<Applied>> = vec![None; events.len()];
    let mut pending: Vec<usize> = (0..events.len()).collect();
    while !pending.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| seen.insert(events[i].delivery_id));
        pending = later;
        let evs: Vec<&StatusEvent> = round.iter().map(|&i| &events[i]).collect();
        let applied = apply_round(conn, &evs, cfg, obs).await?;
        for (i, applied) in round.into_iter().zip(applied) {
            answers[i] = Some(applied);
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every event is answered"))
        .collect())
}
/// [`apply_many`] for events of distinct deliveries.
async fn apply_round(
    conn: &mut PgConnection,
    events: &[&StatusEvent],
    cfg: &RetryConfig,
    obs: &dyn Observer,
) -> anyhow::Result<Vec<Applied>> {
    // Lock the deliveries first (in id order, like a cancel): inserting the attempts before
    // would take KEY SHARE locks (the foreign key) and then upgrade them, which deadlocks
    // against a concurrent cancel queued for the same row.
    let ids: Vec<Uuid> = events.iter().map(|e| e.delivery_id).collect();
    let locked: HashMap<Uuid, LockedDelivery> = LockedDelivery::lock_many(conn, &ids)
        .await?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let known: Vec<&StatusEvent> = events
        .iter()
        .copied()
        .filter(|e| locked.contains_key(&e.delivery_id))
        .collect();
    let recorded = record_attempts(conn, &known).await?;

    // Every recorded attempt counts; a `sent` that is not stale moves its delivery in the
    // same statement.
    let mut answers = Vec::with_capacity(events.len());
    let (mut bump, mut sent, mut sent_at) = (Vec::new(), Vec::new(), Vec::new());
    for ev in events {
        let Some(d) = locked.get(&ev.delivery_id) else {
            answers.push(Some(Applied::UnknownDelivery));
            continue;
        };
        if !recorded.contains(&ev.delivery_id) {
            obs.duplicate();
            answers.push(Some(Applied::Duplicate));
            continue;
        }
        let stale = d.is_terminal() || (ev.attempt as i32) < d.current_attempt;
        let moves = !stale && ev.outcome == Outcome::Sent;
        bump.push(ev.delivery_id);
        sent.push(moves);
        sent_at.push(ev.at);
        answers.push(match (stale, moves) {
            (true, _) => Some(Applied::Stale),
            (false, true) => Some(Applied::Sent),
            (false, false) => None,
        });
    }
    if !bump.is_empty() {
        sqlx::query(
            "UPDATE deliveries d
             SET attempts = d.attempts + 1, updated_at = now(),
                 status = CASE WHEN v.sent THEN $4 ELSE d.status END,
                 reason = CASE WHEN v.sent THEN NULL ELSE d.reason END,
                 sent_at = CASE WHEN v.sent THEN v.at ELSE d.sent_at END,
                 next_attempt_at = CASE WHEN v.sent THEN NULL ELSE d.next_attempt_at END
             FROM UNNEST($1::uuid[], $2::bool[], $3::timestamptz[]) AS v(id, sent, at)
             WHERE d.id = v.id",
        )
        .bind(&bump)
        .bind(&sent)
        .bind(&sent_at)
        .bind(Status::Sent.as_str())
        .execute(&mut *conn)
        .await?;
    }

    // The other outcomes, one by one.
    let mut out = Vec::with_capacity(events.len());
    for (ev, answer) in events.iter().zip(answers) {
        out.push(match answer {
            Some(applied) => applied,
            None => settle(conn, ev, &locked[&ev.delivery_id], cfg, obs).await?,
        });
    }
    Ok(out)
}

/// Inserts the attempts not recorded yet; returns the deliveries whose attempt was new.
async fn record_attempts(
    conn: &mut PgConnection,
    events: &[&StatusEvent],
) -> anyhow::Result<HashSet<Uuid>> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let text = |f: fn(&StatusEvent) -> Option<String>| -> Vec<Option<String>> {
        events.iter().map(|e| f(e)).collect()
    };
    let ids: Vec<Uuid> = events.iter().map(|e| e.delivery_id).collect();
    let attempts: Vec<i32> = events.iter().map(|e| e.attempt as i32).collect();
    let outcomes = text(|e| Some(e.outcome.as_str().to_owned()));
    let providers = text(|e| Some(e.provider.clone()));
    let provider_ids = text(|e| e.provider_message_id.clone());
    let codes = text(|e| e.error.as_ref().map(|e| e.code.clone()));
    let messages = text(|e| e.error.as_ref().map(|e| e.message.clone()));
    let durations: Vec<i64> = events.iter().map(|e| e.duration_ms as i64).collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO attempts (delivery_id, attempt, outcome, provider, provider_message_id, error_code,
                               error_message, duration_ms, at)
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::bigint[], $9::timestamptz[])
         ON CONFLICT (delivery_id, attempt) DO NOTHING
         RETURNING delivery_id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&providers)
    .bind(&provider_ids)
    .bind(&codes)
    .bind(&messages)
    .bind(&durations)
    .bind(&ats)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Moves a delivery whose new attempt did not succeed: a retry, a dead letter or an expiry.
async fn settle(
    conn: &mut PgConnection,
    ev: &StatusEvent,
    d: &LockedDelivery,
    cfg: &RetryConfig,
    obs: &dyn Observer,
) -> anyhow::Result<Applied> {
    let error_json = ev
        .error
        .as_ref()
        .map(|e| serde_json::json!({ "code": e.code, "message": e.message }));
    let set = |status: Status, reason: Option<&'static str>| {
        sqlx::query(
            "UPDATE deliveries
             SET status = $2, reason = $3, last_error = COALESCE($4, last_error),
                 next_attempt_at = NULL
             WHERE id = $1",
        )
        .bind(ev.delivery_id)
        .bind(status.as_str())
        .bind(reason)
        .bind(error_json.clone())
    };

    let applied = match ev.outcome {
        Outcome::Sent => unreachable!("a sent attempt is applied with its batch"),
        Outcome::InvalidAddress => {
            set(Status::Dead, Some("invalid_address"))
                .execute(&mut *conn)
                .await?;
            device_invalidated(conn, ev, d).await?;
            died(conn, d, obs, ev.at, DEAD_REASONS[0]).await?
        }
        Outcome::PermanentFailure if ev.error.as_ref().is_some_and(|e| e.code == "expired") => {
            set(Status::Expired, Some("ttl_passed"))
                .execute(&mut *conn)
                .await?;
            Applied::Expired
        }
        Outcome::PermanentFailure => {
            set(Status::Dead, Some("permanent_failure"))
                .execute(&mut *conn)
                .await?;
            died(conn, d, obs, ev.at, DEAD_REASONS[1]).await?
        }
        Outcome::TransientFailure => {
            let retry_after = ev.retry_after_ms.map(Duration::from_millis);
            let in_run = (ev.attempt as i32 - d.retry_base).max(1) as u32;
            let delay = crate::retry::next_delay(
                cfg.schedule(d.channel.as_str()),
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
                    set(Status::Expired, Some("ttl_passed"))
                        .execute(&mut *conn)
                        .await?;
                    Applied::Expired
                }
                (Some(delay), Some(at)) => {
                    let next_attempt = ev.attempt + 1;
                    sqlx::query(
                        "UPDATE deliveries
                         SET status = $5, current_attempt = $2, next_attempt_at = $3,
                             last_error = COALESCE($4, last_error)
                         WHERE id = $1",
                    )
                    .bind(ev.delivery_id)
                    .bind(next_attempt as i32)
                    .bind(at)
                    .bind(error_json.clone())
                    .bind(Status::Retrying.as_str())
                    .execute(&mut *conn)
                    .await?;
                    d.enqueue_attempt(conn, next_attempt, Some(at)).await?;
                    obs.retrying(d.channel.as_str());
                    Applied::Retrying {
                        next_attempt,
                        delay,
                    }
                }
                _ => {
                    set(Status::Dead, Some("attempts_exhausted"))
                        .execute(&mut *conn)
                        .await?;
                    died(conn, d, obs, ev.at, DEAD_REASONS[2]).await?
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
    let Some(common::address::PushAddress { platform, token }) = d
        .address
        .as_deref()
        .and_then(common::address::PushAddress::parse)
    else {
        return Ok(());
    };
    if d.channel != Channel::Push {
        return Ok(());
    }
    let event = DomainEvent::DeviceInvalidated {
        schema: SCHEMA,
        user_id: d.user_id,
        platform,
        token: token.clone(),
        delivery_id: ev.delivery_id,
        reason: ev
            .error
            .as_ref()
            .map_or_else(|| "invalid_address".to_owned(), |e| e.code.clone()),
        at: ev.at,
    };
    let key = d.user_id.map_or_else(|| token.clone(), |u| u.to_string());
    outbox::enqueue(conn, &[OutboxMessage::new(EVENTS_TOPIC, key, &event)?]).await?;
    Ok(())
}

/// A delivery ended `dead`: counted, and when its notification asked for `fallback` the
/// `delivery.dead` event goes out in this transaction so notification-service plans the next
/// channel. (Also for dispatches Kafka refused: [`undeliverable`].)
pub(crate) async fn died(
    conn: &mut PgConnection,
    d: &LockedDelivery,
    obs: &dyn Observer,
    at: chrono::DateTime<chrono::Utc>,
    reason: &'static str,
) -> anyhow::Result<Applied> {
    obs.dead(d.channel.as_str(), reason);
    let wants_fallback = d
        .fallback
        .as_ref()
        .is_some_and(|f| f.0.iter().any(|c| *c != d.channel));
    if wants_fallback {
        let channel = d.channel;
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
        obs.fallback(d.channel.as_str());
    }
    Ok(Applied::Dead { reason })
}

/// Deliveries whose time to live passed before they could be (re-)sent → `expired`
/// (`ttl_passed`). Call with the rows locked.
pub async fn expire_many(conn: &mut PgConnection, ids: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET status = $2, reason = 'ttl_passed', next_attempt_at = NULL,
                updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(Status::Expired.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A delivery whose dispatch message Kafka refused for good → `dead` (`undeliverable`),
/// `message` saying why; falls back like any dead letter. Call with the row locked.
pub async fn undeliverable(
    conn: &mut PgConnection,
    d: &LockedDelivery,
    message: &str,
    obs: &dyn Observer,
) -> anyhow::Result<Applied> {
    let last_error = serde_json::json!({ "code": "undeliverable", "message": message });
    sqlx::query(
        "UPDATE deliveries
         SET status = $3, reason = 'undeliverable', last_error = $2,
             next_attempt_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(d.id)
    .bind(last_error)
    .bind(Status::Dead.as_str())
    .execute(&mut *conn)
    .await?;
    died(conn, d, obs, d.db_now, DEAD_REASONS[3]).await
}
