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
//! * *transient* while other rows of the batch were published — the row's own problem (one
//!   partition without a leader looks exactly like this): it is retried later (`available_at`
//!   moves back, doubling from `row_backoff_ms` up to `max_row_backoff_secs`), so it no longer
//!   sits at the head, and **never** set aside: only Kafka saying "never" does that;
//! * *transient* with nothing published — Kafka is away: the whole relay backs off.
//!
//! How long the oldest unpublished row has been failing is `notify_outbox_oldest_failing_seconds`
//! (alert `NotifyOutboxNotPublishing`).
//!
//! What succeeded in a batch is committed whatever else failed. A set-aside row is never
//! picked again; it is counted (`notify_outbox_rows_failed_total`) and the service that owns
//! the row's meaning turns it into a visible state (the repeater: the delivery ends `dead` with
//! reason `undeliverable`). Published rows are purged after `retention_secs` by a task of its
//! own, in batches, until none is left: the purge keeps up with any publish rate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

pub mod gate;
mod purge;
mod relay;

pub use relay::Relay;

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
    /// Serialised once, when the message is built: no `serde_json::Value` tree per row (the
    /// allocator was ~40 % of notification-service's CPU under load, docs/benchmarks.md).
    pub payload: Box<serde_json::value::RawValue>,
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
            payload: serde_json::value::to_raw_value(payload)?,
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
        payloads.push(m.payload.get());
        headers.push(serde_json::to_string(&m.headers).unwrap_or_default());
        available.push(m.available_at);
        priorities.push(m.priority);
    }
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers, available_at, priority)
         SELECT t, k, p::jsonb, h::jsonb, COALESCE(a, now()), pr
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int2[])
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
    /// The first retry delay of a row whose publish fails transiently while the rest of its
    /// batch goes through (doubling each time). Such a row is retried until Kafka takes it.
    pub row_backoff_ms: u64,
    /// The longest delay between two tries of such a row.
    pub max_row_backoff_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 500,
            poll_interval_ms: 500,
            retention_secs: 3600,
            purge_interval_secs: 10,
            row_backoff_ms: 1_000,
            max_row_backoff_secs: 60,
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
    oldest_failing: Gauge,
}

impl RelayMetrics {
    fn register(&self, registry: &Registry) {
        for topic in crate::events::all_topics() {
            let _ = self.failed.get_or_create(&TopicLabel { topic });
        }
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
            "notify_outbox_oldest_failing_seconds",
            "How long the oldest unpublished outbox row has been failing to publish, in seconds \
             (0: none is failing; refreshed by the purge task)",
            self.oldest_failing.clone(),
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
    spawn_gated_relay(pool, kafka, cfg, client_id, registry, None, shutdown)
}

/// [`spawn_relay`] whose due rows pass `gate` before they are published.
pub fn spawn_gated_relay(
    pool: &PgPool,
    kafka: &KafkaConfig,
    cfg: &RelayConfig,
    client_id: &str,
    registry: Option<&Registry>,
    gate: Option<std::sync::Arc<dyn gate::Gate>>,
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
    if let Some(g) = gate {
        relay = relay.with_gate(g);
    }
    Ok(Some(tokio::spawn(relay.run(shutdown.clone()))))
}
