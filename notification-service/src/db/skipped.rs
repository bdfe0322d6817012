//! Events that can never be handled, recorded and skipped (migration notify 0015).

use api::admin::SkippedEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Where a skipped message was and why it was skipped.
pub struct Skipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub event_type: &'a str,
    pub key: Option<&'a str>,
    /// The message as it came (bounded by the caller).
    pub payload: &'a str,
    pub error: &'a str,
}

/// Records `s` once per Kafka position (a redelivery finds it there).
pub async fn record(conn: &mut PgConnection, s: &Skipped<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO skipped_events (topic, kafka_partition, kafka_offset, event_type, key, payload, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING",
    )
    .bind(s.topic)
    .bind(s.partition)
    .bind(s.offset)
    .bind(s.event_type)
    .bind(s.key)
    .bind(s.payload)
    .bind(s.error)
    .execute(conn)
    .await
    .map(drop)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    event_type: String,
    key: Option<String>,
    payload: String,
    error: String,
    skipped_at: DateTime<Utc>,
}

/// Newest first, after the `(skipped_at, id)` position `before`, at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> sqlx::Result<Vec<SkippedEvent>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, topic, kafka_partition, kafka_offset, event_type, key, payload, error, skipped_at
         FROM skipped_events
         WHERE $1::timestamptz IS NULL OR (skipped_at, id) < ($1, $2)
         ORDER BY skipped_at DESC, id DESC LIMIT $3",
    )
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SkippedEvent {
            id: r.id,
            topic: r.topic,
            partition: r.kafka_partition,
            offset: r.kafka_offset,
            event_type: r.event_type,
            key: r.key,
            payload: r.payload,
            error: r.error,
            skipped_at: r.skipped_at,
        })
        .collect())
}
