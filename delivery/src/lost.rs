//! The stuck scan's queries (the repeater's `stuck` module holds the Kafka side and the rules,
//! decision 0012): which open deliveries' dispatch messages a Kafka snapshot shows lost,
//! remembering dispatch positions before outbox rows are purged, dispatches Kafka refused,
//! and the open backlog by status.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{LockedDelivery, Status};

/// The statuses of a delivery still on its way (not terminal), for SQL.
pub fn open_names() -> Vec<&'static str> {
    Status::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .map(Status::as_str)
        .collect()
}

/// Where one partition of a dispatch topic stands for the workers' group that consumes it.
#[derive(Debug, Clone)]
pub struct Position {
    /// Unprefixed topic.
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (next to consume); -1 when it never committed.
    pub committed: i64,
    pub low: i64,
    pub high: i64,
}

/// An open delivery whose current dispatch message was lost.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lost {
    pub id: Uuid,
    /// The attempt whose message was lost.
    pub current_attempt: i32,
    pub why: String,
}

/// Open deliveries whose current dispatch, acknowledged before `before` and more than
/// `visibility_secs` ago, the positions show lost: the group committed past it, or the log no
/// longer holds it. Oldest first, at most `limit`.
pub async fn lost(
    pool: &PgPool,
    positions: &[Position],
    before: DateTime<Utc>,
    visibility_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<Lost>> {
    let p = positions;
    sqlx::query_as(
        "WITH pos AS (
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[])
                 AS p(topic, part, committed, low, high)
         ), dispatched AS (
             SELECT d.id, d.current_attempt, 'notify.dispatch.' || d.channel || '.' || d.lane AS topic,
                    COALESCE(o.kafka_partition, r.part) AS part,
                    COALESCE(o.kafka_offset, r.off) AS off,
                    COALESCE(o.published_at, r.at) AS published_at
             FROM deliveries d
             LEFT JOIN outbox o ON o.headers ->> 'delivery-id' = d.id::text
                               AND o.headers ->> 'attempt' = d.current_attempt::text
                               AND o.published_at IS NOT NULL
             LEFT JOIN LATERAL (
                 SELECT d.dispatch_partition AS part, d.dispatch_offset AS off, d.dispatched_at AS at
                 WHERE d.dispatch_attempt = d.current_attempt
             ) r ON true
             WHERE d.status = ANY($9)
         )
         SELECT x.id, x.current_attempt,
                CASE WHEN x.off >= pos.high THEN 'log shorter than the message''s offset (wiped or replaced cluster)'
                     WHEN x.off < pos.low THEN 'message no longer in the log (retention or deleted)'
                     ELSE 'workers committed past the message without a status' END AS why
         FROM dispatched x
         JOIN pos ON pos.topic = x.topic AND pos.part = x.part
         WHERE x.published_at < $6
           AND x.published_at < now() - make_interval(secs => $7)
           AND (x.off < pos.committed OR x.off < pos.low OR x.off >= pos.high)
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = x.id AND a.attempt = x.current_attempt)
         ORDER BY x.published_at
         LIMIT $8",
    )
    .bind(p.iter().map(|p| p.topic.clone()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.partition).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.committed).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.low).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.high).collect::<Vec<_>>())
    .bind(before)
    .bind(visibility_secs)
    .bind(limit)
    .bind(open_names())
    .fetch_all(pool)
    .await
}

/// Copies the current dispatch's Kafka position onto deliveries still open `after_secs` after
/// it was published, before the outbox row can be purged (5,000 per call).
pub async fn remember_positions(pool: &PgPool, after_secs: f64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deliveries d
         SET dispatch_attempt = d.current_attempt, dispatch_partition = o.kafka_partition,
             dispatch_offset = o.kafka_offset, dispatched_at = o.published_at
         FROM outbox o
         WHERE d.id IN (
                 SELECT d2.id FROM deliveries d2
                 JOIN outbox o2 ON o2.headers ->> 'delivery-id' = d2.id::text
                               AND o2.headers ->> 'attempt' = d2.current_attempt::text
                 WHERE d2.status = ANY($2)
                   AND d2.dispatch_attempt IS DISTINCT FROM d2.current_attempt
                   AND o2.published_at < now() - make_interval(secs => $1)
                 LIMIT 5000)
           AND o.headers ->> 'delivery-id' = d.id::text
           AND o.headers ->> 'attempt' = d.current_attempt::text
           AND o.published_at IS NOT NULL",
    )
    .bind(after_secs)
    .bind(open_names())
    .execute(pool)
    .await?;
    Ok(())
}

/// Which of the locked deliveries have an attempt recorded for their current attempt (a
/// status arrived after all).
pub async fn attempted(
    conn: &mut PgConnection,
    locked: &[LockedDelivery],
) -> sqlx::Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT a.delivery_id FROM attempts a
         JOIN UNNEST($1::uuid[], $2::int[]) AS c(id, attempt)
           ON a.delivery_id = c.id AND a.attempt = c.attempt",
    )
    .bind(locked.iter().map(|d| d.id).collect::<Vec<_>>())
    .bind(locked.iter().map(|d| d.current_attempt).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Open deliveries whose current attempt's outbox row the relay set aside (Kafka refused it):
/// `(delivery, attempt, the relay's error)`, at most `limit`.
pub async fn refused(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<(Uuid, i32, Option<String>)>> {
    sqlx::query_as(
        "SELECT d.id, d.current_attempt, o.last_error
         FROM outbox o
         JOIN deliveries d ON o.headers ->> 'delivery-id' = d.id::text
                          AND o.headers ->> 'attempt' = d.current_attempt::text
         WHERE o.failed_at IS NOT NULL
           AND d.status = ANY($2)
         LIMIT $1",
    )
    .bind(limit)
    .bind(open_names())
    .fetch_all(pool)
    .await
}

/// How many deliveries are in each open status (every open status, zeros included).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<Vec<(Status, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM deliveries WHERE status = ANY($1) GROUP BY status",
    )
    .bind(open_names())
    .fetch_all(pool)
    .await?;
    Ok(Status::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .map(|s| {
            let n = rows
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| *n);
            (s, n)
        })
        .collect())
}
