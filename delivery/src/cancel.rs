//! Cancelling a notification without racing the outbox relay.
//!
//! The relay locks the rows it publishes (`FOR UPDATE SKIP LOCKED`) and marks them published in
//! the same transaction. Cancel deletes only rows that are still unpublished: a row the relay
//! is publishing makes the delete wait, then fail the `published_at IS NULL` re-check. So each
//! outbox row ends up either published or deleted, and only deliveries whose row was deleted
//! become `cancelled` — never one that was also sent. The delivery rows are locked first (in id
//! order, `FOR NO KEY UPDATE` like the repeater, so foreign-key checks do not conflict), so a
//! concurrent status event (a retry being scheduled) waits and then sees `cancelled`. The
//! notification row is not locked: it never changes, and locking it deadlocked with the
//! repeater's foreign-key checks.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::Status;

/// What a cancel did.
#[derive(Debug, Default)]
pub struct Cancelled {
    /// Deliveries cancelled now.
    pub cancelled: Vec<Uuid>,
    /// Deliveries already handed to Kafka (or finished): `(id, status)`.
    pub dispatched: Vec<(Uuid, String)>,
}

/// How long a cancel waits for a row lock (the relay's, while Kafka is slow or away) before
/// giving up with "in progress, retry" instead of hanging the request.
pub const LOCK_TIMEOUT: &str = "2s";

/// Whether `e` is a cancel that gave up waiting for a lock ([`LOCK_TIMEOUT`]).
pub fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

pub async fn cancel(conn: &mut PgConnection, notification_id: Uuid) -> sqlx::Result<Cancelled> {
    // Bounded: the relay holds its batch's row locks until Kafka answers (up to the producer's
    // message timeout during an outage).
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *conn)
        .await?;
    let deliveries: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM deliveries WHERE notification_id = $1 ORDER BY id FOR NO KEY UPDATE")
            .bind(notification_id)
            .fetch_all(&mut *conn)
            .await?;
    let open: Vec<String> = deliveries
        .iter()
        .filter(|(_, s)| !Status::parse(s).is_some_and(Status::is_terminal))
        .map(|(id, _)| id.to_string())
        .collect();
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM outbox WHERE published_at IS NULL AND (headers ->> 'delivery-id') = ANY($1)
         RETURNING headers ->> 'delivery-id'",
    )
    .bind(&open)
    .fetch_all(&mut *conn)
    .await?;
    let cancelled: Vec<Uuid> = deleted.iter().filter_map(|id| id.parse().ok()).collect();
    sqlx::query(
        "UPDATE deliveries SET status = $2, reason = 'cancelled_by_caller', next_attempt_at = NULL,
                               updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(&cancelled)
    .bind(Status::Cancelled.as_str())
    .execute(&mut *conn)
    .await?;
    let dispatched = deliveries
        .into_iter()
        .filter(|(id, status)| {
            !cancelled.contains(id)
                && !matches!(
                    Status::parse(status),
                    Some(Status::Suppressed | Status::Cancelled | Status::Expired)
                )
        })
        .collect();
    Ok(Cancelled {
        cancelled,
        dispatched,
    })
}
