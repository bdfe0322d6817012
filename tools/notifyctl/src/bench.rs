//! `notifyctl bench` (`make bench`): the standard scenarios against a fresh release stack.
//!
//! Measures pgbench's durable single-row insert rate first (the baseline every intake figure
//! is quoted against, from the same run), starts the whole stack as `notifyctl up` does — two
//! bff behind nginx, rate limits off, sinks that answer without recording, fresh `bench_*`
//! databases — runs each scenario of [`crate::scenario`] in turn and writes every result, the
//! baseline and `report.html` to `--out`.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::Context;

use crate::{
    launcher::{self, UpArgs},
    scenario::{self, LoadArgs, LoadChannel, Scenario, ScenarioResult},
};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Where the results and the report go.
    #[arg(long, default_value = ".dev/bench")]
    pub out: PathBuf,
    /// Which scenarios (comma-separated): intake-paused, intake, e2e-webhook, e2e-email,
    /// e2e-sms, e2e-push, fanout, batch, urgent-under-bulk, topic — or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub scenarios: Vec<String>,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Requests per second for the intake scenarios.
    #[arg(long, default_value_t = 2_000.0)]
    pub intake_rate: f64,
    /// Requests per second for the single-recipient end-to-end scenarios.
    #[arg(long, default_value_t = 500.0)]
    pub e2e_rate: f64,
    /// 1,000-recipient requests per second for `fanout`.
    #[arg(long, default_value_t = 2.0)]
    pub fanout_rate: f64,
    /// Batch requests per second for `batch` (each `--batch-size` single-recipient
    /// notifications).
    #[arg(long, default_value_t = 20.0)]
    pub batch_rate: f64,
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Bulk deliveries queued before the urgent ones in `urgent-under-bulk`.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: u64,
    /// The topic's subscribers in `topic` (each an SMS delivery).
    #[arg(long, default_value_t = 1_000_000)]
    pub subscribers: u64,
    /// `topic`: wait until every delivery of the topic send was sent (a million SMS take
    /// minutes to drain); off: account the urgent sends only.
    #[arg(long)]
    pub topic_drain: bool,
    /// Seconds of pgbench for the baseline (0: skip it).
    #[arg(long, default_value_t = 20)]
    pub pgbench_secs: u64,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    /// Partitions per topic of the stack's embedded Kafka. It keeps at most 5 MiB each (a
    /// larger backlog loses messages from the log, re-driven by the stuck scan), but more
    /// partitions cost the mock cluster, which shares the two cores, much more CPU: 12 made
    /// every scenario slower (docs/benchmarks.md).
    #[arg(long, default_value_t = 3)]
    pub kafka_partitions: i32,
}

pub use crate::report::Baseline;

const ALL: [&str; 10] = [
    "intake-paused",
    "intake",
    "e2e-webhook",
    "e2e-email",
    "e2e-sms",
    "e2e-push",
    "fanout",
    "batch",
    "urgent-under-bulk",
    "topic",
];

/// The settings of a benchmark's own stack under `out` (databases `bench_*`, rate limits and
/// recording off, no Prometheus: the figures are the platform's), with what an interrupted
/// run left (its databases and Redis keys) removed first.
pub(crate) fn bench_stack(out: &std::path::Path, postgres: &str) -> anyhow::Result<UpArgs> {
    for db in ["bench_users", "bench_notify"] {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        )?;
    }
    let up = UpArgs {
        port: devkit::free_port(),
        grpc_port: devkit::free_port(),
        dir: out.join("stack"),
        postgres: postgres.to_owned(),
        smtp_port: 0,
        db_prefix: "bench_".into(),
        no_rate_limits: true,
        no_recording: true,
        no_prometheus: true,
        ..UpArgs::defaults()
    };
    launcher::forget_redis_keys(&up.redis, &launcher::redis_prefix(&up.db_prefix))?;
    Ok(up)
}

fn psql(db: &str, sql: &str) -> anyhow::Result<()> {
    psql_output(db, sql).map(drop)
}

