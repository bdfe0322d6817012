//! The purge task: published and set-aside rows older than the retention, in batches, and the
//! due-rows and oldest-failing gauges.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{PURGE_BATCH, RelayConfig, RelayMetrics};

/// The purge task: old published and set-aside rows, and the due-rows gauge.
pub(super) struct Purger {
    pub(super) pool: PgPool,
    pub(super) cfg: RelayConfig,
    pub(super) metrics: Arc<RelayMetrics>,
}

impl Purger {
    pub(super) async fn purge(&self) -> sqlx::Result<u64> {
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

    /// Seconds since the oldest unpublished, not set-aside row first failed (0: none).
    async fn oldest_failing(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(first_failed_at))::bigint, 0)
             FROM outbox
             WHERE first_failed_at IS NOT NULL AND published_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Every `purge_interval_secs` until `shutdown`.
    pub(super) async fn run(self, shutdown: CancellationToken) {
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
            match self.oldest_failing().await {
                Ok(secs) => {
                    self.metrics.oldest_failing.set(secs);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the oldest failing outbox row failed")
                }
            }
        }
    }
}
