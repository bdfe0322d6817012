//! Fan-outs of sends to topics: the row written with the notification, the split, each
//! chunk's claim and progress, cancel, and what a view shows.
//!
//! A chunk is written exactly once: its row in `fanout_chunks` is inserted in the transaction
//! that writes its deliveries (a second handling of the same chunk finds it and writes
//! nothing), and the fan-out's progress is added last in that transaction, only while the
//! fan-out is still `planning` — a cancel that commits first makes the chunk roll back; one
//! that commits after waits for the chunk and then cancels its deliveries too.

use api::notifications::FanoutView;
use chrono::{DateTime, Utc};
use common::events::{Channel, Content};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::planned::NewFanout;

/// The state of a cancelled fan-out.
pub const CANCELLED: &str = "cancelled";

/// Writes the fan-out rows of new notifications (`splitting`).
pub async fn insert(conn: &mut PgConnection, fanouts: &[(Uuid, &NewFanout)]) -> sqlx::Result<()> {
    for (id, f) in fanouts {
        let channels: Option<Vec<&str>> = f
            .channels
            .as_ref()
            .map(|cs| cs.iter().map(|c| c.as_str()).collect());
        sqlx::query(
            "INSERT INTO fanouts (notification_id, topic, channels, exclude, as_of, state)
             VALUES ($1, $2, $3, $4, $5, 'splitting')",
        )
        .bind(id)
        .bind(&f.topic)
        .bind(channels)
        .bind(&f.exclude)
        .bind(f.as_of)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A fan-out as its steps read it.
#[derive(Debug, sqlx::FromRow)]
pub struct Fanout {
    pub topic: String,
    pub channels: Option<Vec<String>>,
    pub exclude: Vec<Uuid>,
    pub as_of: DateTime<Utc>,
    pub state: String,
    pub chunks: Option<i32>,
}

impl Fanout {
    /// The send's channels, typed (unknown names — never written — are dropped).
    pub fn channels(&self) -> Option<Vec<Channel>> {
        self.channels
            .as_ref()
            .map(|cs| cs.iter().filter_map(|c| Channel::parse(c)).collect())
    }
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Fanout>> {
    sqlx::query_as(
        "SELECT topic, channels, exclude, as_of, state, chunks FROM fanouts
         WHERE notification_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}

/// Records the split (`total` subscribers in `chunks` chunks) and moves the fan-out to
/// `planning` (`done` when there is nothing to plan); false when it was split before or
/// cancelled meanwhile (then the caller writes nothing).
pub async fn split(
    conn: &mut PgConnection,
    id: Uuid,
    total: i64,
    chunks: i32,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE fanouts SET total = $2, chunks = $3, updated_at = now(),
                state = CASE WHEN $3 = 0 THEN 'done' ELSE 'planning' END
         WHERE notification_id = $1 AND state = 'splitting'",
    )
    .bind(id)
    .bind(total)
    .bind(chunks)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// What a chunk is planned from: its notification as accepted.
#[derive(Debug, sqlx::FromRow)]
pub struct ChunkSource {
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub category: String,
    pub priority: String,
    pub content: sqlx::types::Json<Content>,
    pub localized: Option<sqlx::types::Json<std::collections::BTreeMap<String, Content>>>,
    pub template: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<i32>,
    pub fallback: Option<sqlx::types::Json<Vec<Channel>>>,
    pub digest: Option<sqlx::types::Json<crate::request::DigestSpec>>,
    pub cap: Option<sqlx::types::Json<crate::request::Cap>>,
    /// This chunk was written before.
    pub done: bool,
}

pub async fn chunk_source(
    conn: &mut PgConnection,
    id: Uuid,
    chunk: i32,
) -> sqlx::Result<Option<ChunkSource>> {
    sqlx::query_as(
        "SELECT n.created_by, n.created_at, n.category, n.priority, n.content, n.localized,
                n.template, n.send_at, n.ttl_seconds, n.fallback, n.digest, n.cap,
                EXISTS (SELECT 1 FROM fanout_chunks c
                        WHERE c.notification_id = n.id AND c.chunk = $2) AS done
         FROM notifications n WHERE n.id = $1",
    )
    .bind(id)
    .bind(chunk)
    .fetch_optional(&mut *conn)
    .await
}

/// Claims chunk `chunk` for this transaction; false when it was written before (nothing may
/// be written then). A concurrent claim of the same chunk waits for this one's outcome.
pub async fn claim_chunk(
    conn: &mut PgConnection,
    id: Uuid,
    chunk: i32,
    subscribers: usize,
    deliveries: usize,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO fanout_chunks (notification_id, chunk, subscribers, deliveries)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(chunk)
    .bind(subscribers as i32)
    .bind(deliveries as i32)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Adds a written chunk's subscribers to the fan-out's progress (`done` after the last
/// chunk); false when the fan-out is no longer `planning` (cancelled): roll back then. Call
/// last in the chunk's transaction: it locks the fan-out's row until the commit.
pub async fn chunk_planned(
    conn: &mut PgConnection,
    id: Uuid,
    subscribers: usize,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE fanouts SET planned = planned + $2, chunks_done = chunks_done + 1,
                state = CASE WHEN chunks_done + 1 >= chunks THEN 'done' ELSE state END,
                updated_at = now()
         WHERE notification_id = $1 AND state = 'planning'",
    )
    .bind(id)
    .bind(subscribers as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Stops the notification's fan-out if it is still running (the cancel of a send to a
/// topic). Call before cancelling its deliveries, in the same transaction: a chunk being
/// written meanwhile commits first, so its deliveries are cancelled too.
pub async fn cancel(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE fanouts SET state = $2, updated_at = now()
         WHERE notification_id = $1 AND state IN ('splitting', 'planning')",
    )
    .bind(id)
    // A fan-out's state, bound (not a delivery status: `delivery/tests/ownership.rs` keeps
    // those as SQL literals in the delivery crate only).
    .bind(CANCELLED)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The fan-out of a notification, as its view shows it.
pub async fn view(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<FanoutView>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        topic: String,
        state: String,
        total: Option<i64>,
        planned: i64,
        chunks: Option<i32>,
        chunks_done: i32,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT topic, state, total, planned, chunks, chunks_done FROM fanouts
         WHERE notification_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| FanoutView {
        topic: r.topic,
        state: r.state,
        total: r.total,
        planned: r.planned,
        chunks: r.chunks,
        chunks_done: r.chunks_done,
    }))
}
