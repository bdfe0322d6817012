//! The next attempt of a delivery in database `notify`, shared by the two services that write
//! one: the repeater (retries, re-drives of lost messages) and notification-service (admin
//! re-drive of dead letters).
//!
//! A later attempt is a fresh dispatch message rebuilt from the stored notification, written
//! to the outbox in the caller's transaction, with the delivery's `current_attempt` moved on —
//! so the worker's dedupe key (`dispatch:<id>:<attempt>`) is new and a status event of an
//! older attempt is recorded without moving the delivery.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    events::{Channel, Content, DispatchMessage, Lane, RecipientRef, SCHEMA, dispatch_topic},
    outbox::{self, OutboxMessage},
};

/// The outbox row that carries a dispatch message: its lane's topic, keyed by `key`, with the
/// delivery and attempt in headers, urgent-lane rows published ahead of bulk ones. Every
/// writer of a dispatch (intake, retries, re-drives) builds it here.
pub fn dispatch_row(
    msg: &DispatchMessage,
    key: impl Into<String>,
) -> anyhow::Result<OutboxMessage> {
    Ok(
        OutboxMessage::new(dispatch_topic(msg.channel, msg.lane), key, msg)?
            .header("delivery-id", msg.delivery_id)
            .header("attempt", msg.attempt)
            .urgent(msg.lane == Lane::Urgent),
    )
}

/// Statuses after which only a re-drive changes a delivery.
pub const TERMINAL: [&str; 5] = ["sent", "dead", "suppressed", "cancelled", "expired"];

/// A delivery with what its dispatch message needs, read under a row lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedDelivery {
    pub id: Uuid,
    pub status: String,
    pub current_attempt: i32,
    pub retry_base: i32,
    pub notification_id: Uuid,
    pub channel: String,
    pub lane: String,
    pub user_id: Option<Uuid>,
    pub address: Option<String>,
    pub locale: Option<String>,
    pub content: sqlx::types::Json<Content>,
    /// Renderings per recipient locale (template notifications).
    pub localized: Option<sqlx::types::Json<std::collections::BTreeMap<String, Content>>>,
    pub created_at: DateTime<Utc>,
    pub send_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<i32>,
    /// The notification's fallback channel order, if it asked for one.
    pub fallback: Option<sqlx::types::Json<Vec<String>>>,
    /// The locking transaction's `now()`: the database's clock, which the relay compares
    /// `available_at` with and which stamps `attempts.recorded_at`. Schedules computed from it
    /// mean the same on every host, however far an application server's clock drifts.
    pub db_now: DateTime<Utc>,
}

impl LockedDelivery {
    /// Locks the delivery row (`FOR NO KEY UPDATE`: attempt rows referencing it can still be
    /// inserted) and reads it with its notification.
    pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(
            "SELECT d.id, d.status, d.current_attempt, d.retry_base, d.notification_id, d.channel, d.lane,
                    d.user_id, d.address, d.locale, n.content, n.localized, n.created_at, n.send_at,
                    n.ttl_seconds, n.fallback, now() AS db_now
             FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE d.id = $1
             FOR NO KEY UPDATE OF d",
        )
        .bind(id)
        .fetch_optional(conn)
        .await
    }

    /// Locks every delivery of `ids` that exists (in id order, like a cancel, so the two
    /// cannot deadlock) and reads each with its notification.
    pub async fn lock_many(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(
            "SELECT d.id, d.status, d.current_attempt, d.retry_base, d.notification_id, d.channel, d.lane,
                    d.user_id, d.address, d.locale, n.content, n.localized, n.created_at, n.send_at,
                    n.ttl_seconds, n.fallback, now() AS db_now
             FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE d.id = ANY($1)
             ORDER BY d.id
             FOR NO KEY UPDATE OF d",
        )
        .bind(ids)
        .fetch_all(conn)
        .await
    }

    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.status.as_str())
    }

    /// The instant after which the notification must not be sent any more (its TTL).
    pub fn not_after(&self) -> Option<DateTime<Utc>> {
        self.ttl_seconds.map(|ttl| {
            self.send_at.unwrap_or(self.created_at) + chrono::Duration::seconds(ttl.into())
        })
    }

    /// The Kafka key: the recipient (per-recipient ordering).
    pub fn key(&self) -> String {
        self.user_id
            .map(|u| u.to_string())
            .or_else(|| self.address.clone())
            .unwrap_or_default()
    }

    /// The dispatch message of attempt `attempt`.
    pub fn dispatch(&self, attempt: u32) -> anyhow::Result<DispatchMessage> {
        let channel = Channel::parse(&self.channel)
            .ok_or_else(|| anyhow::anyhow!("unknown channel {}", self.channel))?;
        let lane =
            Lane::parse(&self.lane).ok_or_else(|| anyhow::anyhow!("unknown lane {}", self.lane))?;
        Ok(DispatchMessage {
            schema: SCHEMA,
            delivery_id: self.id,
            notification_id: self.notification_id,
            attempt,
            channel,
            lane,
            recipient: RecipientRef {
                user_id: self.user_id,
                address: self.address.clone().unwrap_or_default(),
            },
            content: self
                .localized
                .as_ref()
                .and_then(|l| l.0.get(self.locale.as_deref().unwrap_or_default()))
                .unwrap_or(&self.content.0)
                .clone(),
            locale: self.locale.clone(),
            not_after: self.not_after(),
            created_at: self.created_at,
        })
    }

    /// Writes attempt `attempt`'s dispatch message to the outbox, published at `at` (`None` =
    /// now). Call in the transaction that moved `current_attempt` to `attempt`.
    pub async fn enqueue_attempt(
        &self,
        conn: &mut PgConnection,
        attempt: u32,
        at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        let msg = self.dispatch(attempt)?;
        let out = dispatch_row(&msg, self.key())?.available_at(at);
        outbox::enqueue(conn, &[out]).await?;
        Ok(())
    }
}

