//! `notifyctl bench-digest`: what digests cost (decision 0030), on a release stack of its own.
//!
//! `--notifications` sends (default 100,000), one recipient each, spread round-robin over
//! `--recipients` raw email addresses (default 1,000), posted as batches of 1,000 items
//! (`--in-flight` batches at once) to the bff instances in turn:
//! 1. **baseline**: every send scheduled an hour ahead (planned `pending`, one outbox row
//!    each, nothing delivered meanwhile) — what intake costs for a plain send;
//! 2. **digest**: the same sends with `digest: {key, window: 1h}` — folded into one window per
//!    recipient (`digested`, one digest upsert per window per transaction, no outbox row);
//! 3. **close**: every window made due at once; until all are closed and their digests sent.
//!
//! 4. **caps**: `--cap-checks` frequency-cap checks (16 at once, 2,000 users, a limit of 5)
//!    against the Postgres counter — each check a transaction, waiting for its WAL flush and
//!    not (as the platform's `db::rules::take`) — and a Redis script doing the same.
//!
//! Reported per phase: wall time, notifications per second, and the CPU seconds of
//! notification-service, both bff and this process (the harness) — the cost per notification
//! is notification-service's and the bff's CPU over the notifications. Checked: as many
//! digests as recipients, each with its share of the items, their sum the notifications.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    bench_inbox::{cpu_secs, own_cpu_secs},
    launcher,
};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchDigestArgs {
    #[arg(long, default_value_t = 100_000)]
    pub notifications: usize,
    #[arg(long, default_value_t = 1000)]
    pub recipients: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Where the report (digest.json) and the stack's logs go.
    #[arg(long, default_value = "bench-digest")]
    pub out: std::path::PathBuf,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    /// Cap checks against each store (Postgres, Redis).
    #[arg(long, default_value_t = 20_000)]
    pub cap_checks: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub phase: &'static str,
    pub notifications: usize,
    pub secs: f64,
    pub per_sec: f64,
    pub notification_service_cpu_secs: f64,
    pub bff_cpu_secs: f64,
    /// notification-service's and the bff's CPU per notification, in microseconds.
    pub cpu_us_per_notification: f64,
    pub harness_cpu_secs: f64,
}

