//! The stuck-delivery scan: re-drives deliveries whose dispatch message was **lost** — never
//! ones still waiting in a backlog (docs/decisions/0012-stuck-scan.md).
//!
//! "No status for two minutes" is also true of every message in a bulk backlog, and
//! re-driving those would send twice (the re-drive has a new dedupe key while the original is
//! still on its way). So the scan asks Kafka where each published dispatch message stands.
//! The relay recorded its partition and offset; a message with no status is lost when
//!
//! * the workers' group has committed past it (handled or skipped, yet no status arrived), or
//! * the log no longer holds it: the low watermark moved past it (retention, deleted records)
//!   or the high watermark is at or below it (a wiped or replaced cluster).
//!
//! Otherwise the workers have not reached it yet: backlog, left alone.
//!
//! Each rule needs the repeater to have applied every status event that existed when the
//! positions were read (a worker commits a message only after its status event was acked, so
//! that status is below the status log's end at that moment). The scan therefore keeps
//! **snapshots**: each round reads the workers' positions and then the end of `notify.status`;
//! it judges with the newest snapshot whose status-log end the repeater has since committed —
//! usually the previous round's. Continuous traffic (the repeater always slightly behind) no
//! longer stops recovery; only a repeater that stays behind does (decision 0015).
//!
//! A dispatch is judged only if its acknowledgement (`published_at`, stamped after the ack)
//! precedes the snapshot. Its position is read from the outbox row, or — once the row was
//! purged — from the delivery, where each round copies it for deliveries still open after
//! `remember_after_secs`. Published `pending` deliveries (scheduled, quiet hours) count too.
//! While a round finds full batches of lost deliveries it keeps going (bounded in time), so a
//! wiped cluster's backlog is re-driven at the rate the platform sends, not one batch a round.
//!
//! One instance scans at a time (`pg_try_advisory_lock`); the re-drive itself locks the
//! delivery row and re-checks it, so even two scans could not re-drive one delivery twice.
//!
//! Each round also settles dispatches Kafka refused: a delivery whose current attempt's outbox
//! row the relay set aside (`failed_at`: over the message size, an invalid record) can never be
//! sent as it is, so it ends `dead` with reason `undeliverable` and the relay's error — visible
//! in the dead letters, re-drivable once the cause is fixed, and handed to channel fallback.

mod kafka;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::{
    events::{REPEATER_GROUP, STATUS_TOPIC},
    kafka::KafkaConfig,
};
use delivery::{
    LockedDelivery, RedriveKind,
    lost::{Lost, Position},
};
use rdkafka::consumer::BaseConsumer;
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::{self, Metrics};

/// The advisory lock key of the scan (any constant unique within database `notify`).
const LOCK_KEY: i64 = 0x6e6f_7469_6679_0001;

/// Stuck-scan settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StuckConfig {
    pub enabled: bool,
    /// Seconds between scans.
    pub interval_secs: f64,
    /// A published dispatch message with no status for this long is looked at.
    pub visibility_timeout_secs: f64,
    /// Deliveries re-driven per query; a round repeats while a query fills it (up to
    /// `round_budget_secs`).
    pub batch_size: i64,
    /// How long one round may keep re-driving before it lets another instance have a go.
    pub round_budget_secs: f64,
    /// An open delivery whose dispatch was published this long ago gets the dispatch's Kafka
    /// position copied onto it, so it can still be judged after its outbox row is purged. Must
    /// be shorter than notification-service's `relay.retention_secs` (1 h by default).
    pub remember_after_secs: f64,
}

impl Default for StuckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 30.0,
            visibility_timeout_secs: 120.0,
            batch_size: 500,
            round_budget_secs: 20.0,
            remember_after_secs: 600.0,
        }
    }
}

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Another instance holds the lock.
    pub skipped_locked: bool,
    /// The repeater has not applied every status event yet; nothing was judged.
    pub skipped_lagging: bool,
    pub redriven: Vec<Uuid>,
    pub expired: Vec<Uuid>,
    /// Deliveries whose dispatch Kafka refused, now `dead` (`undeliverable`).
    pub undeliverable: Vec<Uuid>,
    /// Delivery receipts that arrived before their attempt was recorded, applied now.
    pub receipts_matched: u64,
}

/// What one round read of Kafka: the workers' positions, then the end of `notify.status`.
#[derive(Debug, Clone)]
struct Snapshot {
    /// The database's clock just before the positions were read.
    db_time: chrono::DateTime<chrono::Utc>,
    dispatch: Vec<Position>,
    /// The high watermark of each `notify.status` partition.
    status_end: HashMap<i32, i64>,
}

/// Snapshots kept while waiting for the repeater to catch up (a round every
/// `interval_secs`: with the default 30 s, about ten minutes).
const SNAPSHOTS: usize = 20;

