//! The transactional outbox and its relay.
//!
//! A service writes its state change and the message that announces it in **one**
//! transaction ([`enqueue`]); nothing is ever published for a transaction that rolled back.
//! The [`Relay`] takes due rows in `FOR UPDATE SKIP LOCKED` batches, hands the whole batch to
//! the idempotent producer, awaits the broker's acknowledgements and only then marks the rows
//! published, in the same transaction that locked them. A crash anywhere leaves unmarked rows
//! that the next batch publishes again (at-least-once; consumers are idempotent).
//!
//! The relay is woken by `LISTEN outbox` (a statement trigger `NOTIFY`s at commit) and polls
//! as a fallback, which also picks up rows whose `available_at` (scheduled retries) comes due.
//! Every database with an outbox has the same table and trigger (`migrations/*/0001_*.up.sql`).

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::{kafka::KafkaConfig, telemetry::RequestContext};

/// The channel the outbox trigger notifies.
pub const NOTIFY_CHANNEL: &str = "outbox";

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Unprefixed topic.
    pub topic: String,
    pub key: String,
    pub payload: serde_json::Value,
    pub headers: BTreeMap<String, String>,
    /// Not published before this time (scheduled sends, retries). `None` = now.
    pub available_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl OutboxMessage {
    /// A message carrying the current request's id and trace context.
    pub fn new(
        topic: impl Into<String>,
        key: impl Into<String>,
        payload: &impl Serialize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            topic: topic.into(),
            key: key.into(),
            payload: serde_json::to_value(payload)?,
            headers: RequestContext::current_or_new().to_headers(),
            available_at: None,
        })
    }

    pub fn header(mut self, key: &str, value: impl ToString) -> Self {
        self.headers.insert(key.to_owned(), value.to_string());
        self
    }

    pub fn available_at(mut self, at: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        self.available_at = at;
        self
    }
}

/// Inserts messages inside the caller's transaction, in one statement.
pub async fn enqueue(conn: &mut PgConnection, messages: &[OutboxMessage]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut topics = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    let mut headers = Vec::with_capacity(messages.len());
    let mut available = Vec::with_capacity(messages.len());
    for m in messages {
        topics.push(m.topic.as_str());
        keys.push(m.key.as_str());
        payloads.push(&m.payload);
        headers.push(serde_json::to_value(&m.headers).unwrap_or_default());
        available.push(m.available_at);
    }
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers, available_at)
         SELECT t, k, p, h, COALESCE(a, now())
         FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[]) AS u(t, k, p, h, a)",
    )
    .bind(&topics)
    .bind(&keys)
    .bind(&payloads)
    .bind(&headers)
    .bind(&available)
    .execute(conn)
    .await?;
    Ok(())
}

/// Relay settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Run the relay in this process.
    pub enabled: bool,
    /// Rows per batch.
    pub batch_size: i64,
    /// Poll fallback when no NOTIFY arrives.
    pub poll_interval_ms: u64,
    /// Published rows are kept this long (for inspection), then deleted.
    pub retention_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 500,
            poll_interval_ms: 500,
            retention_secs: 3600,
        }
    }
}

/// Starts the relay for `pool`'s outbox when `cfg.enabled`; the task ends at `shutdown`.
pub fn spawn_relay(
    pool: &PgPool,
    kafka: &KafkaConfig,
    cfg: &RelayConfig,
    client_id: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let producer = crate::kafka::producer(kafka, client_id)?;
    let relay = Relay::new(pool.clone(), producer, kafka.clone(), cfg.clone());
    Ok(Some(tokio::spawn(relay.run(shutdown.clone()))))
}

/// Publishes committed outbox rows to Kafka.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    kafka: KafkaConfig,
    cfg: RelayConfig,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        producer: FutureProducer,
        kafka: KafkaConfig,
        cfg: RelayConfig,
    ) -> Self {
        Self {
            pool,
            producer,
            kafka,
            cfg,
        }
    }

    /// Publishes one batch of due rows; returns how many were published.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, topic, key, payload::text AS payload, headers
             FROM outbox
             WHERE published_at IS NULL AND available_at <= now()
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(self.cfg.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let topics: Vec<String> = rows.iter().map(|r| self.kafka.topic(&r.topic)).collect();
        // Enqueue the whole batch first (join_all polls every send once), then await the
        // acknowledgements together.
        let sends = rows.iter().zip(&topics).map(|(row, topic)| {
            let record = FutureRecord::to(topic)
                .key(&row.key)
                .payload(&row.payload)
                .headers(crate::kafka::owned_headers(&row.headers.0));
            self.producer.send(record, Duration::from_secs(10))
        });
        let results = futures::future::join_all(sends).await;
        let mut published = Vec::with_capacity(rows.len());
        let (mut partitions, mut offsets) = (Vec::new(), Vec::new());
        let mut failed = Vec::new();
        let mut last_error = None;
        for (row, res) in rows.iter().zip(results) {
            match res {
                Ok(delivery) => {
                    published.push(row.id);
                    partitions.push(delivery.partition);
                    offsets.push(delivery.offset);
                }
                Err((e, _)) => {
                    failed.push(row.id);
                    last_error = Some(e.to_string());
                }
            }
        }
        sqlx::query(
            "UPDATE outbox o
             SET published_at = now(), kafka_partition = u.partition, kafka_offset = u.kafka_offset
             FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS u(id, partition, kafka_offset)
             WHERE o.id = u.id",
        )
        .bind(&published)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;
        if !failed.is_empty() {
            tracing::warn!(failed = failed.len(), error = ?last_error, "outbox rows not acknowledged; will retry");
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)",
            )
            .bind(&failed)
            .bind(&last_error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await.context("marking outbox rows published")?;
        if !failed.is_empty() {
            anyhow::bail!(
                "{} outbox rows were not acknowledged by Kafka",
                failed.len()
            );
        }
        Ok(published.len())
    }

    /// Deletes rows published longer ago than the retention.
    pub async fn purge(&self) -> sqlx::Result<u64> {
        let res = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
                SELECT id FROM outbox
                WHERE published_at < now() - make_interval(secs => $1)
                LIMIT 10000)",
        )
        .bind(self.cfg.retention_secs as f64)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut listener = None;
        let mut backoff = Duration::from_millis(100);
        let mut last_purge = tokio::time::Instant::now();
        tracing::info!("outbox relay started");
        loop {
            if listener.is_none() {
                listener = match PgListener::connect_with(&self.pool).await {
                    Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN failed; polling");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox listener cannot connect; polling");
                        None
                    }
                };
            }
            match self.publish_batch().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as i64 >= self.cfg.batch_size {
                        continue; // more is waiting
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, ?backoff, "outbox relay batch failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if last_purge.elapsed() > Duration::from_secs(60) {
                last_purge = tokio::time::Instant::now();
                if let Err(e) = self.purge().await {
                    tracing::warn!(error = %e, "outbox purge failed");
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                res = notified => if let Err(e) = res {
                    tracing::warn!(error = %e, "outbox listener lost; reconnecting");
                    listener = None;
                },
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("outbox relay stopped");
    }
}
