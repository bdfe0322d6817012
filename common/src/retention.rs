//! Retention: tables that only ever grow (receipts, report ids, bot updates, link codes) are
//! purged by age, a bounded batch at a time, by a task of the service that owns them.
//!
//! Each [`Rule`] is one `DELETE` that removes at most `$1` rows older than `$2` seconds. A round
//! runs every rule until it deletes less than a batch, or `max_batches_per_round` batches: a
//! large backlog (a table that grew for months before retention existed) is worked off over
//! several rounds, never in one long statement that holds locks and bloats the WAL.

use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, EncodeLabelSet, Family, Registry};

/// One table's retention.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What it purges, for logs and the metric's `table` label (`receipts`, `receipts_unmatched`).
    pub name: &'static str,
    /// A `DELETE` of at most `$1` (bigint) rows older than `$2` (float seconds).
    pub sql: &'static str,
    /// How old a row must be.
    pub older_than: Duration,
}

/// How often and how much.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Purge at all.
    pub enabled: bool,
    /// Seconds between rounds.
    pub interval_secs: u64,
    /// Rows per statement.
    pub batch_size: i64,
    /// Statements per rule and round, at most.
    pub max_batches_per_round: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 600,
            batch_size: 5_000,
            max_batches_per_round: 20,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

/// One round: every rule, in batches; rows deleted per rule.
pub async fn purge_round(
    pool: &PgPool,
    rules: &[Rule],
    cfg: &RetentionConfig,
) -> sqlx::Result<Vec<(&'static str, u64)>> {
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let mut deleted = 0;
        for _ in 0..cfg.max_batches_per_round.max(1) {
            let n = sqlx::query(rule.sql)
                .bind(cfg.batch_size.max(1))
                .bind(rule.older_than.as_secs_f64())
                .execute(pool)
                .await?
                .rows_affected();
            deleted += n;
            if (n as i64) < cfg.batch_size.max(1) {
                break;
            }
        }
        out.push((rule.name, deleted));
    }
    Ok(out)
}

/// Runs [`purge_round`] every `interval_secs` until `shutdown`, counting into `registry`
/// (`notify_retention_purged_total{table}`).
pub fn spawn(
    pool: PgPool,
    rules: Vec<Rule>,
    cfg: RetentionConfig,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let purged: Family<TableLabel, Counter> = Family::default();
    for rule in &rules {
        let _ = purged.get_or_create(&TableLabel { table: rule.name });
    }
    registry.register(
        "notify_retention_purged",
        "Rows deleted by retention, by table",
        purged.clone(),
    );
    if !cfg.enabled {
        return None;
    }
    Some(tokio::spawn(async move {
        let interval = Duration::from_secs(cfg.interval_secs.max(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match purge_round(&pool, &rules, &cfg).await {
                Ok(done) => {
                    for (table, n) in done.into_iter().filter(|(_, n)| *n > 0) {
                        purged.get_or_create(&TableLabel { table }).inc_by(n);
                        tracing::info!(table, rows = n, "retention purged");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention round failed"),
            }
        }
    }))
}