impl Phase {
    /// The figures of `notifications` handled since `started`, from the CPU seconds
    /// (notification-service, bff, harness) before and after.
    fn of(
        phase: &'static str,
        notifications: usize,
        started: Instant,
        (n0, b0, h0): (f64, f64, f64),
        (n1, b1, h1): (f64, f64, f64),
    ) -> Self {
        let secs = started.elapsed().as_secs_f64();
        Phase {
            phase,
            notifications,
            secs,
            per_sec: notifications as f64 / secs,
            notification_service_cpu_secs: n1 - n0,
            bff_cpu_secs: b1 - b0,
            cpu_us_per_notification: (n1 - n0 + b1 - b0) * 1e6 / notifications as f64,
            harness_cpu_secs: h1 - h0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DigestBenchReport {
    pub phases: Vec<Phase>,
    pub digests: i64,
    pub items: i64,
    pub min_items: i64,
    pub max_items: i64,
    /// Digest notifications whose delivery was sent.
    pub digests_sent: i64,
    /// (digest + close) CPU per notification over the baseline's.
    pub cost_ratio: f64,
    /// The frequency cap's counter: Postgres (chosen) against Redis.
    pub caps: Vec<CapStore>,
}

/// `checks` cap checks (`--cap-checks`, 16 at once, over 2,000 users × one channel).
#[derive(Debug, Clone, Serialize)]
pub struct CapStore {
    pub store: &'static str,
    pub checks: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Checks that found the counter at its limit (5 per user per window: the same for both).
    pub refused: usize,
}

pub fn run(args: BenchDigestArgs) -> anyhow::Result<DigestBenchReport> {
    let out = std::path::absolute(&args.out)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let up = crate::bench::bench_stack(&out, &args.postgres)?;
    eprintln!("bench-digest: starting the stack (release build, rate limits off) …");
    let running = launcher::start(&up)?;
    let stack = running.stack.clone();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(measure(&stack, &args, &up.redis));
    drop(running);
    if let Err(e) = launcher::forget_redis_keys(&up.redis, &launcher::redis_prefix(&up.db_prefix)) {
        eprintln!("  (the stack's Redis keys were not removed: {e})");
    }
    let report = result?;
    std::fs::write(out.join("digest.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

struct Pids {
    notify: u32,
    bffs: Vec<u32>,
}

impl Pids {
    fn cpu(&self) -> (f64, f64, f64) {
        (
            cpu_secs(self.notify),
            self.bffs.iter().map(|p| cpu_secs(*p)).sum(),
            own_cpu_secs(),
        )
    }
}

async fn measure(
    stack: &crate::stack::StackFile,
    args: &BenchDigestArgs,
    redis_url: &str,
) -> anyhow::Result<DigestBenchReport> {
    let pids = Pids {
        notify: *stack
            .processes
            .get("notification-service")
            .context("the stack file has no notification-service process")?,
        bffs: stack
            .processes
            .iter()
            .filter(|(k, _)| k.starts_with("bff"))
            .map(|(_, v)| *v)
            .collect(),
    };
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&stack.notify_database_url)
        .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut phases = Vec::new();

    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let baseline = send_all(stack, &http, &pids, args, "baseline", |i, to| {
        json!({ "recipients": [{ "email": to }], "category": "bench",
                "content": { "subject": format!("Item {i}"), "text": format!("Item {i} of the bench") },
                "send_at": later })
    })
    .await?;
    report(&baseline);
    phases.push(baseline);
    let digest = send_all(stack, &http, &pids, args, "digest", |i, to| {
        json!({ "recipients": [{ "email": to }], "category": "bench",
                "content": { "subject": format!("Item {i}"), "text": format!("Item {i} of the bench") },
                "digest": { "key": "bench", "window": "1h" } })
    })
    .await?;
    report(&digest);
    phases.push(digest);

    // Every window due now; until each is closed and its one delivery sent.
    let (n0, b0, h0) = pids.cpu();
    let started = Instant::now();
    sqlx::query("UPDATE digests SET closes_at = now() WHERE state = 'open'")
        .execute(&db)
        .await?;
    sqlx::query(
        "UPDATE outbox SET available_at = now()
         WHERE published_at IS NULL AND key IN (SELECT id::text FROM digests)",
    )
    .execute(&db)
    .await?;
    let want = args.recipients as i64;
    let deadline = Instant::now() + Duration::from_secs(900);
    let sent = loop {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM digests g JOIN deliveries d ON d.notification_id = g.notification_id
             WHERE d.status IN ('sent', 'delivered')",
        )
        .fetch_one(&db)
        .await?;
        if sent >= want {
            break sent;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{sent} of {want} digests sent within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let close = Phase::of(
        "close",
        args.notifications,
        started,
        (n0, b0, h0),
        pids.cpu(),
    );
    report(&close);
    phases.push(close);
    let (digests, items, min_items, max_items): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(items), 0)::bigint, coalesce(min(items), 0)::bigint,
                coalesce(max(items), 0)::bigint
         FROM digests WHERE state = 'closed'",
    )
    .fetch_one(&db)
    .await?;
    let cost_ratio = (phases[1].cpu_us_per_notification + phases[2].cpu_us_per_notification)
        / phases[0].cpu_us_per_notification.max(f64::EPSILON);
    eprintln!(
        "  {digests} digests closed holding {items} items ({min_items}..={max_items} each), {sent} sent; digest + close cost {cost_ratio:.2}× the baseline's CPU per notification"
    );
    anyhow::ensure!(
        digests == want && items == args.notifications as i64,
        "expected {want} digests holding {} items",
        args.notifications
    );
    let caps = vec![
        cap_store("postgres", args.cap_checks, |user, start| {
            let db = db.clone();
            async move { pg_check(&db, user, start, true).await }
        })
        .await?,
        cap_store("postgres-async", args.cap_checks, |user, start| {
            let db = db.clone();
            async move { pg_check(&db, user, start, false).await }
        })
        .await?,
        {
            let client = redis::Client::open(redis_url)?;
            let conn = redis::aio::ConnectionManager::new(client).await?;
            let script = redis::Script::new(
                "local c = tonumber(redis.call('GET', KEYS[1]) or '0')
                 if c >= tonumber(ARGV[1]) then return 0 end
                 redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1",
            );
            cap_store("redis", args.cap_checks, |user, start| {
                let (mut conn, script) = (conn.clone(), script.clone());
                async move {
                    let key = format!("bench_cap:{user}:email:*:3600:{}", start.timestamp());
                    let taken: i32 = script
                        .key(key)
                        .arg(5)
                        .arg(7200)
                        .invoke_async(&mut conn)
                        .await?;
                    Ok(taken == 1)
                }
            })
            .await?
        },
    ];
    Ok(DigestBenchReport {
        phases,
        digests,
        items,
        min_items,
        max_items,
        digests_sent: sent,
        cost_ratio,
        caps,
    })
}

/// One cap check as `db::rules::take` makes it: a transaction taking a place in a counter
/// (limit 5); `flushed`: waiting for the commit's WAL flush (the platform does not).
async fn pg_check(
    db: &sqlx::PgPool,
    user: uuid::Uuid,
    start: chrono::DateTime<chrono::Utc>,
    flushed: bool,
) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    if !flushed {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    let row: Option<i32> = sqlx::query_scalar(
        "INSERT INTO cap_counts AS c (user_id, channel, scope, window_seconds, window_start, count, cap_limit)
         VALUES ($1, 'email', '*', 3600, $2, 1, 5)
         ON CONFLICT (user_id, channel, scope, window_seconds, window_start)
         DO UPDATE SET count = c.count + 1 WHERE c.count < EXCLUDED.cap_limit
         RETURNING count",
    )
    .bind(user)
    .bind(start)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.is_some())
}

/// `checks` checks through `check(user, window_start)` (taken or refused), 16 at once.
async fn cap_store<F, Fut>(store: &'static str, checks: usize, check: F) -> anyhow::Result<CapStore>
where
    F: Fn(uuid::Uuid, chrono::DateTime<chrono::Utc>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let users: Vec<uuid::Uuid> = (0..2000).map(|_| uuid::Uuid::new_v4()).collect();
    let start = chrono::Utc::now();
    let started = Instant::now();
    let results: Vec<anyhow::Result<(bool, f64)>> = futures::stream::iter(0..checks)
        .map(|i| {
            let fut = check(users[i % users.len()], start);
            async move {
                let t = Instant::now();
                let taken = fut.await?;
                Ok((taken, t.elapsed().as_secs_f64() * 1000.0))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let mut ms = Vec::with_capacity(checks);
    let mut refused = 0;
    for r in results {
        let (taken, t) = r?;
        refused += usize::from(!taken);
        ms.push(t);
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let figures = CapStore {
        store,
        checks,
        per_sec: checks as f64 / secs,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        refused,
    };
    eprintln!(
        "  cap checks, {store:<8}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} refused)",
        figures.per_sec, figures.p50_ms, figures.p99_ms, figures.refused
    );
    Ok(figures)
}

fn report(p: &Phase) {
    eprintln!(
        "  {:<8} {} notifications in {:.1} s ({:.0}/s): notification-service {:.1} s CPU, bff {:.1} s, {:.0} µs a notification; harness {:.1} s CPU",
        p.phase,
        p.notifications,
        p.secs,
        p.per_sec,
        p.notification_service_cpu_secs,
        p.bff_cpu_secs,
        p.cpu_us_per_notification,
        p.harness_cpu_secs
    );
}

/// Posts every notification (`item(i, address)`) in batches of 1,000 to the bff instances in
/// turn; the phase's figures once every batch is answered (every item 202).
async fn send_all(
    stack: &crate::stack::StackFile,
    http: &reqwest::Client,
    pids: &Pids,
    args: &BenchDigestArgs,
    phase: &'static str,
    item: impl Fn(usize, &str) -> serde_json::Value,
) -> anyhow::Result<Phase> {
    const BATCH: usize = 1000;
    let addresses: Vec<String> = (0..args.recipients.max(1))
        .map(|r| format!("r{r}@bench.example.com"))
        .collect();
    let batches: Vec<serde_json::Value> = (0..args.notifications)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            let items: Vec<serde_json::Value> = chunk
                .iter()
                .map(|&i| item(i, &addresses[i % addresses.len()]))
                .collect();
            json!({ "notifications": items })
        })
        .collect();
    let urls: Vec<String> = if stack.bff_urls.is_empty() {
        vec![stack.url.clone()]
    } else {
        stack.bff_urls.clone()
    };
    let (n0, b0, h0) = pids.cpu();
    let started = Instant::now();
    let answers: Vec<anyhow::Result<()>> = futures::stream::iter(batches.into_iter().enumerate())
        .map(|(i, body)| {
            let url = format!("{}/v1/notifications/batch", urls[i % urls.len()]);
            let token = stack.tokens.service.clone();
            async move {
                let resp = http.post(url).bearer_auth(token).json(&body).send().await?;
                let status = resp.status();
                let answer: serde_json::Value = resp.json().await?;
                anyhow::ensure!(status.is_success(), "batch answered {status}: {answer}");
                let refused = answer["results"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|r| r["status"] != 202).count());
                anyhow::ensure!(refused == 0, "{refused} items not accepted: {answer}");
                Ok(())
            }
        })
        .buffer_unordered(args.in_flight.max(1))
        .collect()
        .await;
    answers.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(Phase::of(
        phase,
        args.notifications,
        started,
        (n0, b0, h0),
        pids.cpu(),
    ))
}
