//! The relay: due rows in `FOR UPDATE SKIP LOCKED` batches to the idempotent producer, marked
//! published (or set aside, or retried later) in the transaction that locked them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use rdkafka::{
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use super::{
    NORMAL, NOTIFY_CHANNEL, RelayConfig, RelayMetrics, TopicLabel, URGENT,
    gate::{Gate, GateRow, Verdict},
    purge::Purger,
};
use crate::{kafka::KafkaConfig, metrics::Registry};

/// Publishes committed outbox rows to Kafka.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    kafka: KafkaConfig,
    cfg: RelayConfig,
    metrics: Arc<RelayMetrics>,
    gate: Option<Arc<dyn Gate>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    attempts: i32,
    deferred: bool,
}

/// The relay's batch query, in two parts (with and without a priority filter between them).
macro_rules! due_rows {
    () => {
        "SELECT id, topic, key, payload::text AS payload, headers, attempts,
                available_at > created_at + interval '1 second' AS deferred
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
            gate: None,
        }
    }

    /// Passes every due row through `gate` before publishing it (see [`Gate`]).
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
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
        let rows = match &self.gate {
            Some(gate) => self.admit(gate.as_ref(), &mut tx, rows).await?,
            None => rows,
        };
        if rows.is_empty() {
            tx.commit()
                .await
                .context("committing the gate's decisions")?;
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
        // offset sees the message already in the log (repeater/src/stuck/ relies on it).
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
            if is_permanent(e) {
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
                // Transient (a partition without a leader, a broker timing out) while the rest
                // of the batch went through: this row waits, leaving the head, however long
                // it takes — never set aside (its delivery would end `dead` and fall back to
                // another channel because Kafka hiccupped; an event would be lost for good).
                let delay = Duration::from_millis(self.cfg.row_backoff_ms)
                    .saturating_mul(1 << (row.attempts.clamp(0, 16) as u32))
                    .min(Duration::from_secs(self.cfg.max_row_backoff_secs.max(1)));
                tracing::warn!(row = row.id, topic = %row.topic, error = %error, attempts, ?delay,
                    "outbox row not acknowledged while others were; retrying it later");
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                            first_failed_at = COALESCE(first_failed_at, now()),
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
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                            first_failed_at = COALESCE(first_failed_at, now())
                     WHERE id = $1",
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

    /// The rows `gate` lets through now (with the payload it says), in order; the rest are
    /// deleted or made due later in `tx`.
    async fn admit(
        &self,
        gate: &dyn Gate,
        tx: &mut sqlx::PgConnection,
        rows: Vec<Row>,
    ) -> anyhow::Result<Vec<Row>> {
        let seen: Vec<GateRow> = rows
            .iter()
            .map(|r| GateRow {
                id: r.id,
                topic: r.topic.clone(),
                key: r.key.clone(),
                payload: r.payload.clone(),
                headers: r.headers.0.clone(),
                deferred: r.deferred,
            })
            .collect();
        let verdicts = gate.admit(tx, &seen).await.context("the relay's gate")?;
        anyhow::ensure!(
            verdicts.len() == rows.len(),
            "the gate answered {} verdicts for {} rows",
            verdicts.len(),
            rows.len()
        );
        let (mut pass, mut dropped) = (Vec::with_capacity(rows.len()), Vec::new());
        for (mut row, verdict) in rows.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Publish => pass.push(row),
                Verdict::PublishAs(payload) => {
                    row.payload = payload;
                    pass.push(row);
                }
                Verdict::Drop => dropped.push(row.id),
                Verdict::Defer(after) => {
                    sqlx::query(
                        "UPDATE outbox SET available_at = now() + make_interval(secs => $2)
                         WHERE id = $1",
                    )
                    .bind(row.id)
                    .bind(after.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        if !dropped.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&dropped)
                .execute(&mut *tx)
                .await?;
        }
        Ok(pass)
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
