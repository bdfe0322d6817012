//! The transactional outbox and its relay.
//!
//! A service writes its state change and the message that announces it in **one**
//! transaction ([`enqueue`]); nothing is ever published for a transaction that rolled back.
//! The [`Relay`] takes due rows in `FOR UPDATE SKIP LOCKED` batches, urgent rows first
//! ([`OutboxMessage::urgent`]: a bulk backlog never delays the urgent lane here), hands the whole batch to
//! the idempotent producer, awaits the broker's acknowledgements and only then marks the rows
//! published, in the same transaction that locked them. A crash anywhere leaves unmarked rows
//! that the next batch publishes again (at-least-once; consumers are idempotent).
//!
//! The relay is woken by `LISTEN outbox` (a statement trigger `NOTIFY`s at commit) and polls
//! as a fallback, which also picks up rows whose `available_at` (scheduled retries) comes due.
//! Every database with an outbox has the same table and trigger (`migrations/*/0001_*.up.sql`).
//!
//! **No row can stall the rest** (decision 0014). Each row's publish error is classified:
//!
//! * *permanent* — Kafka will never take this record (over the message size, an invalid
//!   record, an invalid topic): the row is set aside at once (`failed_at`);
//! * *transient* while other rows of the batch were published — the row's own problem: it is
//!   retried later (`available_at` moves back, doubling from `row_backoff_ms`), so it no longer
//!   sits at the head, and set aside after `max_row_attempts`;
//! * *transient* with nothing published — Kafka is away: the whole relay backs off.
//!
//! What succeeded in a batch is committed whatever else failed. A set-aside row is never
//! picked again; it is counted (`notify_outbox_rows_failed_total`) and the service that owns
//! the row's meaning turns it into a visible state (the repeater: the delivery ends `dead` with
//! reason `undeliverable`). Published rows are purged after `retention_secs` by a task of its
//! own, in batches, until none is left: the purge keeps up with any publish rate.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use rdkafka::{
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::{
    kafka::KafkaConfig,
    metrics::{Counter, EncodeLabelSet, Family, Gauge, Registry},
    telemetry::RequestContext,
};

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
    /// [`URGENT`] rows are published before every [`NORMAL`] one that is due.
    pub priority: i16,
}

/// The relay publishes due rows by (priority, id): these first …
pub const URGENT: i16 = 0;
/// … then these (the default).
pub const NORMAL: i16 = 1;

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
            priority: NORMAL,
        })
    }

    /// Published ahead of every normal row (the urgent lane's dispatches).
    pub fn urgent(mut self, urgent: bool) -> Self {
        self.priority = if urgent { URGENT } else { NORMAL };
        self
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
    let mut priorities = Vec::with_capacity(messages.len());
    for m in messages {
        topics.push(m.topic.as_str());
        keys.push(m.key.as_str());
        payloads.push(&m.payload);
        headers.push(serde_json::to_value(&m.headers).unwrap_or_default());
        available.push(m.available_at);
        priorities.push(m.priority);
    }
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers, available_at, priority)
         SELECT t, k, p, h, COALESCE(a, now()), pr
         FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[], $6::int2[])
              AS u(t, k, p, h, a, pr)",
    )
    .bind(&topics)
    .bind(&keys)
    .bind(&payloads)
    .bind(&headers)
    .bind(&available)
    .bind(&priorities)
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
    /// Published (and set-aside) rows are kept this long (for inspection), then deleted.
    pub retention_secs: u64,
    /// How often the purge runs; each run deletes in batches until nothing old is left.
    pub purge_interval_secs: u64,
    /// A row whose publish fails while the rest of its batch goes through is tried this many
    /// times, then set aside (`failed_at`).
    pub max_row_attempts: i32,
    /// The first retry delay of such a row (doubling, at most 5 min).
    pub row_backoff_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 500,
            poll_interval_ms: 500,
            retention_secs: 3600,
            purge_interval_secs: 10,
            max_row_attempts: 5,
            row_backoff_ms: 1_000,
        }
    }
}

/// Rows deleted per purge statement (each statement is short; a run loops until done).
const PURGE_BATCH: i64 = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

/// The relay's metric families.
#[derive(Default)]
struct RelayMetrics {
    published: Counter,
    failed: Family<TopicLabel, Counter>,
    retried: Counter,
    purged: Counter,
    due: Gauge,
}

