//! The next attempt of a delivery, for the two services that write one: the repeater
//! (retries, re-drives of lost messages) and notification-service (admin re-drive of dead
//! letters).
//!
//! A later attempt is a fresh dispatch message rebuilt from the stored notification, written
//! to the outbox in the caller's transaction, with the delivery's `current_attempt` moved on —
//! so the worker's dedupe key (`dispatch:<id>:<attempt>`) is new and a status event of an
//! older attempt is recorded without moving the delivery.

use common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    Status,
    dispatch::{LockedDelivery, dispatch_row},
};

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
         SET status = $4, reason = NULL, current_attempt = $2, retry_base = $3,
             next_attempt_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(d.id)
    .bind(attempt)
    .bind(retry_base)
    .bind(Status::Queued.as_str())
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
         SET status = $4, reason = NULL, current_attempt = u.attempt, retry_base = u.base,
             next_attempt_at = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::int[], $3::int[]) AS u(id, attempt, base)
         WHERE d.id = u.id",
    )
    .bind(&ids)
    .bind(&to)
    .bind(&base)
    .bind(Status::Queued.as_str())
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
