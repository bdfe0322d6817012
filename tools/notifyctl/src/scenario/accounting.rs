//! The accounting of a scenario, read from the platform's own records: which deliveries are
//! terminal, lost, sent, and accept → sent latency.

use std::{collections::HashMap, time::Duration};

use hdrhistogram::Histogram;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::load::{self};

use super::Accounting;

/// Accepted notifications to account for: id → recipients.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) expected: HashMap<Uuid, u64>,
}

impl Ledger {
    pub(super) fn add(&mut self, ids: impl IntoIterator<Item = String>, recipients: u64) {
        for id in ids {
            if let Ok(id) = id.parse() {
                self.expected.insert(id, recipients);
            }
        }
    }

    pub(super) fn expected(&self) -> u64 {
        self.expected.values().sum()
    }
}

pub(super) const CHUNK: usize = 5_000;

/// Waits until every delivery in `ledger` is terminal or `timeout` passes; returns the
/// notifications still open.
pub(super) async fn wait_terminal(
    pool: &PgPool,
    ledger: &Ledger,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<(Vec<Uuid>, Option<f64>)> {
    let start = Instant::now();
    let mut open: Vec<Uuid> = ledger.expected.keys().copied().collect();
    loop {
        let mut still = Vec::new();
        for chunk in open.chunks(CHUNK) {
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT notification_id, count(*) FILTER (WHERE status = ANY($2))
                 FROM deliveries WHERE notification_id = ANY($1) GROUP BY notification_id",
            )
            .bind(chunk)
            .bind(delivery::status::terminal_names())
            .fetch_all(pool)
            .await?;
            let done: HashMap<Uuid, i64> = rows.into_iter().collect();
            still.extend(
                chunk
                    .iter()
                    .filter(|id| done.get(id).copied().unwrap_or(0) < ledger.expected[id] as i64),
            );
        }
        open = still;
        if !quiet {
            eprint!(
                "\r  settling: {} notifications not terminal yet, {:>4.0} s   ",
                open.len(),
                start.elapsed().as_secs_f64()
            );
        }
        if open.is_empty() {
            if !quiet {
                eprintln!();
            }
            return Ok((open, Some(start.elapsed().as_secs_f64())));
        }
        if start.elapsed() >= timeout {
            if !quiet {
                eprintln!();
            }
            return Ok((open, None));
        }
        // A count over a million deliveries is work for Postgres too: look less often then.
        let every = if ledger.expected() > 100_000 {
            5_000
        } else {
            1_000
        };
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
}

/// One delivery as the accounting reads it.
pub(super) struct Row {
    pub(super) notification: Uuid,
    pub(super) status: String,
    pub(super) attempt: i32,
    pub(super) created: f64,
    pub(super) sent: Option<f64>,
}

pub(super) async fn read_rows(pool: &PgPool, ids: &[Uuid]) -> anyhow::Result<Vec<Row>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(Uuid, String, i32, f64, Option<f64>)> = sqlx::query_as(
            "SELECT notification_id, status, current_attempt, extract(epoch FROM created_at)::float8,
                    extract(epoch FROM sent_at)::float8
             FROM deliveries WHERE notification_id = ANY($1)",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        out.extend(
            rows.into_iter()
                .map(|(notification, status, attempt, created, sent)| Row {
                    notification,
                    status,
                    attempt,
                    created,
                    sent,
                }),
        );
    }
    Ok(out)
}

/// Counts `rows` against `ledger`.
pub(super) fn account(ledger: &Ledger, rows: &[Row], settled: Option<f64>) -> Accounting {
    let mut a = Accounting {
        expected: ledger.expected(),
        settled_after_s: settled,
        ..Accounting::default()
    };
    let mut terminal_of: HashMap<Uuid, u64> = HashMap::new();
    let mut rows_of: HashMap<Uuid, u64> = HashMap::new();
    for r in rows {
        *a.by_status.entry(r.status.clone()).or_default() += 1;
        *rows_of.entry(r.notification).or_default() += 1;
        if r.attempt > 1 {
            a.redispatched += 1;
        }
        if delivery::Status::parse(&r.status).is_some_and(delivery::Status::is_terminal) {
            a.terminal += 1;
            *terminal_of.entry(r.notification).or_default() += 1;
        }
    }
    let mut lost: Vec<(Uuid, u64, u64)> = Vec::new();
    for (id, expected) in &ledger.expected {
        let have = rows_of.get(id).copied().unwrap_or(0);
        let terminal = terminal_of.get(id).copied().unwrap_or(0);
        if terminal < *expected {
            // Open rows count once each; recipients with no row at all are missing.
            let open = have.saturating_sub(terminal).min(expected - terminal);
            lost.push((*id, open, expected - terminal - open));
        }
    }
    lost.sort();
    a.open = lost.iter().map(|l| l.1).sum();
    a.missing = lost.iter().map(|l| l.2).sum();
    a.lost = a.open + a.missing;
    a.lost_notifications = lost.iter().take(100).map(|l| l.0.to_string()).collect();
    a
}

pub(super) fn accept_to_sent<'a>(rows: impl Iterator<Item = &'a Row>) -> Histogram<u64> {
    let mut h = load::histogram();
    for r in rows {
        if let Some(sent) = r.sent {
            let _ = h.record((((sent - r.created) * 1e6).max(1.0)) as u64);
        }
    }
    h
}

pub(super) fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    [
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995,
        0.999, 0.9999, 1.0,
    ]
    .iter()
    .map(|q| (*q, h.value_at_quantile(*q) as f64 / 1000.0))
    .collect()
}