pub struct StuckScan {
    pool: PgPool,
    kafka: KafkaConfig,
    cfg: StuckConfig,
    metrics: Arc<Metrics>,
    /// One never-subscribed consumer per group, to read that group's committed offsets.
    consumers: std::sync::Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// Snapshots not judged with yet, oldest first.
    snapshots: std::sync::Mutex<std::collections::VecDeque<Snapshot>>,
}

impl StuckScan {
    pub fn new(pool: PgPool, kafka: KafkaConfig, cfg: StuckConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            kafka,
            cfg,
            metrics,
            consumers: Default::default(),
            snapshots: Default::default(),
        }
    }

    /// Scans every `interval_secs` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = Duration::from_secs_f64(self.cfg.interval_secs.max(0.05));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            // A scan waits on Kafka (seconds when brokers are slow): shutdown does not. The
            // connection holding the scan's advisory lock closes with the pool at exit.
            let scanned = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.scan() => r,
            };
            match scanned {
                Ok(r)
                    if !r.redriven.is_empty()
                        || !r.expired.is_empty()
                        || !r.undeliverable.is_empty() =>
                {
                    tracing::warn!(
                        redriven = r.redriven.len(),
                        expired = r.expired.len(),
                        undeliverable = r.undeliverable.len(),
                        "stuck scan settled lost or refused deliveries"
                    );
                }
                Ok(r) if r.skipped_lagging => {
                    tracing::info!("stuck scan skipped: the repeater lags on notify.status");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "stuck scan failed"),
            }
        }
    }

    /// One scan, if no other instance is running one.
    pub async fn scan(&self) -> anyhow::Result<ScanReport> {
        let mut lock_conn = self.pool.acquire().await?;
        if !common::db::try_advisory_lock(&mut lock_conn, LOCK_KEY).await? {
            return Ok(ScanReport {
                skipped_locked: true,
                ..ScanReport::default()
            });
        }
        let result = self.scan_locked().await;
        // A session lock: release it before the connection goes back to the pool (if this
        // fails the connection is closed instead, which releases it too).
        if common::db::advisory_unlock(&mut lock_conn, LOCK_KEY)
            .await
            .is_err()
        {
            lock_conn.detach();
        }
        result
    }

    async fn scan_locked(&self) -> anyhow::Result<ScanReport> {
        let mut report = ScanReport::default();
        self.settle_refused(&mut report).await?;
        // Receipts that came before their `sent` status event was applied.
        report.receipts_matched =
            delivery::receipts::reconcile(&self.pool, self.cfg.batch_size).await?;
        self.refresh_backlog().await?;
        self.remember_positions().await?;

        // Order matters: the database's clock, the workers' positions, then the status log's
        // end, then the repeater's progress on it.
        let db_time = common::db::clock(&self.pool).await?;
        let dispatch = self.dispatch_positions().await?;
        let status = self
            .positions(REPEATER_GROUP, vec![STATUS_TOPIC.to_owned()])
            .await?;
        // Both lag gauges are set together, with no wait between them, status first: a reader
        // who sees a scan's dispatch lag sees its status lag too.
        for p in &status {
            let lag = (p.high - p.committed.max(p.low)).max(0);
            self.metrics
                .status_lag
                .get_or_create(&metrics::PartitionLabel {
                    partition: p.partition,
                })
                .set(lag);
        }
        let mut dispatch_lag: HashMap<&str, i64> = HashMap::new();
        for p in &dispatch {
            *dispatch_lag.entry(p.topic.as_str()).or_default() +=
                (p.high - p.committed.max(p.low)).max(0);
        }
        for (topic, lag) in dispatch_lag {
            self.metrics
                .dispatch_lag
                .get_or_create(&metrics::TopicLabel {
                    topic: topic.to_owned(),
                })
                .set(lag);
        }
        let applied: HashMap<i32, i64> = status
            .iter()
            .map(|p| (p.partition, p.committed.max(p.low)))
            .collect();
        let judge = {
            let mut snapshots = self.snapshots.lock().expect("snapshots lock poisoned");
            snapshots.push_back(Snapshot {
                db_time,
                dispatch,
                status_end: status.iter().map(|p| (p.partition, p.high)).collect(),
            });
            while snapshots.len() > SNAPSHOTS {
                snapshots.pop_front();
            }
            // The newest snapshot whose every status event the repeater has applied since.
            let caught_up = |s: &Snapshot| {
                s.status_end
                    .iter()
                    .all(|(p, end)| applied.get(p).is_some_and(|a| a >= end))
            };
            match snapshots.iter().rposition(caught_up) {
                Some(i) => {
                    snapshots.drain(..i);
                    snapshots.front().cloned()
                }
                None => None,
            }
        };
        let Some(judge) = judge else {
            report.skipped_lagging = true;
            return Ok(report);
        };

        // Keep going while queries come back full: a wiped cluster's whole backlog is
        // re-driven now, not one batch per round.
        let started = std::time::Instant::now();
        loop {
            let lost = self.lost(&judge).await?;
            let full = lost.len() as i64 >= self.cfg.batch_size;
            self.recover(lost, &mut report).await?;
            if !full || started.elapsed().as_secs_f64() > self.cfg.round_budget_secs {
                break;
            }
        }
        Ok(report)
    }

    /// Open deliveries whose current dispatch `snapshot` shows lost (see the module docs).
    async fn lost(&self, snapshot: &Snapshot) -> anyhow::Result<Vec<Lost>> {
        Ok(delivery::lost::lost(
            &self.pool,
            &snapshot.dispatch,
            snapshot.db_time,
            self.cfg.visibility_timeout_secs,
            self.cfg.batch_size,
        )
        .await?)
    }

    /// Copies the current dispatch's Kafka position onto deliveries still open
    /// `remember_after_secs` after it was published, before the outbox row can be purged.
    async fn remember_positions(&self) -> anyhow::Result<()> {
        Ok(delivery::lost::remember_positions(&self.pool, self.cfg.remember_after_secs).await?)
    }

    /// Re-drives (or expires) a batch of lost deliveries in one transaction, re-checking each
    /// under its row lock: one that moved on since it was judged (a status arrived, another
    /// scan or an admin re-drove it) is left alone.
    async fn recover(&self, lost: Vec<Lost>, report: &mut ScanReport) -> anyhow::Result<()> {
        if lost.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = lost.iter().map(|l| l.id).collect();
        let locked = LockedDelivery::lock_many(&mut tx, &ids).await?;
        let attempted = delivery::lost::attempted(&mut tx, &locked).await?;
        let judged: HashMap<Uuid, &Lost> = lost.iter().map(|l| (l.id, l)).collect();
        let (mut expire, mut redrive) = (Vec::new(), Vec::new());
        for d in &locked {
            let Some(l) = judged.get(&d.id) else { continue };
            if d.is_terminal()
                || attempted.contains(&d.id)
                || d.current_attempt != l.current_attempt
            {
                continue;
            }
            if d.not_after().is_some_and(|end| end <= d.db_now) {
                expire.push(d);
            } else {
                redrive.push((d, l.why.clone()));
            }
        }
        let expired: Vec<Uuid> = expire.iter().map(|d| d.id).collect();
        delivery::apply::expire_many(&mut tx, &expired).await?;
        delivery::redrive_many(&mut tx, &redrive, RedriveKind::Lost, "repeater").await?;
        tx.commit().await?;
        for d in expire {
            self.metrics
                .stuck_expired
                .get_or_create(&metrics::channel(d.channel.as_str()))
                .inc();
            report.expired.push(d.id);
        }
        for (d, why) in redrive {
            tracing::warn!(delivery_id = %d.id, attempt = d.current_attempt + 1, %why, "re-drove a lost dispatch");
            self.metrics
                .stuck_redriven
                .get_or_create(&metrics::channel(d.channel.as_str()))
                .inc();
            report.redriven.push(d.id);
        }
        Ok(())
    }

    /// Deliveries whose current attempt's dispatch row the relay set aside → `dead`
    /// (`undeliverable`), each re-checked under its row lock.
    async fn settle_refused(&self, report: &mut ScanReport) -> anyhow::Result<()> {
        let refused = delivery::lost::refused(&self.pool, self.cfg.batch_size).await?;
        for (id, attempt, error) in refused {
            let mut tx = self.pool.begin().await?;
            let Some(d) = LockedDelivery::lock(&mut tx, id).await? else {
                continue;
            };
            if d.is_terminal() || d.current_attempt != attempt {
                continue;
            }
            let message = error.unwrap_or_else(|| "Kafka refused the dispatch message".into());
            delivery::apply::undeliverable(&mut tx, &d, &message, &*self.metrics).await?;
            tx.commit().await?;
            tracing::error!(delivery_id = %d.id, attempt, "dispatch refused by Kafka: delivery is dead (undeliverable)");
            report.undeliverable.push(d.id);
        }
        Ok(())
    }

    /// Deliveries not yet terminal, by status, into the backlog gauge.
    async fn refresh_backlog(&self) -> anyhow::Result<()> {
        for (status, n) in delivery::lost::backlog(&self.pool).await? {
            self.metrics
                .backlog
                .get_or_create(&metrics::StatusLabel {
                    status: status.as_str(),
                })
                .set(n);
        }
        Ok(())
    }
}
