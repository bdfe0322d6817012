//! `notifyctl chaos` (`make chaos`): the delivery guarantee, measured.
//!
//! Runs the real service binaries against infrastructure of its own that it can break — a
//! Postgres made with `initdb` on a reserved port, its own Redis, the Kafka mock cluster —
//! drives open-loop load at them (half emails to an SMTP sink, half webhooks to an HTTP sink,
//! both failing a share of requests transiently), and injects faults in turn: each service
//! SIGKILLed and restarted, one broker down, all brokers down, Postgres restarted (immediate
//! shutdown), Redis SIGKILLed and restarted from its append-only file, both providers failing everything for a while, and the
//! whole Kafka cluster replaced by an empty one with a backlog in the old one.
//!
//! Then it waits until every accepted notification is terminal and accounts: accepted,
//! terminal, **lost = accepted − terminal** (must be 0), and duplicates at the providers (the
//! same delivery received twice; bounded by the kills: a send the provider accepted right
//! before its worker died is sent again). It prints a table and writes it as JSON.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicU32},
    time::Duration,
};

use common::{auth::Role, events::all_topics};
use devkit::{kafka::DevCluster, postgres::PostgresServer, redis::RedisServer, smtp::SmtpSink};
use rand::Rng;
use serde::Serialize;

mod account;
mod faults;
mod rig;

use faults::inject_faults;
use rig::{Fleet, Hooks, Rig, SERVICES, run_migrations};

use crate::load::{self, Plan};

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Notifications accepted per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// How long the load runs, in seconds; the faults are spread over it.
    #[arg(long, default_value_t = 180)]
    pub duration_secs: u64,
    /// Share of provider requests that fail transiently, in percent.
    #[arg(long, default_value_t = 30)]
    pub failure_percent: u32,
    /// How long to wait after the load for every accepted notification to be terminal.
    #[arg(long, default_value_t = 600)]
    pub settle_secs: u64,
    /// Which faults to inject (comma-separated): kills (or kill-<service> for one), broker,
    /// brokers, postgres, redis, providers, replace — or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub faults: Vec<String>,
    /// The services' `RUST_LOG`.
    #[arg(long, default_value = "warn,librdkafka=error")]
    pub log_filter: String,
    /// Logs of the services and the report go here.
    #[arg(long, default_value = ".dev/chaos")]
    pub dir: PathBuf,
}

/// One injected fault and what the platform did meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub fault: String,
    /// Seconds into the load.
    pub at_s: f64,
    pub lasted_s: f64,
    /// Notifications accepted per second during the fault, and in the 10 s before it.
    pub accepted_per_s: f64,
    pub accepted_per_s_before: f64,
    /// Deliveries sent per second during the fault (by their `sent_at`).
    pub sent_per_s: f64,
    /// Seconds from the fault's end until sending was back to at least half its rate before
    /// the fault (`None`: it was not, or little was being sent before).
    pub sent_recovered_after_s: Option<f64>,
    /// Requests refused or unanswered during the fault.
    pub refused: u64,
    /// The slowest accepted request due during the fault, ms.
    pub max_accept_ms: f64,
}

/// The run's accounting.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub rate: f64,
    pub duration_s: u64,
    pub failure_percent: u32,
    pub accepted: u64,
    pub refused: u64,
    pub unanswered: u64,
    pub skipped: u64,
    pub terminal: u64,
    pub lost: u64,
    pub sent: u64,
    pub dead: u64,
    pub expired: u64,
    pub duplicates: u64,
    pub kills: u64,
    /// Sends in flight (claimed in Redis, outcome not recorded) when a workers process was
    /// killed: each may reach its provider twice.
    pub in_flight_at_kills: u64,
    /// Duplicated deliveries whose send was *not* in flight at a kill: each is a defect.
    pub duplicates_unexplained: u64,
    pub accept_p50_ms: f64,
    pub accept_p99_ms: f64,
    pub settled_after_s: f64,
    pub faults: Vec<FaultRecord>,
    /// Deliveries sent in each second since the load started (by `sent_at`).
    pub sent_by_second: Vec<u64>,
    /// Deliveries a provider received more than once (at most 100), with their attempts and
    /// re-drives.
    pub duplicated: Vec<serde_json::Value>,
}

