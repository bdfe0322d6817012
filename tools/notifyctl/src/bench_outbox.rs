//! `notifyctl bench-outbox` (`make bench-outbox`): does the outbox stay bounded at a sustained
//! publish rate?
//!
//! Runs the real relay (`common::outbox`, with its purge task) against a database of its own
//! on the machine's Postgres and the Kafka mock cluster, and commits outbox rows shaped like
//! dispatch messages at a constant rate (open loop, [`load`]) for the whole run. The retention
//! is short (60 s by default, 1 h in production) so the purge has to delete as fast as rows
//! arrive for most of the run. Every few seconds it samples the table: rows present, rows
//! waiting to be published. The outbox is bounded when, at the end, it holds no more than
//! the retention's worth of rows plus two purge intervals, and the relay is not behind.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    kafka::{KafkaConfig, producer},
    outbox::{OutboxMessage, Relay, RelayConfig, enqueue},
};
use devkit::{kafka::DevCluster, pg::TestDatabase};
use serde::Serialize;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::{self, Outcome, Plan};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOutboxArgs {
    /// Outbox rows committed per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// How long rows keep coming, in seconds.
    #[arg(long, default_value_t = 300)]
    pub duration_secs: u64,
    /// How long published rows are kept before the purge deletes them.
    #[arg(long, default_value_t = 60)]
    pub retention_secs: u64,
    /// Rows per committed transaction (the intake commits a request's rows together).
    #[arg(long, default_value_t = 20)]
    pub rows_per_commit: usize,
    /// The JSON report goes here.
    #[arg(long, default_value = ".dev/bench/outbox.json")]
    pub out: PathBuf,
}

/// The table at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_s: f64,
    /// Rows in the outbox.
    pub rows: i64,
    /// Rows committed and not yet published.
    pub unpublished: i64,
    /// Rows committed so far.
    pub committed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxBenchReport {
    pub rate: f64,
    pub duration_s: u64,
    pub retention_s: u64,
    pub purge_interval_s: u64,
    pub committed: u64,
    /// Rows committed per second over the run.
    pub committed_per_s: f64,
    /// Commits that could not start on time (the database could not keep up).
    pub skipped_commits: u64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    /// Rows published to Kafka per second over the run (from the table's counts).
    pub published_per_s: f64,
    /// Rows deleted by the purge over the run, and per second once it had anything to do.
    pub purged: u64,
    pub purged_per_s: f64,
    /// The most rows the table held, and at the end.
    pub max_rows: i64,
    pub final_rows: i64,
    pub final_unpublished: i64,
    /// What "bounded" allows: rate × (retention + 2 purge intervals).
    pub bound_rows: i64,
    pub bounded: bool,
    pub samples: Vec<Sample>,
}

/// A row the size and shape of a dispatch message.
fn dispatch_row(n: u64) -> OutboxMessage {
    let delivery = uuid::Uuid::new_v4();
    let payload = serde_json::json!({
        "delivery_id": delivery,
        "notification_id": uuid::Uuid::new_v4(),
        "attempt": 1,
        "channel": "email",
        "priority": "normal", "lane": "bulk",
        "address": format!("user{n}@example.test"),
        "content": {
            "subject": "Your order has shipped",
            "text": "Hello, your order #12345 is on its way and will arrive on Thursday. \
                     Track it any time from your account page.",
        },
        "expires_at": "2099-01-01T00:00:00Z",
        "locale": "en",
        "category": "orders",
    });
    let mut m = OutboxMessage::new("notify.dispatch.email.bulk", delivery.to_string(), &payload)
        .expect("payload");
    m.headers
        .insert("delivery-id".to_owned(), delivery.to_string());
    m
}

async fn sample(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE published_at IS NULL AND failed_at IS NULL)
         FROM outbox",
    )
    .fetch_one(pool)
    .await
}

