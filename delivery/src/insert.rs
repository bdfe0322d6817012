//! Writing newly planned deliveries: intake's and fallback's one way in. The statuses a new
//! delivery can start in are [`Start`]'s; everything after is [`crate::apply`]'s.

use chrono::{DateTime, Utc};
use common::{
    events::{Channel, Lane},
    outbox::{self, OutboxMessage},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Status;

/// The status a delivery is planned in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Waiting for `send_at`.
    Pending,
    /// Handed to the outbox for dispatch now.
    Queued,
    /// Not sent, for its reason.
    Suppressed,
    /// Folded into a digest: sent with the digest's own notification.
    Digested,
}

impl Start {
    pub fn status(self) -> Status {
        match self {
            Start::Pending => Status::Pending,
            Start::Queued => Status::Queued,
            Start::Suppressed => Status::Suppressed,
            Start::Digested => Status::Digested,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }
}

/// One delivery to insert.
pub struct NewDelivery<'a> {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub channel: Channel,
    pub lane: Lane,
    pub user_id: Option<Uuid>,
    pub recipient: &'a serde_json::Value,
    pub address: Option<&'a str>,
    pub start: Start,
    pub reason: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub created_at: DateTime<Utc>,
    /// The dead delivery this one replaces (channel fallback).
    pub fallback_of: Option<Uuid>,
    /// The digest a `Digested` delivery was folded into.
    pub digest_id: Option<Uuid>,
}

/// Inserts `deliveries` and enqueues `outbox_rows` (their dispatch messages): two statements
/// however many. Call inside the transaction that writes their notification.
pub async fn insert(
    conn: &mut PgConnection,
    deliveries: &[NewDelivery<'_>],
    outbox_rows: &[OutboxMessage],
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO deliveries (id, notification_id, channel, lane, user_id, recipient, address, status, reason,
                                 locale, created_at, updated_at, fallback_of, digest_id)
         SELECT id, notification_id, channel, lane, user_id, recipient, address, status, reason, locale, at, at,
                fallback_of, digest_id
         FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::uuid[], $7::jsonb[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::uuid[], $13::uuid[])
              AS u(id, notification_id, at, channel, lane, user_id, recipient, address, status, reason, locale,
                   fallback_of, digest_id)",
    )
    .bind(deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.notification_id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.created_at).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.channel.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.lane.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.user_id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.recipient).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.address).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.start.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.reason).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.locale).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.fallback_of).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.digest_id).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    outbox::enqueue(conn, outbox_rows).await?;
    Ok(())
}
