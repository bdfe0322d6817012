//! Idempotency keys in Postgres, the source of truth.
//!
//! A request claims `(caller, key)` in its own committed statement — the primary key lets only
//! one of many concurrent requests win — and completes the claim in the same transaction that
//! writes the notification, storing the response. A request that fails releases its claim so
//! the caller can retry; a claim abandoned by a crash is taken over after `intake.abandoned_claim_secs` (a minute).

use sqlx::PgPool;
use uuid::Uuid;

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// This request owns the key now.
    New,
    /// The key was used for a different body.
    Mismatch,
    /// Another request with this key is still being handled.
    InFlight,
    /// The key's request completed: its response.
    Replay(serde_json::Value),
}

/// Claims `(caller, key)` for a request with body hash `hash`; a claim still "in flight"
/// after `abandoned_after_secs` (`intake.abandoned_claim_secs`) is taken over.
pub async fn claim(
    pool: &PgPool,
    caller: &str,
    key: &str,
    hash: &str,
    abandoned_after_secs: f64,
) -> sqlx::Result<Claim> {
    // Keys older than 24 h are forgotten.
    sqlx::query("DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND created_at < now() - interval '24 hours'")
        .bind(caller)
        .bind(key)
        .execute(pool)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (caller, key, request_hash, state) VALUES ($1, $2, $3, 'in_flight')
         ON CONFLICT (caller, key) DO NOTHING",
    )
    .bind(caller)
    .bind(key)
    .bind(hash)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row: Option<(String, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT request_hash, state, response FROM idempotency_keys WHERE caller = $1 AND key = $2",
    )
    .bind(caller)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        // Released between our insert and select: let the caller retry.
        None => Claim::InFlight,
        Some((h, _, _)) if h != hash => Claim::Mismatch,
        Some((_, state, Some(response))) if state == "done" => Claim::Replay(response),
        Some(_) => {
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET created_at = now()
                 WHERE caller = $1 AND key = $2 AND state = 'in_flight'
                   AND created_at < now() - make_interval(secs => $3)",
            )
            .bind(caller)
            .bind(key)
            .bind(abandoned_after_secs)
            .execute(pool)
            .await?
            .rows_affected();
            if taken == 1 {
                Claim::New
            } else {
                Claim::InFlight
            }
        }
    })
}

/// Completes claims inside the transaction that wrote their notifications, in one statement
/// however many (group commit, `crate::intake`): (caller, key, notification id, response).
pub async fn complete(
    conn: &mut sqlx::PgConnection,
    items: &[(&str, &str, Uuid, &serde_json::Value)],
) -> sqlx::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE idempotency_keys k SET state = 'done', notification_id = u.id, response = u.response
         FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::jsonb[]) AS u(caller, key, id, response)
         WHERE k.caller = u.caller AND k.key = u.key",
    )
    .bind(items.iter().map(|i| i.0).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.1).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.2).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.3).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives a claim back after the request failed, so a retry can proceed.
pub async fn release(pool: &PgPool, caller: &str, key: &str) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND state = 'in_flight'",
    )
    .bind(caller)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes keys older than 24 h, in batches; returns how many.
pub async fn purge_expired(pool: &PgPool) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (caller, key) IN (
                 SELECT caller, key FROM idempotency_keys
                 WHERE created_at < now() - interval '24 hours' LIMIT 5000)",
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}
