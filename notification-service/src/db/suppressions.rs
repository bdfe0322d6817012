//! The suppression list and the bounce reports that fill it.

use std::collections::HashMap;

use api::admin::Suppression;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    HardBounce,
    Complaint,
    SoftBounces,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::SoftBounces => "soft_bounces",
        }
    }
}

/// Which of `addresses` on `channel` are suppressed, with the reason's name.
pub async fn lookup(
    conn: &mut PgConnection,
    channel: &str,
    addresses: &[&str],
) -> sqlx::Result<HashMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT address, reason FROM suppressions WHERE channel = $1 AND address = ANY($2)",
    )
    .bind(channel)
    .bind(addresses)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Suppresses `address` (kept as it is when it already is); true when it is new.
pub async fn add(
    conn: &mut PgConnection,
    channel: &str,
    address: &str,
    reason: Reason,
    detail: Option<&str>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO suppressions (id, channel, address, reason, detail) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (channel, address) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(channel)
    .bind(address)
    .bind(reason.as_str())
    .bind(detail)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Counts a soft bounce; returns the count so far.
pub async fn soft_bounce(
    conn: &mut PgConnection,
    channel: &str,
    address: &str,
) -> sqlx::Result<i32> {
    sqlx::query_scalar(
        "INSERT INTO soft_bounces (channel, address, count) VALUES ($1, $2, 1)
         ON CONFLICT (channel, address)
         DO UPDATE SET count = soft_bounces.count + 1, last_at = now()
         RETURNING count",
    )
    .bind(channel)
    .bind(address)
    .fetch_one(conn)
    .await
}

/// Records a report's id; false when it was taken before (a replay).
pub async fn first_report(conn: &mut PgConnection, id: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query("INSERT INTO bounce_reports (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    channel: String,
    address: String,
    reason: String,
    detail: Option<String>,
    created_at: DateTime<Utc>,
}

/// Suppressions, newest first, optionally of one channel or address, after `cursor`.
pub async fn list(
    conn: &mut PgConnection,
    channel: Option<&str>,
    address: Option<&str>,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Suppression>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, channel, address, reason, detail, created_at FROM suppressions
         WHERE ($1::text IS NULL OR channel = $1) AND ($2::text IS NULL OR address = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(channel)
    .bind(address)
    .bind(cursor.map(|c| c.0))
    .bind(cursor.map(|c| c.1))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Suppression {
            id: r.id,
            channel: r.channel,
            address: r.address,
            reason: r.reason,
            detail: r.detail,
            created_at: r.created_at,
        })
        .collect())
}

/// Removes a suppression (and the address's soft-bounce count); false when there was none.
pub async fn remove(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let removed: Option<(String, String)> =
        sqlx::query_as("DELETE FROM suppressions WHERE id = $1 RETURNING channel, address")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((channel, address)) = removed else {
        return Ok(false);
    };
    sqlx::query("DELETE FROM soft_bounces WHERE channel = $1 AND address = $2")
        .bind(channel)
        .bind(address)
        .execute(conn)
        .await?;
    Ok(true)
}