impl RelayMetrics {
    fn register(&self, registry: &Registry) {
        registry.register(
            "notify_outbox_published",
            "Outbox rows published to Kafka",
            self.published.clone(),
        );
        registry.register(
            "notify_outbox_rows_failed",
            "Outbox rows Kafka will not accept, set aside (failed_at), by topic",
            self.failed.clone(),
        );
        registry.register(
            "notify_outbox_row_retries",
            "Outbox rows whose publish failed while the rest of their batch went through, retried later",
            self.retried.clone(),
        );
        registry.register(
            "notify_outbox_purged",
            "Published or set-aside outbox rows deleted after the retention",
            self.purged.clone(),
        );
        registry.register(
            "notify_outbox_due_rows",
            "Outbox rows due and not yet published (refreshed by the purge task)",
            self.due.clone(),
        );
    }
}

/// Starts the relay (and its purge task) for `pool`'s outbox when `cfg.enabled`, counting into
/// `registry`; the task ends at `shutdown`.
pub fn spawn_relay(
    pool: &PgPool,
    kafka: &KafkaConfig,
    cfg: &RelayConfig,
    client_id: &str,
    registry: Option<&Registry>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let producer = crate::kafka::producer(kafka, client_id)?;
    let mut relay = Relay::new(pool.clone(), producer, kafka.clone(), cfg.clone());
    if let Some(r) = registry {
        relay = relay.with_metrics(r);
    }
    Ok(Some(tokio::spawn(relay.run(shutdown.clone()))))
}

/// Publishes committed outbox rows to Kafka.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    kafka: KafkaConfig,
    cfg: RelayConfig,
    metrics: Arc<RelayMetrics>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    attempts: i32,
}

/// The relay's batch query, in two parts (with and without a priority filter between them).
macro_rules! due_rows {
    () => {
        "SELECT id, topic, key, payload::text AS payload, headers, attempts
         FROM outbox
         WHERE published_at IS NULL AND failed_at IS NULL AND available_at <= now()"
    };
}
macro_rules! take_batch {
    () => {
        " ORDER BY priority, id LIMIT $1 FOR UPDATE SKIP LOCKED"
    };
}