pub fn run(args: BenchOutboxArgs) -> anyhow::Result<OutboxBenchReport> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: BenchOutboxArgs) -> anyhow::Result<OutboxBenchReport> {
    let topic = "notify.dispatch.email.bulk";
    let cluster = DevCluster::start(&[topic.to_owned()], 3)?;
    let kafka = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        ..KafkaConfig::default()
    };
    let db = TestDatabase::create("bench_outbox").await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(db.url())
        .await?;
    let migrations =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/notify");
    sqlx::migrate::Migrator::new(migrations)
        .await?
        .run(&pool)
        .await?;

    let cfg = RelayConfig {
        retention_secs: args.retention_secs,
        ..RelayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let relay = Relay::new(
        pool.clone(),
        producer(&kafka, "bench-outbox")?,
        kafka.clone(),
        cfg.clone(),
    );
    let relaying = tokio::spawn(relay.run(shutdown.clone()));

    let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let start = Instant::now();
    let sampling = {
        let (pool, samples, committed, stop) = (
            pool.clone(),
            samples.clone(),
            committed.clone(),
            shutdown.child_token(),
        );
        tokio::spawn(async move {
            loop {
                if let Ok((rows, unpublished)) = sample(&pool).await {
                    samples.lock().expect("samples").push(Sample {
                        at_s: start.elapsed().as_secs_f64(),
                        rows,
                        unpublished,
                        committed: committed.load(std::sync::atomic::Ordering::Relaxed),
                    });
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    };

    let per = args.rows_per_commit.max(1);
    let plan = Plan {
        rate: args.rate / per as f64,
        duration: Duration::from_secs(args.duration_secs),
        max_in_flight: 64,
    };
    eprintln!(
        "committing {} outbox rows/s ({} per transaction) for {} s, retention {} s",
        args.rate, per, args.duration_secs, args.retention_secs
    );
    let report = load::run(
        plan,
        |n| {
            let (pool, committed) = (pool.clone(), committed.clone());
            async move {
                let rows: Vec<_> = (0..per as u64)
                    .map(|i| dispatch_row(n * per as u64 + i))
                    .collect();
                let res = async {
                    let mut tx = pool.begin().await?;
                    enqueue(&mut tx, &rows).await?;
                    tx.commit().await
                }
                .await;
                match res {
                    Ok(()) => {
                        committed
                            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        Outcome::Accepted(String::new())
                    }
                    Err(_) => Outcome::Failed,
                }
            }
        },
        |s, second| {
            if s % 10 == 9 {
                let last = samples.lock().expect("samples").last().cloned();
                eprintln!(
                    "{:>4} s  {:>6.0} rows/s committed  outbox {} rows, {} unpublished",
                    s + 1,
                    second.accepted as f64 * per as f64,
                    last.as_ref().map_or(0, |l| l.rows),
                    last.as_ref().map_or(0, |l| l.unpublished),
                );
            }
        },
    )
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let (final_rows, final_unpublished) = sample(&pool).await?;
    shutdown.cancel();
    let _ = sampling.await;
    let _ = relaying.await;

    let committed = committed.load(std::sync::atomic::Ordering::Relaxed);
    let mut samples = samples.lock().expect("samples").clone();
    samples.push(Sample {
        at_s: elapsed,
        rows: final_rows,
        unpublished: final_unpublished,
        committed,
    });
    let purged = committed.saturating_sub(final_rows as u64);
    let published = committed.saturating_sub(final_unpublished as u64);
    let purging_for = (elapsed - args.retention_secs as f64).max(1.0);
    let bound_rows =
        (args.rate * (args.retention_secs + 2 * cfg.purge_interval_secs) as f64).ceil() as i64;
    let max_rows = samples.iter().map(|s| s.rows).max().unwrap_or(0);
    let out = OutboxBenchReport {
        rate: args.rate,
        duration_s: args.duration_secs,
        retention_s: args.retention_secs,
        purge_interval_s: cfg.purge_interval_secs,
        committed,
        committed_per_s: committed as f64 / elapsed,
        skipped_commits: report.skipped,
        commit_p50_ms: report.quantile_ms(0.5),
        commit_p99_ms: report.quantile_ms(0.99),
        published_per_s: published as f64 / elapsed,
        purged,
        purged_per_s: purged as f64 / purging_for,
        max_rows,
        final_rows,
        final_unpublished,
        bound_rows,
        // Behind by at most 5 s of rows: the relay keeps up too.
        bounded: final_rows <= bound_rows && (final_unpublished as f64) <= args.rate * 5.0,
        samples,
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&out)?)?;
    println!(
        "committed {} rows in {:.0} s ({:.0}/s, commit p50 {:.1} ms, p99 {:.1} ms, {} commits skipped)\n\
         published {:.0}/s; purged {} rows ({:.0}/s once rows were old enough)\n\
         outbox: at most {} rows, {} at the end ({} unpublished); bound {} → {}\n\
         report: {}",
        out.committed,
        elapsed,
        out.committed_per_s,
        out.commit_p50_ms,
        out.commit_p99_ms,
        out.skipped_commits,
        out.published_per_s,
        out.purged,
        out.purged_per_s,
        out.max_rows,
        out.final_rows,
        out.final_unpublished,
        out.bound_rows,
        if out.bounded {
            "bounded"
        } else {
            "NOT BOUNDED"
        },
        args.out.display()
    );
    drop(pool);
    drop(db);
    Ok(out)
}