/// Why a delivery is re-driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveKind {
    /// An admin re-drove a dead letter: it gets the whole retry schedule again.
    DeadLetter,
    /// The stuck scan found its dispatch message lost: the retry run goes on.
    Lost,
}

impl RedriveKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RedriveKind::DeadLetter => "dead_letter",
            RedriveKind::Lost => "lost",
        }
    }
}

/// Re-drives a locked delivery now: `queued` with `current_attempt + 1`, a new dispatch message
/// in the outbox and a row in `redrives` (who, why). Returns the new attempt number. The
/// caller checked that the delivery is in a state it may re-drive from.
pub async fn redrive(
    conn: &mut PgConnection,
    d: &LockedDelivery,
    kind: RedriveKind,
    actor: &str,
    detail: &str,
) -> anyhow::Result<u32> {
    let attempt = d.current_attempt + 1;
    let retry_base = match kind {
        RedriveKind::DeadLetter => d.current_attempt,
        RedriveKind::Lost => d.retry_base,
    };
    sqlx::query(
        "UPDATE deliveries
         SET status = 'queued', reason = NULL, current_attempt = $2, retry_base = $3,
             next_attempt_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(d.id)
    .bind(attempt)
    .bind(retry_base)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO redrives (delivery_id, from_attempt, to_attempt, kind, actor, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(d.id)
    .bind(d.current_attempt)
    .bind(attempt)
    .bind(kind.as_str())
    .bind(actor)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    d.enqueue_attempt(conn, attempt as u32, None).await?;
    Ok(attempt as u32)
}

/// [`redrive`] for many locked deliveries at once, in set-based statements (the stuck scan
/// re-drives a wiped cluster's whole backlog). `detail` says why, per delivery. Returns how
/// many were re-driven.
pub async fn redrive_many(
    conn: &mut PgConnection,
    batch: &[(&LockedDelivery, String)],
    kind: RedriveKind,
    actor: &str,
) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = batch.iter().map(|(d, _)| d.id).collect();
    let from: Vec<i32> = batch.iter().map(|(d, _)| d.current_attempt).collect();
    let to: Vec<i32> = from.iter().map(|a| a + 1).collect();
    let base: Vec<i32> = batch
        .iter()
        .map(|(d, _)| match kind {
            RedriveKind::DeadLetter => d.current_attempt,
            RedriveKind::Lost => d.retry_base,
        })
        .collect();
    let details: Vec<&str> = batch.iter().map(|(_, why)| why.as_str()).collect();
    sqlx::query(
        "UPDATE deliveries d
         SET status = 'queued', reason = NULL, current_attempt = u.attempt, retry_base = u.base,
             next_attempt_at = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::int[], $3::int[]) AS u(id, attempt, base)
         WHERE d.id = u.id",
    )
    .bind(&ids)
    .bind(&to)
    .bind(&base)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO redrives (delivery_id, from_attempt, to_attempt, kind, actor, detail)
         SELECT id, f, t, $4, $5, w FROM UNNEST($1::uuid[], $2::int[], $3::int[], $6::text[]) AS u(id, f, t, w)",
    )
    .bind(&ids)
    .bind(&from)
    .bind(&to)
    .bind(kind.as_str())
    .bind(actor)
    .bind(&details)
    .execute(&mut *conn)
    .await?;
    let mut messages = Vec::with_capacity(batch.len());
    for ((d, _), attempt) in batch.iter().zip(&to) {
        let msg = d.dispatch(*attempt as u32)?;
        debug_assert_eq!(msg.attempt, *attempt as u32);
        messages.push(dispatch_row(&msg, d.key())?);
    }
    outbox::enqueue(conn, &messages).await?;
    Ok(batch.len())
}
