//! Delivery receipts: a provider's word that a sent message reached the device or never will.
//! `sent` → `delivered` / `undelivered`; no other status moves (a receipt for a delivery
//! re-driven since, or already settled by a receipt, is kept but changes nothing).
//!
//! Each receipt is stored once per (provider, provider message id, status): the same callback
//! again is [`Receipt::Replayed`]. A receipt can arrive before the `sent` status event that
//! records the provider's message id (the repeater lags, the callback is fast): it is kept
//! unmatched and [`reconcile`] (run by the stuck scan) applies it once the attempt is known.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::Status;

/// What a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The delivery moved to the receipt's status.
    Applied { delivery_id: Uuid },
    /// Kept, but the delivery was not `sent` (re-driven since, or already settled).
    Ignored { delivery_id: Uuid },
    /// No attempt has this message id yet: kept until one does.
    Unmatched,
    /// This receipt was recorded before.
    Replayed,
}

/// Records and applies one receipt. `status` is [`Status::Delivered`] or
/// [`Status::Undelivered`].
pub async fn record(
    conn: &mut PgConnection,
    provider: &str,
    provider_message_id: &str,
    status: Status,
    error_code: Option<&str>,
) -> anyhow::Result<Receipt> {
    anyhow::ensure!(
        matches!(status, Status::Delivered | Status::Undelivered),
        "a receipt says delivered or undelivered, not {}",
        status.as_str()
    );
    let new = sqlx::query(
        "INSERT INTO receipts (provider, provider_message_id, status, error_code)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(provider)
    .bind(provider_message_id)
    .bind(status.as_str())
    .bind(error_code)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if new == 0 {
        return Ok(Receipt::Replayed);
    }
    let delivery: Option<Uuid> = sqlx::query_scalar(
        "SELECT delivery_id FROM attempts WHERE provider = $1 AND provider_message_id = $2
         ORDER BY attempt DESC LIMIT 1",
    )
    .bind(provider)
    .bind(provider_message_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(delivery_id) = delivery else {
        return Ok(Receipt::Unmatched);
    };
    let moved = settle(conn, provider, provider_message_id, status, delivery_id).await?;
    Ok(if moved {
        Receipt::Applied { delivery_id }
    } else {
        Receipt::Ignored { delivery_id }
    })
}

/// Links the receipt to its delivery and moves the delivery if it is `sent`.
async fn settle(
    conn: &mut PgConnection,
    provider: &str,
    provider_message_id: &str,
    status: Status,
    delivery_id: Uuid,
) -> anyhow::Result<bool> {
    sqlx::query(
        "UPDATE receipts SET delivery_id = $4
         WHERE provider = $1 AND provider_message_id = $2 AND status = $3",
    )
    .bind(provider)
    .bind(provider_message_id)
    .bind(status.as_str())
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    let moved = sqlx::query(
        "UPDATE deliveries
         SET status = $2, updated_at = now(),
             delivered_at = CASE WHEN $2 = $4 THEN now() ELSE delivered_at END
         WHERE id = $1 AND status = $3",
    )
    .bind(delivery_id)
    .bind(status.as_str())
    .bind(Status::Sent.as_str())
    .bind(Status::Delivered.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// How long a receipt that arrived before its attempt was recorded is matched: an attempt that
/// has not shown up in a day never will (retention deletes the receipt then).
pub const UNMATCHED_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Applies receipts that arrived before their attempt was recorded (at most `limit`, oldest
/// first, of the last [`UNMATCHED_WINDOW`]: older ones are never looked at again, so an
/// unmatchable receipt is not scanned every round forever); returns how many found their
/// delivery.
pub async fn reconcile(pool: &PgPool, limit: i64) -> anyhow::Result<u64> {
    let unmatched: Vec<(String, String, String, Uuid)> = sqlx::query_as(
        "SELECT r.provider, r.provider_message_id, r.status, a.delivery_id
         FROM receipts r
         JOIN LATERAL (SELECT delivery_id FROM attempts
                       WHERE provider = r.provider AND provider_message_id = r.provider_message_id
                       ORDER BY attempt DESC LIMIT 1) a ON true
         WHERE r.delivery_id IS NULL AND r.received_at > now() - make_interval(secs => $2)
         ORDER BY r.received_at
         LIMIT $1",
    )
    .bind(limit)
    .bind(UNMATCHED_WINDOW.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut matched = 0;
    for (provider, message_id, status, delivery_id) in unmatched {
        let Some(status) = Status::parse(&status) else {
            continue;
        };
        let mut tx = pool.begin().await?;
        settle(&mut tx, &provider, &message_id, status, delivery_id).await?;
        tx.commit().await?;
        matched += 1;
    }
    Ok(matched)
}
