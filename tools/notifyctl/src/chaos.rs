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
    collections::{BTreeMap, HashMap},
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use common::{auth::Role, events::all_topics};
use devkit::{
    kafka::DevCluster, postgres::PostgresServer, process::Guarded, redis::RedisServer,
    smtp::SmtpSink,
};
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

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

/// The webhook endpoint: fails a share of requests (or all of them during an outage) with
/// 503 and counts what it accepted per `webhook-id` (the delivery).
#[derive(Default)]
struct Hooks {
    fail_percent: AtomicU32,
    outage: AtomicBool,
    received: Mutex<HashMap<String, u32>>,
    dice: Mutex<u64>,
}

impl Hooks {
    fn answer(&self, id: Option<&str>) -> axum::http::StatusCode {
        let fail = self.outage.load(Ordering::Relaxed) || {
            let mut x = self.dice.lock().expect("dice");
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x % 100 < u64::from(self.fail_percent.load(Ordering::Relaxed))
        };
        if fail {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        if let Some(id) = id {
            *self
                .received
                .lock()
                .expect("hooks")
                .entry(id.to_owned())
                .or_default() += 1;
        }
        axum::http::StatusCode::OK
    }

    fn start(self: &Arc<Self>) -> anyhow::Result<std::net::SocketAddr> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("chaos-hooks".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("hooks runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let app =
                        axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
                            let me = me.clone();
                            async move {
                                me.answer(headers.get("webhook-id").and_then(|v| v.to_str().ok()))
                            }
                        });
                    let _ = axum::serve(listener, app).await;
                });
            })?;
        Ok(addr)
    }
}

/// The services as processes, each restartable with its environment.
struct Fleet {
    logs: PathBuf,
    env: BTreeMap<&'static str, Vec<(String, String)>>,
    running: BTreeMap<&'static str, Guarded>,
    health: BTreeMap<&'static str, u16>,
}

const SERVICES: [&str; 5] = [
    "users-service",
    "notification-service",
    "workers",
    "repeater",
    "bff",
];

