//! `notifyctl load`: load scenarios against a running stack, with the accounting read from
//! the platform's own records.
//!
//! Each scenario drives open-loop load ([`crate::load`]) through the public URL with the
//! stack's service token, samples every process's CPU and RSS and the backlogs (unpublished
//! outbox rows, open deliveries) once a second, then waits until every delivery of every
//! accepted notification is terminal and accounts: **lost = expected − terminal** (a delivery
//! that never reached a terminal status, or was never planned), accept → `sent` latency
//! (`deliveries.sent_at − created_at`, the same figures `GET /v1/admin/stats` reports),
//! deliveries sent per second. The result is written as JSON next to the others of the same
//! directory, and `report.html` is rebuilt from all of them ([`crate::report`]).
//!
//! Scenarios:
//! * `intake` — accept only (what callers see), with the pipeline running or, with
//!   `--pause-workers`, the workers stopped (SIGSTOP) for the length of the load;
//! * `e2e` — one recipient per request on `--channel` (email to the SMTP catcher, webhook / sms
//!   / push to the provider sink), measured to `sent`;
//! * `fanout` — `--recipients` (1,000) per request;
//! * `batch` — `--batch-size` (100) single-recipient notifications per request through
//!   `POST /v1/notifications/batch` (`--rate` counts batches; accepted counts notifications,
//!   the accept latency is the batch's);
//! * `urgent-under-bulk` — a backlog of `--backlog` bulk deliveries accepted as fast as the
//!   stack takes them, then urgent (`priority: high`) notifications at `--rate`, measuring
//!   their accept → sent latency while the backlog drains;
//! * `topic` — the backlog is one send to a topic of `--backlog` subscribers (SMS), timed
//!   until its fan-out has planned them all ([`topic`]), then urgent notifications as above.

use std::{path::PathBuf, sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod accounting;
mod inputs;
mod output;
mod result;
mod topic;

use accounting::{Ledger, accept_to_sent, account, cdf, read_rows, wait_terminal};
use inputs::{body, sample_backlogs, signal, targets};
pub use output::{summary, write};
pub use result::{Accounting, Backlog, Percentiles, ScenarioResult};

use crate::{
    load::{self, Outcome, Plan},
    procs::{self},
    stack::StackFile,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Intake,
    E2e,
    Fanout,
    Batch,
    UrgentUnderBulk,
    Topic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoadChannel {
    Email,
    Webhook,
    Sms,
    Push,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[arg(long, value_enum, default_value = "e2e")]
    pub scenario: Scenario,
    #[arg(long, value_enum, default_value = "webhook")]
    pub channel: LoadChannel,
    /// Requests started per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Recipients per request (default: 1, or 1,000 for `fanout`; the backlog of
    /// `urgent-under-bulk` is always sent 1,000 per request).
    #[arg(long)]
    pub recipients: Option<usize>,
    /// `batch`: notifications per batch request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// `urgent-under-bulk`: bulk deliveries accepted before the urgent ones start; `topic`:
    /// the topic's subscribers.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: u64,
    /// `intake`: stop the workers (SIGSTOP) while the load runs; they resume before the
    /// accounting.
    #[arg(long)]
    pub pause_workers: bool,
    /// `topic`: do not wait for the topic send's deliveries (account the urgent ones only).
    #[arg(long)]
    pub skip_drain: bool,
    /// How long to wait after the load for every delivery to be terminal.
    #[arg(long, default_value_t = 300)]
    pub settle_secs: u64,
    /// At most this many requests in flight (more are counted as skipped).
    #[arg(long, default_value_t = 2_000)]
    pub max_in_flight: usize,
    /// The result's name (its file is `<out>/<name>.json`); default `<scenario>-<channel>`.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = ".dev/stack.json")]
    pub stack: PathBuf,
    /// Where results and `report.html` go.
    #[arg(long, default_value = ".dev/load")]
    pub out: PathBuf,
}

/// Recipients per request of the `urgent-under-bulk` backlog.
const BACKLOG_RECIPIENTS: usize = 1_000;

impl LoadArgs {
    fn recipients(&self) -> usize {
        self.recipients.unwrap_or(match self.scenario {
            Scenario::Fanout => 1_000,
            _ => 1,
        })
    }

    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let s = serde_json::to_value(self.scenario).unwrap_or_default();
            let c = serde_json::to_value(self.channel).unwrap_or_default();
            format!(
                "{}-{}",
                s.as_str().unwrap_or("load"),
                c.as_str().unwrap_or("any")
            )
        })
    }
}

