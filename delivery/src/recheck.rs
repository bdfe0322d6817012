//! What the re-check before an attempt may change (decision 0026): a delivery ends `suppressed`
//! because the world changed since it was planned (an opt-out, a bounce, a removed device), or
//! goes to the user's current address.
//!
//! Called from the outbox relay's gate, which holds the row locks of the batch it publishes. A
//! cancel takes the other order (deliveries, then their outbox rows), so these functions never
//! wait for a delivery's lock: `SKIP LOCKED`, and the caller defers the row ([`Applied::Busy`]).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::Status;

/// What became of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Done.
    Done,
    /// The delivery has moved on (another attempt, or finished): nothing changed.
    Stale,
    /// Someone else holds it right now (a cancel, a status event): try again shortly.
    Busy,
}

/// The delivery's status and current attempt, locked — or `None` when another transaction
/// holds it (or it does not exist: then [`Applied::Stale`] via `exists`).
async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<(String, i32)>> {
    sqlx::query_as(
        "SELECT status, current_attempt FROM deliveries WHERE id = $1
         FOR NO KEY UPDATE SKIP LOCKED",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}

async fn locked_open_at(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
) -> sqlx::Result<Result<(), Applied>> {
    let Some((status, current)) = lock(conn, id).await? else {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deliveries WHERE id = $1)")
                .bind(id)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(Err(if exists {
            Applied::Busy
        } else {
            Applied::Stale
        }));
    };
    let open = Status::parse(&status).is_some_and(|s| !s.is_terminal());
    Ok(if open && current == attempt {
        Ok(())
    } else {
        Err(Applied::Stale)
    })
}

/// Ends delivery `id` `suppressed` with `reason` instead of sending its attempt `attempt`,
/// if it is still open at that attempt.
pub async fn suppress(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    reason: &str,
) -> sqlx::Result<Applied> {
    if let Err(why) = locked_open_at(conn, id, attempt).await? {
        return Ok(why);
    }
    sqlx::query(
        "UPDATE deliveries SET status = $2, reason = $3, next_attempt_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(Status::Suppressed.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(Applied::Done)
}

/// Delivery `id`'s attempt `attempt` goes to `address` (the user's current contact for its
/// channel), if it is still open at that attempt.
pub async fn readdress(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    address: &str,
) -> sqlx::Result<Applied> {
    if let Err(why) = locked_open_at(conn, id, attempt).await? {
        return Ok(why);
    }
    sqlx::query("UPDATE deliveries SET address = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(address)
        .execute(&mut *conn)
        .await?;
    Ok(Applied::Done)
}