impl Fleet {
    fn start(&mut self, name: &'static str) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(crate::launcher::binary(name)?);
        cmd.arg("serve")
            .envs(self.env[name].iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = Guarded::spawn(name, cmd)?.with_grace(Duration::from_secs(20));
        self.running.insert(name, process);
        Ok(())
    }

    /// SIGKILL: no shutdown, no commit.
    fn kill(&mut self, name: &'static str) {
        if let Some(mut p) = self.running.remove(name) {
            p.kill();
        }
    }

    fn set_env(&mut self, key: &str, value: &str) {
        for env in self.env.values_mut() {
            for (k, v) in env.iter_mut() {
                if k == key {
                    *v = value.to_owned();
                }
            }
        }
    }

    /// Waits until `name`'s `/readyz` answers 200.
    async fn ready(&mut self, name: &'static str, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.health[name]);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + timeout;
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if let Some(p) = self.running.get_mut(name)
                && let Some(status) = p.try_wait()
            {
                anyhow::bail!(
                    "{name} exited ({status}); see {}",
                    self.logs.join(format!("{name}.log")).display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} not ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every consumer group the services use (no topic prefix here).
fn consumer_groups() -> Vec<String> {
    use common::events::{Channel, Lane, REPEATER_GROUP, worker_group};
    let mut groups = vec![
        REPEATER_GROUP.to_owned(),
        "notification-service.events".to_owned(),
        "users-service.events".to_owned(),
    ];
    for channel in Channel::ALL {
        for lane in Lane::ALL {
            groups.push(worker_group(channel, lane));
        }
    }
    groups
}

/// What the faults act on.
struct Rig {
    fleet: Fleet,
    pg: Option<PostgresServer>,
    redis: Option<RedisServer>,
    kafka: Option<DevCluster>,
    smtp: SmtpSink,
    hooks: Arc<Hooks>,
    failure_percent: u32,
    kills: u64,
    /// Deliveries whose send was in flight (claimed, not recorded) when a workers process was
    /// killed: the only ones a provider may get twice.
    in_flight_at_kills: std::collections::HashSet<String>,
}

impl Rig {
    /// SIGKILLs `name`. A workers process is frozen first (SIGSTOP) and the sends it had in
    /// flight — dedupe claims still `sending` in Redis — are noted before it dies.
    async fn kill(&mut self, name: &'static str) {
        if name == "workers"
            && let Some(process) = self.fleet.running.get_mut(name)
        {
            process.signal(libc::SIGSTOP);
            if let Some(url) = self.redis.as_ref().map(RedisServer::url) {
                match tokio::task::spawn_blocking(move || claims_in_flight(&url)).await {
                    Ok(Ok(ids)) => self.in_flight_at_kills.extend(ids),
                    Ok(Err(e)) => eprintln!("chaos: could not read the claims in flight: {e:#}"),
                    Err(e) => eprintln!("chaos: could not read the claims in flight: {e}"),
                }
            }
        }
        self.fleet.kill(name);
        self.kills += 1;
    }
}

/// Delivery ids whose dedupe claim (`notify:dispatch:<delivery>:<attempt>`) still says
/// `sending`.
fn claims_in_flight(url: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("notify:dispatch:*")
        .query(&mut conn)?;
    let mut out = Vec::new();
    for chunk in keys.chunks(1000) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut conn)?;
        for (key, value) in chunk.iter().zip(values) {
            if value.as_deref() == Some("sending")
                && let Some(id) = key.split(':').nth(2)
            {
                out.push(id.to_owned());
            }
        }
    }
    Ok(out)
}

fn run_migrations(fleet: &Fleet) -> anyhow::Result<()> {
    for name in ["users-service", "notification-service"] {
        let out = Command::new(crate::launcher::binary(name)?)
            .arg("migrate")
            .envs(
                fleet.env[name]
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{name} migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
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

    // Accounting.
    eprintln!("chaos: load done; waiting until every accepted notification is terminal …");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&notify_url)
        .await?;
    let ids: Vec<uuid::Uuid> = report
        .accepted
        .iter()
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    let settle_start = Instant::now();
    let settle_deadline = settle_start + Duration::from_secs(args.settle_secs);
    let terminal = loop {
        let terminal: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications n
             WHERE n.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id
                               AND d.status IN ('pending', 'queued', 'sending', 'retrying'))",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        if terminal as usize >= ids.len() || Instant::now() > settle_deadline {
            break terminal as u64;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settled_after_s = settle_start.elapsed().as_secs_f64();
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.status, count(*) FROM deliveries d WHERE d.notification_id = ANY($1) GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    let count = |s: &str| {
        counts
            .iter()
            .find(|(k, _)| k == s)
            .map_or(0, |(_, n)| *n as u64)
    };
    let sends_per_second: Vec<(f64, i64)> = sqlx::query_as(
        "SELECT extract(epoch FROM date_trunc('second', sent_at))::float8, count(*)
         FROM deliveries WHERE notification_id = ANY($1) AND sent_at IS NOT NULL GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;

    let rig = rig.lock().await;
    let mut per_delivery: HashMap<String, u32> = HashMap::new();
    for m in rig.smtp.mails() {
        let text = m.text();
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|rest| rest.split('.').next())
        {
            *per_delivery.entry(id.to_owned()).or_default() += 1;
        }
    }
    for (id, n) in rig.hooks.received.lock().expect("hooks").iter() {
        *per_delivery.entry(id.clone()).or_default() += *n;
    }
    let duplicates: u64 = per_delivery
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    let duplicates_unexplained = per_delivery
        .iter()
        .filter(|(id, n)| **n > 1 && !rig.in_flight_at_kills.contains(*id))
        .map(|(_, n)| u64::from(n - 1))
        .sum();
    // What the platform recorded about each delivery a provider got more than once: its
    // attempts and re-drives, to tell a kill's duplicate from a defect.
    let twice: Vec<uuid::Uuid> = per_delivery
        .iter()
        .filter(|(_, n)| **n > 1)
        .filter_map(|(id, _)| id.parse().ok())
        .take(100)
        .collect();
    let duplicated: Vec<(uuid::Uuid, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT d.id,
                COALESCE((SELECT json_agg(json_build_object('attempt', a.attempt, 'outcome', a.outcome,
                    'provider_message_id', a.provider_message_id, 'at', a.at) ORDER BY a.attempt)
                  FROM attempts a WHERE a.delivery_id = d.id), '[]'::json),
                COALESCE((SELECT json_agg(json_build_object('from', r.from_attempt, 'to', r.to_attempt,
                    'kind', r.kind, 'detail', r.detail, 'at', r.at) ORDER BY r.id)
                  FROM redrives r WHERE r.delivery_id = d.id), '[]'::json)
         FROM deliveries d WHERE d.id = ANY($1)",
    )
    .bind(&twice)
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    let duplicated: Vec<serde_json::Value> = duplicated
        .into_iter()
        .map(|(id, attempts, redrives)| {
            serde_json::json!({
                "delivery_id": id,
                "received": per_delivery.get(&id.to_string()).copied().unwrap_or(0),
                "in_flight_at_a_kill": rig.in_flight_at_kills.contains(&id.to_string()),
                "attempts": attempts,
                "redrives": redrives,
            })
        })
        .collect();

    let load_start_epoch = load_started.timestamp_millis() as f64 / 1000.0;
    // Deliveries sent in each second since the load started (by `sent_at`).
    let mut sent_by_second: Vec<u64> = Vec::new();
    for (t, n) in &sends_per_second {
        let rel = (t - load_start_epoch).floor();
        if rel >= 0.0 {
            let i = rel as usize;
            if sent_by_second.len() <= i {
                sent_by_second.resize(i + 1, 0);
            }
            sent_by_second[i] += *n as u64;
        }
    }
    // Seconds from a fault's end until a second sends at least half what the 10 s before
    // the fault sent per second (none when little was being sent before it).
    let recovered_after = |at: f64, lasted: f64| -> Option<f64> {
        let start = at.floor() as usize;
        let before: u64 = sent_by_second
            .iter()
            .skip(start.saturating_sub(10))
            .take(start.min(10))
            .sum();
        let before_rate = before as f64 / start.clamp(1, 10) as f64;
        if before_rate < 10.0 {
            return None;
        }
        let end = (at + lasted).ceil() as usize;
        sent_by_second
            .iter()
            .enumerate()
            .skip(end)
            .find(|(_, n)| **n as f64 >= before_rate / 2.0)
            .map(|(i, _)| (i - end) as f64)
    };
    let faults = fault_log
        .into_iter()
        .map(|(fault, at, lasted)| {
            let window = |from: f64, to: f64| -> (u64, u64, u64, f64) {
                let (mut acc, mut bad, mut n, mut max) = (0, 0, 0, 0.0f64);
                for (i, s) in report.seconds.iter().enumerate() {
                    let t = i as f64;
                    if t >= from.floor() && t < to.ceil().max(from.floor() + 1.0) {
                        acc += s.accepted;
                        bad += s.refused + s.failed + s.skipped;
                        n += 1;
                        max = max.max(s.max_ms);
                    }
                }
                (acc, bad, n.max(1), max)
            };
            let (acc, bad, secs, max) = window(at, at + lasted);
            let (before, _, before_secs, _) = window((at - 10.0).max(0.0), at);
            let sent: i64 = sends_per_second
                .iter()
                .filter(|(t, _)| {
                    let rel = t - load_start_epoch;
                    rel >= at.floor() && rel < (at + lasted).ceil().max(at.floor() + 1.0)
                })
                .map(|(_, n)| *n)
                .sum();
            FaultRecord {
                fault,
                at_s: at,
                lasted_s: lasted,
                accepted_per_s: acc as f64 / secs as f64,
                accepted_per_s_before: before as f64 / before_secs as f64,
                sent_per_s: sent as f64 / secs as f64,
                sent_recovered_after_s: recovered_after(at, lasted),
                refused: bad,
                max_accept_ms: max,
            }
        })
        .collect();
    let accepted = ids.len() as u64;
    let out = ChaosReport {
        rate: args.rate,
        duration_s: args.duration_secs,
        failure_percent: rig.failure_percent,
        accepted,
        refused: report.refused,
        unanswered: report.failed,
        skipped: report.skipped,
        terminal,
        lost: accepted - terminal.min(accepted),
        sent: count("sent"),
        dead: count("dead"),
        expired: count("expired"),
        duplicates,
        kills: rig.kills,
        in_flight_at_kills: rig.in_flight_at_kills.len() as u64,
        duplicates_unexplained,
        accept_p50_ms: report.quantile_ms(0.5),
        accept_p99_ms: report.quantile_ms(0.99),
        settled_after_s,
        faults,
        sent_by_second,
        duplicated,
    };
    std::fs::write(
        args.dir.join("report.json"),
        serde_json::to_vec_pretty(&out)?,
    )?;
    print_report(&out, &args.dir.join("report.json"));
    Ok(out)
}

/// The faults, spread over the load; returns (fault, start s, lasted s) for each.
async fn inject_faults(
    rig: Arc<tokio::sync::Mutex<Rig>>,
    duration: Duration,
    faults: Vec<String>,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let wants = |name: &str| faults.iter().any(|f| f == name || f == "all");
    let d = duration.as_secs_f64();
    let start = Instant::now();
    let at = |f: f64| start + Duration::from_secs_f64(d * f);
    let window = |f: f64, lo: f64, hi: f64| Duration::from_secs_f64((d * f).clamp(lo, hi));
    let mut log = Vec::new();
    let mut record = |name: String, began: Instant, ended: Instant| {
        log.push((
            name,
            (began - start).as_secs_f64(),
            (ended - began).as_secs_f64(),
        ));
    };

    for (i, name) in SERVICES.iter().enumerate() {
        if !wants("kills") && !wants(&format!("kill-{name}")) {
            continue;
        }
        {
            tokio::time::sleep_until(at(0.06 + 0.06 * i as f64)).await;
            let began = Instant::now();
            let mut r = rig.lock().await;
            r.kill(name).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            r.fleet.start(name)?;
            r.fleet.ready(name, Duration::from_secs(60)).await?;
            drop(r);
            record(
                format!("SIGKILL {name}, restarted after 2 s"),
                began,
                Instant::now(),
            );
        }
    }

    let broker_window = window(0.1, 5.0, 20.0);
    if wants("broker") {
        tokio::time::sleep_until(at(0.38)).await;
        let began = Instant::now();
        {
            // What a real cluster's controller does when a broker dies: its partitions get new
            // leaders among the in-sync replicas (the mock cluster would keep them leaderless).
            let r = rig.lock().await;
            let kafka = r.kafka.as_ref().unwrap();
            kafka.broker_down(2)?;
            kafka.move_leaders_off(2, &consumer_groups())?;
        }
        tokio::time::sleep(broker_window).await;
        rig.lock().await.kafka.as_ref().unwrap().broker_up(2)?;
        record(
            format!(
                "Kafka broker 2 down {:.0} s (its partitions and groups moved to the others)",
                broker_window.as_secs_f64()
            ),
            began,
            Instant::now(),
        );
    }

    if wants("brokers") {
        tokio::time::sleep_until(at(0.50)).await;
        let began = Instant::now();
        for b in 1..=3 {
            rig.lock().await.kafka.as_ref().unwrap().broker_down(b)?;
        }
        tokio::time::sleep(broker_window).await;
        for b in 1..=3 {
            rig.lock().await.kafka.as_ref().unwrap().broker_up(b)?;
        }
        record(
            format!(
                "all Kafka brokers down {:.0} s",
                broker_window.as_secs_f64()
            ),
            began,
            Instant::now(),
        );
    }

    if wants("postgres") {
        tokio::time::sleep_until(at(0.62)).await;
        let began = Instant::now();
        {
            let mut r = rig.lock().await;
            let mut pg = r.pg.take().unwrap();
            pg = tokio::task::spawn_blocking(move || pg.restart().map(|()| pg)).await??;
            r.pg = Some(pg);
        }
        record(
            "Postgres restarted (immediate shutdown)".into(),
            began,
            Instant::now(),
        );
    }

    if wants("redis") {
        tokio::time::sleep_until(at(0.70)).await;
        let began = Instant::now();
        {
            let mut r = rig.lock().await;
            let mut redis = r.redis.take().unwrap();
            redis = tokio::task::spawn_blocking(move || {
                redis.stop();
                std::thread::sleep(Duration::from_secs(1));
                redis.restart().map(|()| redis)
            })
            .await??;
            r.redis = Some(redis);
        }
        record(
            "Redis SIGKILLed, restarted from its append-only file after 1 s".into(),
            began,
            Instant::now(),
        );
    }

    let outage = window(0.15, 5.0, 30.0);
    if wants("providers") {
        tokio::time::sleep_until(at(0.76)).await;
        let began = Instant::now();
        {
            let r = rig.lock().await;
            r.smtp.set_mode(devkit::smtp::Mode::FailTransient(u32::MAX));
            r.hooks.outage.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(outage).await;
        {
            let r = rig.lock().await;
            r.smtp.set_mode(devkit::smtp::Mode::FailRandomly {
                percent: r.failure_percent,
            });
            r.hooks.outage.store(false, Ordering::Relaxed);
        }
        record(
            format!(
                "both providers failing everything {:.0} s",
                outage.as_secs_f64()
            ),
            began,
            Instant::now(),
        );
    }

    if wants("replace") {
        tokio::time::sleep_until(at(0.93)).await;
        let began = Instant::now();
        {
            let mut r = rig.lock().await;
            for name in SERVICES {
                r.kill(name).await;
            }
            drop(r.kafka.take());
            let kafka = DevCluster::start(&all_topics(), 3)?;
            let bootstrap = kafka.bootstrap_servers().to_owned();
            r.kafka = Some(kafka);
            r.fleet
                .set_env("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", &bootstrap);
            for name in SERVICES {
                r.fleet.start(name)?;
            }
            for name in SERVICES {
                r.fleet.ready(name, Duration::from_secs(60)).await?;
            }
        }
        record(
            "Kafka cluster replaced by an empty one (every service killed and restarted on it)"
                .into(),
            began,
            Instant::now(),
        );
    }

    Ok(log)
}

fn print_report(r: &ChaosReport, path: &Path) {
    println!();
    println!(
        "{:<86} {:>7} {:>7} {:>9} {:>9} {:>8} {:>10} {:>9}",
        "fault", "at s", "lasted", "acc/s", "acc/s pre", "sent/s", "sends back", "refused"
    );
    for f in &r.faults {
        println!(
            "{:<86} {:>7.1} {:>7.1} {:>9.1} {:>9.1} {:>8.1} {:>10} {:>9}",
            f.fault,
            f.at_s,
            f.lasted_s,
            f.accepted_per_s,
            f.accepted_per_s_before,
            f.sent_per_s,
            f.sent_recovered_after_s
                .map_or_else(|| "-".to_owned(), |s| format!("+{s:.0} s")),
            f.refused
        );
    }
    println!();
    println!(
        "accepted {}  terminal {}  LOST {}  (sent {}, dead {}, expired {})",
        r.accepted, r.terminal, r.lost, r.sent, r.dead, r.expired
    );
    println!(
        "duplicates {} (kills {}, sends in flight at the workers' kills {}; duplicates not in flight at a kill: {})",
        r.duplicates, r.kills, r.in_flight_at_kills, r.duplicates_unexplained
    );
    println!(
        "refused {}  unanswered {}  skipped {}  accept p50 {:.1} ms  p99 {:.1} ms  settled {:.0} s after the load",
        r.refused, r.unanswered, r.skipped, r.accept_p50_ms, r.accept_p99_ms, r.settled_after_s
    );
    println!(
        "the guarantee {}; report: {}",
        if r.holds() { "HOLDS" } else { "DOES NOT HOLD" },
        path.display()
    );
}