/// Runs one scenario against the stack described by `args.stack`; writes its JSON and
/// rebuilds the directory's report.
pub fn run(args: LoadArgs) -> anyhow::Result<ScenarioResult> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            tokio::select! {
                r = run_async(&args, false) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        })
}

/// [`run`] inside a runtime; `quiet` leaves out the progress lines.
pub async fn run_async(args: &LoadArgs, quiet: bool) -> anyhow::Result<ScenarioResult> {
    let stack = StackFile::read(&args.stack)?;
    anyhow::ensure!(
        !stack.notify_database_url.is_empty(),
        "{} names no notify database (written by an older `notifyctl up`): restart the stack",
        args.stack.display()
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&stack.notify_database_url)
        .await?;
    let name = args.name();
    let recipients = args.recipients();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1_024)
        .build()?;
    let url = format!("{}/v1/notifications", stack.url.trim_end_matches('/'));
    let token = stack.tokens.service.clone();
    let stack = Arc::new(stack);

    let stop = CancellationToken::new();
    let sampling_started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let sampler = tokio::spawn(procs::sample(targets(&stack), stop.clone()));
    let backlogs = tokio::spawn(sample_backlogs(pool.clone(), stop.clone()));
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };

    // The bulk backlog, accepted as fast as the stack takes it (a few requests at a time).
    let mut bulk = Ledger::default();
    let mut backlog = None;
    let backlog_started = wall();
    if args.scenario == Scenario::UrgentUnderBulk {
        // The most a request may carry: the backlog is queued as fast as the API allows.
        let per = BACKLOG_RECIPIENTS;
        let requests = args.backlog.div_ceil(per as u64);
        let started = Instant::now();
        let slowest = Arc::new(std::sync::Mutex::new(0f64));
        let ids: Vec<String> = futures::future::join_all((0..4u64).map(|lane| {
            let (http, url, token, stack, slowest) = (
                http.clone(),
                url.clone(),
                token.clone(),
                stack.clone(),
                slowest.clone(),
            );
            async move {
                let mut ids = Vec::new();
                let mut n = lane;
                while n < requests {
                    let t = Instant::now();
                    let body = body(args.channel, &stack, 1_000_000 + n, per, "normal");
                    match load::post_notification(&http, &url, &token, &body).await {
                        Outcome::Accepted(id) => ids.push(id),
                        other => eprintln!("  backlog request {n}: {other:?}"),
                    }
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    let mut s = slowest.lock().expect("slowest");
                    *s = s.max(ms);
                    n += 4;
                }
                ids
            }
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        bulk.add(ids, per as u64);
        let took = started.elapsed().as_secs_f64();
        if !quiet {
            eprintln!(
                "  backlog: {} bulk deliveries accepted in {took:.1} s",
                bulk.expected()
            );
        }
        backlog = Some(Backlog {
            deliveries: bulk.expected(),
            accepted_in_s: took,
            max_request_ms: *slowest.lock().expect("slowest"),
            ..Backlog::default()
        });
    }

    let mut planning_window = None;
    if args.scenario == Scenario::Topic {
        let planned = topic::prepare(&http, &stack, &pool, args.backlog, quiet).await?;
        if !args.skip_drain {
            bulk.add([planned.id], planned.backlog.deliveries);
        }
        planning_window = Some(planned.window);
        backlog = Some(planned.backlog);
    }

    let workers_pid = stack.processes.get("workers").copied();
    if args.pause_workers
        && let Some(pid) = workers_pid
    {
        signal(pid, "STOP");
    }
    let priority = if matches!(args.scenario, Scenario::UrgentUnderBulk | Scenario::Topic) {
        "high"
    } else {
        "normal"
    };
    let started_at = wall();
    let plan = Plan {
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        max_in_flight: args.max_in_flight,
    };
    let batch_size = (args.scenario == Scenario::Batch).then_some(args.batch_size.max(1));
    let request = {
        let (http, url, token, stack) = (http.clone(), url.clone(), token.clone(), stack.clone());
        let channel = args.channel;
        move |n: u64| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            match batch_size {
                None => {
                    let body = body(channel, &stack, n, recipients, priority);
                    futures::future::Either::Left(async move {
                        load::post_notification(&http, &url, &token, &body).await
                    })
                }
                Some(size) => {
                    let items: Vec<serde_json::Value> = (0..size as u64)
                        .map(|i| body(channel, &stack, n * size as u64 + i, recipients, priority))
                        .collect();
                    let body = serde_json::json!({ "notifications": items });
                    futures::future::Either::Right(async move {
                        load::post_batch(&http, &format!("{url}/batch"), &token, &body).await
                    })
                }
            }
        }
    };
    let duration = args.duration_secs;
    let report = load::run(plan, request, |s, second| {
        if !quiet {
            let done = ((s + 1) * 30 / duration.max(1) as usize).min(30);
            eprint!(
                "\r  [{}{}] {:>4}/{duration} s  accepted {:>6}/s  slowest {:>7.1} ms  refused {}  unanswered {}  skipped {}   ",
                "#".repeat(done),
                " ".repeat(30 - done),
                s + 1,
                second.accepted,
                second.max_ms,
                second.refused,
                second.failed,
                second.skipped,
            );
        }
    })
    .await;
    if !quiet {
        eprintln!();
    }
    if args.pause_workers
        && let Some(pid) = workers_pid
    {
        signal(pid, "CONT");
    }

    let mut measured = Ledger::default();
    measured.add(
        report.accepted.iter().map(|(id, _)| id.clone()),
        recipients as u64,
    );
    let mut all = Ledger::default();
    all.expected.extend(measured.expected.iter());
    all.expected.extend(bulk.expected.iter());
    let (_, settled) =
        wait_terminal(&pool, &all, Duration::from_secs(args.settle_secs), quiet).await?;
    stop.cancel();
    let processes = sampler.await.unwrap_or_default();
    let (outbox_unpublished_by_second, open_deliveries_by_second) =
        backlogs.await.unwrap_or_default();

    let measured_ids: Vec<Uuid> = measured.expected.keys().copied().collect();
    let rows = read_rows(&pool, &measured_ids).await?;
    let mut deliveries = account(&measured, &rows, settled);
    let bulk_ids: Vec<Uuid> = bulk.expected.keys().copied().collect();
    let bulk_rows = read_rows(&pool, &bulk_ids).await?;
    if let Some(b) = backlog.as_mut() {
        let a = account(&bulk, &bulk_rows, settled);
        // The backlog counts in the run's accounting: nothing of it may be lost either.
        deliveries.expected += a.expected;
        deliveries.terminal += a.terminal;
        deliveries.lost += a.lost;
        deliveries.open += a.open;
        deliveries.missing += a.missing;
        deliveries.redispatched += a.redispatched;
        for (k, v) in a.by_status {
            *deliveries.by_status.entry(k).or_default() += v;
        }
        deliveries
            .lost_notifications
            .extend(a.lost_notifications.into_iter().take(100));
        b.drained_in_s = bulk_rows
            .iter()
            .filter_map(|r| r.sent)
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
            .map(|last| last - backlog_started);
        b.accept_to_sent_ms = Percentiles::of(&accept_to_sent(bulk_rows.iter()));
    }

    if let (Some(b), Some((from, to))) = (backlog.as_mut(), planning_window) {
        let (from, to) = (from - sampling_started, to - sampling_started);
        b.planning_cpu_percent = processes
            .iter()
            .map(|(name, series)| {
                let window: Vec<f64> = series
                    .cpu_percent
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (*i as f64) >= from.floor() && (*i as f64) < to.ceil())
                    .map(|(_, c)| *c)
                    .collect();
                let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
                (name.clone(), mean)
            })
            .collect();
    }
    let h = accept_to_sent(rows.iter());
    let all_rows = rows.iter().chain(bulk_rows.iter());
    let mut sent_by_second: Vec<u64> = Vec::new();
    let (mut first_created, mut last_sent) = (f64::MAX, 0f64);
    let (mut during_load, mut sent_total) = (0u64, 0u64);
    for r in all_rows {
        first_created = first_created.min(r.created);
        if let Some(s) = r.sent {
            sent_total += 1;
            last_sent = last_sent.max(s);
            if s >= started_at {
                let i = (s - started_at) as usize;
                if sent_by_second.len() <= i {
                    sent_by_second.resize(i + 1, 0);
                }
                sent_by_second[i] += 1;
                if s - started_at < args.duration_secs as f64 {
                    during_load += 1;
                }
            }
        }
    }
    let mut p99_by_second: Vec<Histogram<u64>> = Vec::new();
    for r in &rows {
        if let Some(s) = r.sent
            && r.created >= started_at
        {
            let i = (r.created - started_at) as usize;
            while p99_by_second.len() <= i {
                p99_by_second.push(load::histogram());
            }
            let _ = p99_by_second[i].record((((s - r.created) * 1e6).max(1.0)) as u64);
        }
    }
    let result = ScenarioResult {
        name: name.clone(),
        scenario: args.scenario,
        channel: args.channel,
        rate: args.rate,
        duration_s: args.duration_secs,
        recipients_per_request: recipients,
        pause_workers: args.pause_workers,
        started_at,
        accepted: report.accepted.len() as u64,
        refused: report.refused,
        unanswered: report.failed,
        skipped: report.skipped,
        accepted_per_s: report.accepted.len() as f64 / args.duration_secs.max(1) as f64,
        accept_ms: Percentiles::of(&report.latency),
        refuse_ms: Percentiles::of(&report.refused_latency),
        accepted_by_second: report.seconds.iter().map(|s| s.accepted).collect(),
        accept_p50_by_second: report.seconds.iter().map(|s| s.p50_ms).collect(),
        accept_p99_by_second: report.seconds.iter().map(|s| s.p99_ms).collect(),
        deliveries,
        sent_per_s_during_load: during_load as f64 / args.duration_secs.max(1) as f64,
        sent_per_s_overall: if last_sent > first_created {
            sent_total as f64 / (last_sent - first_created)
        } else {
            0.0
        },
        sent_by_second,
        accept_to_sent_ms: Percentiles::of(&h),
        accept_to_sent_cdf: cdf(&h),
        accept_to_sent_p99_by_second: p99_by_second
            .iter()
            .map(|h| {
                if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                }
            })
            .collect(),
        backlog,
        outbox_unpublished_by_second,
        open_deliveries_by_second,
        processes,
    };
    write(&args.out, &result)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::{inputs::recipient, *};

    fn stack() -> StackFile {
        serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:1", "user_id": "",
            "tokens": { "user": "", "service": "", "admin": "" },
            "jwt": { "alg": "HS256", "secret": "", "iss": "", "aud": "" },
            "webhook_sink": "http://127.0.0.1:2/webhook/hook"
        }))
        .unwrap()
    }

    #[test]
    fn every_generated_recipient_is_one_planning_accepts_and_each_is_distinct() {
        let stack = stack();
        for n in [0u64, 1, 8_999_999, 9_000_000, 123_456_789] {
            let phone = recipient(LoadChannel::Sms, &stack, n);
            let phone = phone["phone"].as_str().unwrap();
            assert!(
                common::address::PhoneE164::parse(phone).is_ok(),
                "{phone} would be suppressed"
            );
        }
        for channel in [
            LoadChannel::Email,
            LoadChannel::Webhook,
            LoadChannel::Sms,
            LoadChannel::Push,
        ] {
            let body = body(channel, &stack, 3, 1_000, "normal");
            let all: std::collections::HashSet<String> = body["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect();
            assert_eq!(
                all.len(),
                1_000,
                "{channel:?}: identical recipients are planned once"
            );
        }
    }
}