impl ChaosReport {
    /// The guarantee: nothing lost, and a provider got a delivery twice only where a worker
    /// was killed while sending it.
    pub fn holds(&self) -> bool {
        self.lost == 0 && self.duplicates_unexplained == 0
    }
}

/// The chaos run; returns its report (also written to `<dir>/report.json`).
pub fn run(args: ChaosArgs) -> anyhow::Result<ChaosReport> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            // Ctrl-C drops the run: its Postgres, Redis, Kafka and services are stopped by
            // their owners (a Postgres started with pg_ctl would otherwise outlive us).
            tokio::select! {
                r = run_async(args) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; everything it started is stopped"),
            }
        })
}

async fn run_async(args: ChaosArgs) -> anyhow::Result<ChaosReport> {
    let logs = args.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    eprintln!("chaos: starting Postgres (initdb), Redis, Kafka (3 brokers), the provider sinks …");
    let pg = tokio::task::spawn_blocking(PostgresServer::start).await??;
    let redis = tokio::task::spawn_blocking(RedisServer::start_persistent).await??;
    let kafka = DevCluster::start(&all_topics(), 3)?;
    let smtp = SmtpSink::start(0, None)?;
    smtp.set_mode(devkit::smtp::Mode::FailRandomly {
        percent: args.failure_percent,
    });
    let hooks = Arc::new(Hooks {
        fail_percent: AtomicU32::new(args.failure_percent),
        dice: Mutex::new(0x9E37_79B9_7F4A_7C15),
        ..Hooks::default()
    });
    let hooks_addr = hooks.start()?;

    let (secret, jwt) = crate::launcher::dev_signing_key();
    let port = devkit::free_port;
    let health: BTreeMap<&'static str, u16> = SERVICES.iter().map(|s| (*s, port())).collect();
    let base = vec![
        ("NOTIFY_JWT__SECRET".to_owned(), secret),
        (
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
            kafka.bootstrap_servers().to_owned(),
        ),
        ("NOTIFY_REDIS__URL".to_owned(), redis.url()),
        ("RUST_LOG".to_owned(), args.log_filter.clone()),
    ];
    let with = |name: &'static str, extra: &[(&str, String)]| {
        let mut env = base.clone();
        env.push((
            "NOTIFY_HTTP__LISTEN".to_owned(),
            format!("127.0.0.1:{}", health[name]),
        ));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let webhook_secret = {
        use base64::Engine as _;
        let bytes: [u8; 24] = rand::rng().random();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let env = BTreeMap::from([
        (
            "users-service",
            with(
                "users-service",
                &[("NOTIFY_DATABASE__URL", format!("{}/users", pg.url()))],
            ),
        ),
        (
            "notification-service",
            with(
                "notification-service",
                &[
                    ("NOTIFY_DATABASE__URL", format!("{}/notify", pg.url())),
                    (
                        "NOTIFY_USERS__BASE_URL",
                        format!("http://127.0.0.1:{}", health["users-service"]),
                    ),
                    (
                        "NOTIFY_PLANNING__ENABLED_CHANNELS",
                        "[email,webhook]".into(),
                    ),
                    ("NOTIFY_RELAY__POLL_INTERVAL_MS", "100".into()),
                    ("NOTIFY_WELCOME__ENABLED", "false".into()),
                ],
            ),
        ),
        (
            "workers",
            with(
                "workers",
                &[
                    ("NOTIFY_CHANNELS", "[email,webhook]".into()),
                    ("NOTIFY_EMAIL__SMTP_URL", smtp.url()),
                    ("NOTIFY_WEBHOOK__SECRET", webhook_secret),
                    ("NOTIFY_WEBHOOK__ALLOW_LOOPBACK", "true".into()),
                    ("NOTIFY_CLAIM_TTL_SECS", "5".into()),
                ],
            ),
        ),
        (
            "repeater",
            with(
                "repeater",
                &[
                    ("NOTIFY_DATABASE__URL", format!("{}/notify", pg.url())),
                    // Quick retries: a 30 % failure rate needs some, and the run must end.
                    ("NOTIFY_RETRY__SCHEDULE_SECS", "[1,2,4,8,15,30]".into()),
                    ("NOTIFY_STUCK__INTERVAL_SECS", "5".into()),
                    ("NOTIFY_STUCK__VISIBILITY_TIMEOUT_SECS", "20".into()),
                ],
            ),
        ),
        (
            "bff",
            with(
                "bff",
                &[
                    (
                        "NOTIFY_UPSTREAMS__USERS_URL",
                        format!("http://127.0.0.1:{}", health["users-service"]),
                    ),
                    (
                        "NOTIFY_UPSTREAMS__NOTIFICATIONS_URL",
                        format!("http://127.0.0.1:{}", health["notification-service"]),
                    ),
                    // One principal sends everything; its rate is the test's to choose.
                    ("NOTIFY_RATE_LIMITS__ENABLED", "false".into()),
                ],
            ),
        ),
    ]);
    let mut fleet = Fleet {
        logs: logs.clone(),
        env,
        running: BTreeMap::new(),
        health,
    };
    eprintln!("chaos: migrating, starting the services …");
    tokio::task::block_in_place(|| run_migrations(&fleet))?;
    for name in SERVICES {
        fleet.start(name)?;
    }
    for name in SERVICES {
        fleet.ready(name, Duration::from_secs(60)).await?;
    }
    let rig = Arc::new(tokio::sync::Mutex::new(Rig {
        fleet,
        pg: Some(pg),
        redis: Some(redis),
        kafka: Some(kafka),
        smtp,
        hooks: hooks.clone(),
        failure_percent: args.failure_percent,
        kills: 0,
        in_flight_at_kills: Default::default(),
    }));
    let notify_url = format!("{}/notify", rig.lock().await.pg.as_ref().unwrap().url());
    let bff_port = rig.lock().await.fleet.health["bff"];

    // The load.
    let token = common::auth::mint_hs256(&jwt, "chaos", Role::Service, 86_400)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()?;
    let duration = Duration::from_secs(args.duration_secs);
    let plan = Plan {
        rate: args.rate,
        duration,
        max_in_flight: 2_000,
    };
    let hook_url = format!("http://{hooks_addr}/hook");
    let request = move |n: u64| {
        let (http, token, hook_url) = (http.clone(), token.clone(), hook_url.clone());
        async move {
            let recipient = if n.is_multiple_of(2) {
                serde_json::json!({ "email": format!("c{n}@chaos.test") })
            } else {
                serde_json::json!({ "webhook": { "url": hook_url } })
            };
            load::post_notification(
                &http,
                &format!("http://127.0.0.1:{bff_port}/v1/notifications"),
                &token,
                &serde_json::json!({
                    "recipients": [recipient], "category": "chaos",
                    "content": { "subject": "chaos", "text": format!("message {n}") }
                }),
            )
            .await
        }
    };
    let load_started = chrono::Utc::now();
    let faults = tokio::spawn(inject_faults(rig.clone(), duration, args.faults.clone()));
    eprintln!(
        "chaos: {:.0} notifications/s for {} s, {} % of provider requests failing, faults in turn",
        args.rate, args.duration_secs, args.failure_percent
    );
    let report = load::run(plan, request, |s, sec| {
        eprintln!(
            "  {s:>4} s  accepted {:>5}  refused {:>4}  unanswered {:>4}  slowest {:>7.1} ms",
            sec.accepted,
            sec.refused,
            sec.failed + sec.skipped,
            sec.max_ms
        );
    })
    .await;
    let fault_log = faults.await??;

    account::account(&args, &rig, &report, fault_log, load_started, &notify_url).await
}