/// Whether Kafka will never accept this record, whatever happens to the cluster.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidArgument
                | RDKafkaErrorCode::BadMessage
        )
    )
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
            metrics: Arc::default(),
        }
    }

    /// Counts into `registry` (the service's `/metrics`).
    pub fn with_metrics(self, registry: &Registry) -> Self {
        self.metrics.register(registry);
        self
    }

    /// Publishes one batch of due rows; returns how many were published. A row Kafka refuses
    /// is set aside or rescheduled (see the module docs) and the rest is committed; the result
    /// is an error only when rows failed and none was published — Kafka is away.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        self.publish_batch_of(None).await
    }

    /// [`publish_batch`](Self::publish_batch) of the rows of one priority (`None`: any, urgent
    /// first).
    pub async fn publish_batch_of(&self, priority: Option<i16>) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        // Two statements rather than `$2 IS NULL OR …`: each gets a plan that walks the
        // (priority, id) index of due rows.
        let rows: Vec<Row> = match priority {
            Some(p) => {
                sqlx::query_as(concat!(due_rows!(), " AND priority = $2", take_batch!()))
                    .bind(self.cfg.batch_size)
                    .bind(p)
                    .fetch_all(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query_as(concat!(due_rows!(), take_batch!()))
                    .bind(self.cfg.batch_size)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
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
        for (row, res) in rows.iter().zip(results) {
            match res {
                Ok(delivery) => {
                    published.push(row.id);
                    partitions.push(delivery.partition);
                    offsets.push(delivery.offset);
                }
                Err((e, _)) => failed.push((row, e)),
            }
        }
        // `clock_timestamp()`, not the transaction's start: the acknowledgement came before
        // this instant, so a reader comparing Kafka positions read after it with this row's
        // offset sees the message already in the log (repeater/src/stuck.rs relies on it).
        sqlx::query(
            "UPDATE outbox o
             SET published_at = clock_timestamp(), kafka_partition = u.partition, kafka_offset = u.kafka_offset
             FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS u(id, partition, kafka_offset)
             WHERE o.id = u.id",
        )
        .bind(&published)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;

        // Kafka answered for some rows: a failure is that row's own problem.
        let healthy = !published.is_empty();
        let (mut set_aside, mut outage) = (Vec::new(), 0usize);
        let mut last_error = None;
        for (row, e) in &failed {
            let error = e.to_string();
            let attempts = row.attempts + 1;
            if is_permanent(e) || (healthy && attempts >= self.cfg.max_row_attempts) {
                tracing::error!(row = row.id, topic = %row.topic, error = %error, attempts,
                    "Kafka will not accept this outbox row; it is set aside");
                sqlx::query(
                    "UPDATE outbox SET failed_at = now(), attempts = attempts + 1, last_error = $2
                     WHERE id = $1",
                )
                .bind(row.id)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
                set_aside.push(row.topic.clone());
            } else if healthy {
                let delay = Duration::from_millis(self.cfg.row_backoff_ms)
                    .saturating_mul(1 << (row.attempts.clamp(0, 16) as u32))
                    .min(Duration::from_secs(300));
                tracing::warn!(row = row.id, topic = %row.topic, error = %error, attempts, ?delay,
                    "outbox row not acknowledged while others were; retrying it later");
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                            available_at = now() + make_interval(secs => $3)
                     WHERE id = $1",
                )
                .bind(row.id)
                .bind(&error)
                .bind(delay.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                self.metrics.retried.inc();
            } else {
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                )
                .bind(row.id)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
                outage += 1;
                last_error = Some(error);
            }
        }
        tx.commit().await.context("marking outbox rows published")?;
        self.metrics.published.inc_by(published.len() as u64);
        for topic in set_aside {
            self.metrics
                .failed
                .get_or_create(&TopicLabel { topic })
                .inc();
        }
        if outage > 0 {
            anyhow::bail!(
                "{outage} outbox rows were not acknowledged by Kafka: {}",
                last_error.unwrap_or_default()
            );
        }
        Ok(published.len())
    }

    /// Deletes rows published (or set aside) longer ago than the retention, in batches until
    /// none is left; returns how many.
    pub async fn purge(&self) -> sqlx::Result<u64> {
        self.purger().purge().await
    }

    fn purger(&self) -> Purger {
        Purger {
            pool: self.pool.clone(),
            cfg: self.cfg.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Runs until `shutdown`: one publishing loop per priority, so an urgent row never waits
    /// for the acknowledgements of a bulk batch (only for its own loop's batch in flight).
    pub async fn run(self, shutdown: CancellationToken) {
        let purging = tokio::spawn(self.purger().run(shutdown.clone()));
        tracing::info!("outbox relay started");
        let me = Arc::new(self);
        let urgent = tokio::spawn({
            let (me, shutdown) = (me.clone(), shutdown.clone());
            async move { me.run_priority(URGENT, shutdown).await }
        });
        me.run_priority(NORMAL, shutdown).await;
        let _ = urgent.await;
        let _ = purging.await;
        tracing::info!("outbox relay stopped");
    }

    async fn run_priority(&self, priority: i16, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut listener = None;
        let mut backoff = Duration::from_millis(100);
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
            match self.publish_batch_of(Some(priority)).await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as i64 >= self.cfg.batch_size {
                        continue; // more is waiting
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, ?backoff, priority, "outbox relay batch failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
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
    }
}

/// The purge task: old published and set-aside rows, and the due-rows gauge.
struct Purger {
    pool: PgPool,
    cfg: RelayConfig,
    metrics: Arc<RelayMetrics>,
}

impl Purger {
    async fn purge(&self) -> sqlx::Result<u64> {
        let mut total = 0;
        loop {
            let res = sqlx::query(
                "DELETE FROM outbox WHERE id IN (
                    SELECT id FROM outbox
                    WHERE published_at < now() - make_interval(secs => $1)
                       OR failed_at < now() - make_interval(secs => $1)
                    LIMIT $2)",
            )
            .bind(self.cfg.retention_secs as f64)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await?;
            total += res.rows_affected();
            self.metrics.purged.inc_by(res.rows_affected());
            if (res.rows_affected() as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Rows due and unpublished (not set aside).
    async fn due_rows(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM outbox
             WHERE published_at IS NULL AND failed_at IS NULL AND available_at <= now()",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Every `purge_interval_secs` until `shutdown`.
    async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.cfg.purge_interval_secs.max(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.purge().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "outbox rows purged"),
                Err(e) => tracing::warn!(error = %e, "outbox purge failed"),
            }
            match self.due_rows().await {
                Ok(n) => {
                    self.metrics.due.set(n);
                }
                Err(e) => tracing::warn!(error = %e, "counting due outbox rows failed"),
            }
        }
    }
}