/// Runs `sql` in `db` as `postgres`; its output.
fn psql_output(db: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qAt",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .context("running psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Seconds between the bench's `ANALYZE` rounds when the server's autovacuum is off (a
/// `VACUUM` every sixth).
const VACUUM_EVERY: Duration = Duration::from_secs(10);

/// Stands in for autovacuum on `dbs` while the server runs with `autovacuum = off` (this
/// machine's Postgres does, for its tests; no production server does). Without it the bench's
/// fresh tables are never analyzed, and the plans that prepared statements cached while they
/// were nearly empty — sequential scans — are kept as they grow to hundreds of thousands of
/// rows: measured with `pg_stat_statements`, the repeater's two statements per batch touched
/// ~1,900 buffers each and took 87 % of Postgres' time (docs/benchmarks.md). An `ANALYZE`
/// invalidates those plans, as autovacuum's does on a real server.
async fn stand_in_for_autovacuum(
    dbs: [&'static str; 2],
    stop: tokio_util::sync::CancellationToken,
) {
    let run = |db: &'static str, sql: &'static str| {
        tokio::task::spawn_blocking(move || psql_output(db, sql))
    };
    match run("postgres", "SHOW autovacuum").await {
        Ok(Ok(setting)) if setting == "off" => {
            eprintln!(
                "bench: the server's autovacuum is off; the bench runs ANALYZE on its databases every {} s and VACUUM every {} s instead",
                VACUUM_EVERY.as_secs(),
                VACUUM_EVERY.as_secs() * 6
            );
        }
        _ => return,
    }
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(VACUUM_EVERY) => {}
        }
        // ANALYZE every round (it samples: cheap), VACUUM every sixth, as autovacuum's one
        // minute naptime would: vacuuming tables of a million changing rows every 10 s took a
        // good part of Postgres away from what was measured (docs/benchmarks.md, issue 30).
        round += 1;
        let sql = if round.is_multiple_of(6) {
            "VACUUM (ANALYZE)"
        } else {
            "ANALYZE"
        };
        for db in dbs {
            if let Ok(Err(e)) = run(db, sql).await {
                eprintln!("  vacuum {db}: {e:#}");
            }
        }
    }
}

/// One ~300-byte jsonb row inserted per transaction, 8 clients on 2 threads.
pub fn pgbench(secs: u64, dir: &std::path::Path) -> anyhow::Result<Baseline> {
    psql(
        "postgres",
        "DROP DATABASE IF EXISTS bench_pgbench WITH (FORCE)",
    )?;
    psql("postgres", "CREATE DATABASE bench_pgbench")?;
    psql(
        "bench_pgbench",
        "CREATE TABLE t (id bigserial PRIMARY KEY, body jsonb NOT NULL)",
    )?;
    let script = dir.join("pgbench-insert.sql");
    let row = serde_json::json!({
        "recipients": [{ "email": "someone@example.com" }], "category": "bench", "priority": "normal",
        "content": { "subject": "Your order has shipped", "text": "Order 123456 is on its way and should arrive on Thursday. Track it in the app." },
        "created_by": "billing"
    });
    std::fs::write(
        &script,
        format!("INSERT INTO t (body) VALUES ('{row}'::jsonb);\n"),
    )?;
    let args = [
        "-n",
        "-c8",
        "-j2",
        "-T",
        &secs.to_string(),
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-f",
        &script.display().to_string(),
        "bench_pgbench",
    ]
    .map(str::to_owned);
    let out = Command::new("pgbench")
        .args(&args)
        .output()
        .context("running pgbench (Debian: postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .context("no tps in pgbench's output")?;
    let _ = psql(
        "postgres",
        "DROP DATABASE IF EXISTS bench_pgbench WITH (FORCE)",
    );
    Ok(Baseline {
        tps,
        command: format!("pgbench {}", args.join(" ")),
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<Vec<ScenarioResult>> {
    let wanted: Vec<&str> = if args.scenarios.iter().any(|s| s == "all") {
        ALL.to_vec()
    } else {
        for s in &args.scenarios {
            anyhow::ensure!(
                ALL.contains(&s.as_str()),
                "unknown scenario {s}; one of {ALL:?}"
            );
        }
        ALL.iter()
            .copied()
            .filter(|a| args.scenarios.iter().any(|s| s == a))
            .collect()
    };
    let out = std::path::absolute(&args.out)?;
    // A fresh report: results of an earlier run would mix in.
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;

    if args.pgbench_secs > 0 {
        eprintln!(
            "bench: pgbench baseline ({} s, -c8 -j2, one ~300-byte jsonb insert per transaction) …",
            args.pgbench_secs
        );
        let baseline = pgbench(args.pgbench_secs, &out)?;
        eprintln!("  {:.0} tps", baseline.tps);
        std::fs::write(
            out.join("pgbench.json"),
            serde_json::to_vec_pretty(&baseline)?,
        )?;
    }

    let up = UpArgs {
        kafka_partitions: args.kafka_partitions,
        ..bench_stack(&out, &args.postgres)?
    };
    eprintln!("bench: starting the stack (release build, rate limits off) …");
    let running = launcher::start(&up)?;
    eprintln!(
        "  up at {} ({} bff behind {})",
        running.stack.url,
        running.bff_count,
        if running.nginx { "nginx" } else { "nothing" }
    );
    let load = |name: &str| -> LoadArgs {
        let (scenario, channel, rate, recipients, pause) = match name {
            // Intake on webhooks: accepting costs the same on every channel, and the fastest
            // provider drains what was accepted before the next scenario.
            "intake-paused" => (
                Scenario::Intake,
                LoadChannel::Webhook,
                args.intake_rate,
                1,
                true,
            ),
            "intake" => (
                Scenario::Intake,
                LoadChannel::Webhook,
                args.intake_rate,
                1,
                false,
            ),
            "e2e-webhook" => (Scenario::E2e, LoadChannel::Webhook, args.e2e_rate, 1, false),
            "e2e-email" => (Scenario::E2e, LoadChannel::Email, args.e2e_rate, 1, false),
            "e2e-sms" => (Scenario::E2e, LoadChannel::Sms, args.e2e_rate, 1, false),
            "e2e-push" => (Scenario::E2e, LoadChannel::Push, args.e2e_rate, 1, false),
            "batch" => (
                Scenario::Batch,
                LoadChannel::Webhook,
                args.batch_rate,
                1,
                false,
            ),
            "fanout" => (
                Scenario::Fanout,
                LoadChannel::Webhook,
                args.fanout_rate,
                1_000,
                false,
            ),
            // Urgent SMS while a topic's SMS drain.
            "topic" => (Scenario::Topic, LoadChannel::Sms, 20.0, 1, false),
            _ => (
                Scenario::UrgentUnderBulk,
                LoadChannel::Webhook,
                20.0,
                1,
                false,
            ),
        };
        LoadArgs {
            scenario,
            channel,
            rate,
            duration_secs: args.duration_secs,
            recipients: Some(recipients),
            backlog: if name == "topic" {
                args.subscribers
            } else {
                args.backlog
            },
            batch_size: args.batch_size,
            pause_workers: pause,
            settle_secs: if name == "topic" { 1_800 } else { 600 },
            skip_drain: name == "topic" && !args.topic_drain,
            max_in_flight: 4_000,
            name: Some(name.to_owned()),
            stack: running.stack_path.clone(),
            out: out.clone(),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    let vacuum_stop = tokio_util::sync::CancellationToken::new();
    let vacuuming = rt.spawn(stand_in_for_autovacuum(
        ["bench_notify", "bench_users"],
        vacuum_stop.clone(),
    ));
    let outcome = rt.block_on(async {
        for name in &wanted {
            eprintln!("bench: {name}");
            let load_args = load(name);
            let r = tokio::select! {
                r = scenario::run_async(&load_args, false) => r?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the stack is stopped"),
            };
            eprint!("{}", scenario::summary(&r));
            results.push(r);
            // Let the stack go quiet (purge, retries) before the next scenario.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Ok(())
    });
    vacuum_stop.cancel();
    let _ = rt.block_on(vacuuming);
    eprintln!("bench: stopping the stack …");
    running.stop();
    // Its workers' dedupe keys (two per delivery, kept 7 days) would fill the shared Redis.
    if let Err(e) = launcher::forget_redis_keys(&up.redis, &launcher::redis_prefix(&up.db_prefix)) {
        eprintln!("bench: {e:#}");
    }
    outcome?;
    crate::report::write_dir(&out)?;
    let html = out.join("report.html");
    if let Some(png) = crate::report::png(&out.join("main.svg"), &out.join("main.png")) {
        eprintln!("bench: main plot as PNG: {}", png.display());
    }
    eprintln!("bench: report at {}", html.display());
    Ok(results)
}
