//! End-to-end harness: the real services, in-process on port 0, against the real Postgres,
//! Redis, the Kafka mock cluster (TCP), an SMTP catcher and optionally Debian's nginx in
//! front of several bff instances. Every stack has its own databases, topic prefix and Redis
//! key prefix, so tests run in parallel without seeing each other.
//!
//! [`Stack::start`] returns once every service answers `/readyz` — which includes every Kafka
//! consumer having joined its group, so a message sent right after start is consumed at once.
//! Dropping the stack (at the end of a test, or while a failed assertion unwinds) stops every
//! service and waits for them, then stops nginx, drops the two databases and deletes the
//! stack's Redis keys: a test leaves no process, port or database behind. Tests using it must
//! run on a multi-threaded runtime (`#[tokio::test(flavor = "multi_thread")]`): the drop waits
//! for the services on the runtime's other threads.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use common::{
    auth::JwtConfig, db::DatabaseConfig, events::all_topics, http::HttpConfig, kafka::KafkaConfig,
    redis::RedisConfig,
};
use devkit::{
    kafka::DevCluster,
    nginx::{Nginx, PerIpLimit},
    pg::TestDatabase,
    redis::TestPrefix,
    smtp::SmtpSink,
    tasks::TaskGroup,
};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

mod calls;
mod fixtures;

use fixtures::counting_proxy;
pub use fixtures::{alg_none_token, base64url, fcm_config, sms_config};

/// How long [`Stack::start`] waits for every service to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long dropping a stack waits for its services to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    pub bff_instances: usize,
    pub nginx: bool,
    /// The repeater's retry schedule (seconds).
    pub retry_schedule: Vec<f64>,
    /// ± fraction of jitter on each retry delay (default 0: exact delays).
    pub retry_jitter: f64,
    /// The repeater's stuck-delivery scan (tests: every 0.5 s, 3 s visibility timeout).
    pub stuck: repeater::stuck::StuckConfig,
    /// The bff's per-principal limits.
    pub rate_limits: bff::config::RateLimitConfig,
    /// JWT settings of every service (default: HS256 with the dev secret).
    pub jwt: JwtConfig,
    /// PEM private key that [`Stack::token`] signs with when `jwt.algorithm` is not HS256.
    pub signing_key_pem: Option<String>,
    /// Send the welcome notification on registration.
    pub welcome: bool,
    /// The channels notification-service plans for (default: email, the one with a worker).
    pub enabled_channels: Vec<common::events::Channel>,
    /// The workers' settings (channels, providers); its address, Kafka, Redis and SMTP URL
    /// are the stack's.
    pub workers: workers::Config,
    /// Another Redis server for every service (a test's own, to take it down); default: the
    /// machine's, with a key prefix per stack.
    pub redis_url: Option<String>,
    /// nginx's per-IP limit (default: production's).
    pub nginx_per_ip: PerIpLimit,
    /// Extra librdkafka properties for every service's clients (e.g. a smaller
    /// `message.max.bytes`).
    pub kafka_properties: std::collections::BTreeMap<String, String>,
    /// notification-service's outbox relay (default: polls every 100 ms).
    pub relay: common::outbox::RelayConfig,
    /// What each service may send (default here: everything, for every subject — tests that
    /// are about permissions set their own).
    pub permissions: notification_service::permissions::PermissionsConfig,
    /// notification-service's delivery receipts (default: none taken).
    pub receipts: notification_service::routes::receipts::ReceiptsConfig,
    /// notification-service's bounce reports (default: none taken).
    pub bounces: notification_service::routes::bounces::BouncesConfig,
    /// users-service's Telegram bot (default: none).
    pub telegram: users_service::routes::telegram::TelegramConfig,
    /// Run notification-service as a child process (the `notification-service` binary beside
    /// the test's, which `make test` builds) instead of in this process, with these extra
    /// `NOTIFY_…` variables: a test can SIGKILL it ([`Stack::kill_notification_service`]) and
    /// start it again. Its permissions are the binary's defaults (any ordinary category), not
    /// [`Options::permissions`]. `None` (default): in process.
    pub notification_service_process: Option<Vec<(String, String)>>,
    /// How sends to topics are fanned out (in process; a process takes `NOTIFY_FANOUT__…`).
    pub fanout: notification_service::fanout::FanoutConfig,
    /// The bff's inbox streams (caps, heartbeats).
    pub inbox_streams: bff::inbox_stream::StreamConfig,
}

impl Default for Options {
    fn default() -> Self {
        let generous = bff::config::Limit {
            requests: 100_000,
            period_secs: 60,
        };
        Self {
            bff_instances: 1,
            nginx: false,
            retry_schedule: vec![0.5, 0.5],
            retry_jitter: 0.0,
            stuck: repeater::stuck::StuckConfig {
                enabled: true,
                interval_secs: 0.5,
                visibility_timeout_secs: 3.0,
                batch_size: 500,
                ..Default::default()
            },
            rate_limits: bff::config::RateLimitConfig {
                enabled: true,
                user: generous,
                service: generous,
                admin: generous,
            },
            jwt: JwtConfig::with_random_secret(),
            signing_key_pem: None,
            welcome: true,
            enabled_channels: vec![common::events::Channel::Email],
            workers: workers::Config::default(),
            redis_url: None,
            nginx_per_ip: PerIpLimit::default(),
            kafka_properties: Default::default(),
            relay: common::outbox::RelayConfig {
                poll_interval_ms: 100,
                ..Default::default()
            },
            permissions: notification_service::permissions::PermissionsConfig {
                default: notification_service::permissions::Grant::everything(),
                ..Default::default()
            },
            receipts: Default::default(),
            bounces: Default::default(),
            telegram: Default::default(),
            notification_service_process: None,
            fanout: Default::default(),
            inbox_streams: Default::default(),
        }
    }
}

/// notification-service as a child process ([`Options::notification_service_process`]).
struct NotifyProcess {
    env: Vec<(String, String)>,
    child: Option<devkit::process::Guarded>,
}

impl NotifyProcess {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let bin = exe
            .parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("notification-service"))
            .filter(|b| b.exists())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the notification-service binary is missing beside {}: run `cargo build --workspace --bins`",
                    exe.display()
                )
            })?;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        self.child = Some(devkit::process::Guarded::spawn(
            "notification-service",
            cmd,
        )?);
        Ok(())
    }
}

/// One bff instance.
pub struct Bff {
    pub addr: SocketAddr,
    /// Its `/metrics` (`http.metrics_listen`: never on the public port).
    pub metrics_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The services of a stack, for [`Stack::metrics`] and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Users,
    Notifications,
    Workers,
    Repeater,
    /// The first bff instance (its metrics port; its API is [`Stack::url`]).
    Bff,
}

/// A running platform.
pub struct Stack {
    /// The services running in this process (not the bff instances, stopped one by one).
    services: TaskGroup,
    /// Dropped last, and only once every service has stopped (see `Drop`).
    kafka: Option<DevCluster>,
    pub smtp: SmtpSink,
    pub jwt: JwtConfig,
    signing_key_pem: Option<String>,
    pub kafka_cfg: KafkaConfig,
    /// The Redis settings (URL, key prefix) every service of this stack uses.
    pub redis: RedisConfig,
    /// Calls notification-service made to users-service's batch profile endpoint.
    pub profile_lookups: Arc<AtomicUsize>,
    /// While set, users-service is unreachable for notification-service (its proxy answers
    /// 502, as a load balancer with no instance behind it does).
    pub users_down: Arc<std::sync::atomic::AtomicBool>,
    pub notify_pool: PgPool,
    /// users-service's database (read-only use in tests: its outbox, say).
    pub users_pool: PgPool,
    pub bffs: Vec<Bff>,
    pub nginx: Option<Nginx>,
    pub http: reqwest::Client,
    addrs: Vec<(Service, SocketAddr)>,
    databases: Vec<TestDatabase>,
    /// Deletes the stack's Redis keys when dropped.
    redis_keys: Option<TestPrefix>,
    /// notification-service, when it runs as a child process.
    notify_process: Option<NotifyProcess>,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

fn http_cfg(addr: SocketAddr) -> HttpConfig {
    HttpConfig {
        listen: addr,
        ..HttpConfig::default()
    }
}

impl Stack {
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        common::telemetry::init_for_tests();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t{}.", &id[..8]);
        let topics: Vec<String> = all_topics()
            .iter()
            .map(|t| format!("{prefix}{t}"))
            .collect();
        let kafka = DevCluster::start(&topics, 3)?;
        let smtp = SmtpSink::start(0, None)?;
        // Declared after the cluster, so an early return stops the services before it.
        let mut services = TaskGroup::new();
        let jwt = opts.jwt.clone();
        let kafka_cfg = KafkaConfig {
            bootstrap_servers: kafka.bootstrap_servers().to_owned(),
            topic_prefix: prefix.clone(),
            properties: opts.kafka_properties.clone(),
        };
        let redis_keys = TestPrefix::new(
            opts.redis_url
                .as_deref()
                .unwrap_or(&RedisConfig::default().url),
        );
        let redis = RedisConfig {
            key_prefix: redis_keys.prefix().to_owned(),
            url: redis_keys.url().to_owned(),
            ..RedisConfig::default()
        };
        let databases = vec![
            TestDatabase::create("users").await?,
            TestDatabase::create("notify").await?,
        ];
        let users_db = DatabaseConfig::new(databases[0].url().to_owned());
        let notify_db = DatabaseConfig::new(databases[1].url().to_owned());
        let shutdown = services.token();
        let mut addrs = Vec::new();

        let (l, users_addr) = listener().await;
        let users_cfg = users_service::Config {
            http: http_cfg(users_addr),
            database: users_db,
            jwt: jwt.clone(),
            kafka: kafka_cfg.clone(),
            telegram: opts.telegram.clone(),
            ..Default::default()
        };
        users_service::migrate(&users_cfg).await?;
        let users_pool = common::db::connect_lazy(&users_cfg.database)?;
        addrs.push((Service::Users, users_addr));
        services.spawn(
            "users-service",
            users_service::run(users_cfg, l, shutdown.clone()),
        );

        // notification-service reaches users-service through a counting proxy, so tests can
        // assert how many profile lookups a request made.
        let profile_lookups = Arc::new(AtomicUsize::new(0));
        let users_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, users_proxy) = listener().await;
        services.spawn(
            "users-proxy",
            counting_proxy(
                l,
                users_addr,
                profile_lookups.clone(),
                users_down.clone(),
                shutdown.clone(),
            ),
        );

        let (l, notify_addr) = listener().await;
        let notify_cfg = notification_service::Config {
            http: http_cfg(notify_addr),
            database: notify_db.clone(),
            jwt: jwt.clone(),
            kafka: kafka_cfg.clone(),
            users: notification_service::config::UsersClientConfig {
                base_url: format!("http://{users_proxy}"),
                ..Default::default()
            },
            relay: opts.relay.clone(),
            permissions: opts.permissions.clone(),
            redis: redis.clone(),
            welcome: notification_service::config::WelcomeConfig {
                enabled: opts.welcome,
                ..Default::default()
            },
            planning: notification_service::planning::PlanningConfig {
                enabled_channels: opts.enabled_channels.clone(),
                ..Default::default()
            },
            intake: Default::default(),
            fanout: opts.fanout.clone(),
            inbox: Default::default(),
            receipts: opts.receipts.clone(),
            bounces: opts.bounces.clone(),
            telemetry: Default::default(),
            retention: Default::default(),
        };
        notification_service::migrate(&notify_cfg).await?;
        let notify_pool = common::db::connect_lazy(&notify_db)?;
        addrs.push((Service::Notifications, notify_addr));
        let notify_process = match &opts.notification_service_process {
            None => {
                services.spawn(
                    "notification-service",
                    notification_service::run(notify_cfg, l, shutdown.clone()),
                );
                None
            }
            Some(extra) => {
                use secrecy::ExposeSecret;
                anyhow::ensure!(
                    jwt.algorithm == common::auth::JwtAlgorithm::HS256,
                    "notification-service as a process: HS256 only"
                );
                drop(l);
                let channels: Vec<&str> =
                    opts.enabled_channels.iter().map(|c| c.as_str()).collect();
                let mut env: Vec<(String, String)> = [
                    ("NOTIFY_HTTP__LISTEN", notify_addr.to_string()),
                    ("NOTIFY_DATABASE__URL", databases[1].url().to_owned()),
                    ("NOTIFY_JWT__SECRET", jwt.secret.expose_secret().to_owned()),
                    (
                        "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
                        kafka_cfg.bootstrap_servers.clone(),
                    ),
                    ("NOTIFY_KAFKA__TOPIC_PREFIX", kafka_cfg.topic_prefix.clone()),
                    ("NOTIFY_USERS__BASE_URL", format!("http://{users_proxy}")),
                    ("NOTIFY_REDIS__URL", redis.url.clone()),
                    ("NOTIFY_REDIS__KEY_PREFIX", redis.key_prefix.clone()),
                    ("NOTIFY_WELCOME__ENABLED", opts.welcome.to_string()),
                    (
                        "NOTIFY_PLANNING__ENABLED_CHANNELS",
                        format!("[{}]", channels.join(",")),
                    ),
                    (
                        "NOTIFY_RELAY__POLL_INTERVAL_MS",
                        opts.relay.poll_interval_ms.to_string(),
                    ),
                    ("RUST_LOG", "warn".to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                env.extend(extra.iter().cloned());
                let mut process = NotifyProcess { env, child: None };
                process.spawn()?;
                Some(process)
            }
        };

        let (l, addr) = listener().await;
        let workers_cfg = workers::Config {
            http: http_cfg(addr),
            kafka: kafka_cfg.clone(),
            redis: redis.clone(),
            email: workers::config::EmailConfig {
                smtp_url: smtp.url(),
                timeout_ms: 5_000,
                ..opts.workers.email.clone()
            },
            ..opts.workers.clone()
        };
        addrs.push((Service::Workers, addr));
        services.spawn("workers", workers::run(workers_cfg, l, shutdown.clone()));

        let (l, addr) = listener().await;
        let repeater_cfg = repeater::Config {
            http: http_cfg(addr),
            database: notify_db,
            kafka: kafka_cfg.clone(),
            retry: repeater::config::RetryConfig {
                schedule_secs: opts.retry_schedule.clone(),
                jitter: opts.retry_jitter,
                ..Default::default()
            },
            stuck: opts.stuck.clone(),
            ..Default::default()
        };
        addrs.push((Service::Repeater, addr));
        services.spawn("repeater", repeater::run(repeater_cfg, l, shutdown.clone()));

        let mut bffs = Vec::new();
        for _ in 0..opts.bff_instances.max(1) {
            let (l, addr) = listener().await;
            let metrics_addr = SocketAddr::from(([127, 0, 0, 1], devkit::free_port()));
            let cfg = bff::Config {
                http: HttpConfig {
                    metrics_listen: Some(metrics_addr),
                    ..http_cfg(addr)
                },
                jwt: jwt.clone(),
                upstreams: bff::config::UpstreamsConfig {
                    users_url: format!("http://{users_addr}"),
                    notifications_url: format!("http://{notify_addr}"),
                    ..Default::default()
                },
                redis: redis.clone(),
                rate_limits: opts.rate_limits.clone(),
                inbox: opts.inbox_streams.clone(),
                telemetry: Default::default(),
            };
            // A child of the services' token: an early return (or the drop) stops it too.
            let token = shutdown.child_token();
            let task = tokio::spawn(bff::run(cfg, l, token.clone()));
            bffs.push(Bff {
                addr,
                metrics_addr,
                shutdown: token,
                task: Some(task),
            });
        }

        let nginx = if opts.nginx {
            let dir = std::env::temp_dir().join(format!("notify-nginx-{id}"));
            let upstreams: Vec<SocketAddr> = bffs.iter().map(|b| b.addr).collect();
            let per_ip = opts.nginx_per_ip;
            Some(
                tokio::task::spawn_blocking(move || {
                    Nginx::start_on_free_port(&upstreams, &dir, per_ip)
                })
                .await??,
            )
        } else {
            None
        };

        let stack = Self {
            services,
            kafka: Some(kafka),
            smtp,
            jwt,
            signing_key_pem: opts.signing_key_pem.clone(),
            kafka_cfg,
            redis: redis.clone(),
            profile_lookups,
            users_down,
            notify_pool,
            users_pool,
            bffs,
            nginx,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            addrs,
            databases,
            redis_keys: Some(redis_keys),
            notify_process,
        };
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// Every service's `/readyz` (Postgres, Redis, Kafka consumers joined), each bff's and the
    /// public URL's answer 200 — or the error names what is not ready.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let mut urls: Vec<(String, String)> = self
            .addrs
            .iter()
            .map(|(s, a)| (format!("{s:?}"), format!("http://{a}/readyz")))
            .collect();
        for (i, b) in self.bffs.iter().enumerate() {
            urls.push((format!("bff-{i}"), format!("http://{}/readyz", b.addr)));
        }
        urls.push(("public URL".into(), format!("{}/readyz", self.url())));
        self.wait_answering(urls).await
    }

    /// Each of `urls` (name, URL) answers 2xx within [`READY_TIMEOUT`].
    async fn wait_answering(&self, urls: Vec<(String, String)>) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for (name, url) in urls {
            loop {
                if let Some(t) = self.services.finished() {
                    anyhow::bail!("{t} exited during start");
                }
                if let Some(child) = self.notify_process.as_ref().and_then(|p| p.child.as_ref())
                    && !devkit::process::alive(child.id())
                {
                    anyhow::bail!(
                        "notification-service exited during start (RUST_LOG=warn: its stderr is above)"
                    );
                }
                let last = match self.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => e.to_string(),
                };
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{name} not ready within {READY_TIMEOUT:?}: {last}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }
}

impl Stack {
    /// SIGKILLs notification-service (run as a process: [`Options::notification_service_process`]).
    pub fn kill_notification_service(&mut self) {
        let process = self.notify_process.as_mut().expect(
            "notification-service runs as a process (Options::notification_service_process)",
        );
        if let Some(mut child) = process.child.take() {
            child.kill();
        }
    }

    /// Starts the killed notification-service again, on its address; returns once it answers
    /// `/readyz`.
    pub async fn start_notification_service(&mut self) -> anyhow::Result<()> {
        let process = self.notify_process.as_mut().expect(
            "notification-service runs as a process (Options::notification_service_process)",
        );
        anyhow::ensure!(process.child.is_none(), "notification-service is running");
        process.spawn()?;
        let addr = self.addr(Service::Notifications);
        self.wait_answering(vec![(
            "notification-service".into(),
            format!("http://{addr}/readyz"),
        )])
        .await
    }
}

impl Drop for Stack {
    /// Stops everything the stack started, in an order that cannot hang: the services first
    /// (bounded wait), then — only if they all stopped — the Kafka cluster (a consumer closed
    /// against vanished brokers would wait forever; if some service is stuck the cluster is
    /// left to the process's exit), nginx, the databases and the Redis keys.
    fn drop(&mut self) {
        // A child notification-service first: killed, it needs nothing else to stop.
        self.notify_process.take();
        for b in &self.bffs {
            b.shutdown.cancel();
        }
        let services_stopped = self.services.cancel_and_wait(STOP_TIMEOUT);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && !self
                .bffs
                .iter()
                .filter_map(|b| b.task.as_ref())
                .all(|t| t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let bffs_stopped = self
            .bffs
            .iter()
            .filter_map(|b| b.task.as_ref())
            .all(|t| t.is_finished());
        if let Some(kafka) = self.kafka.take()
            && !(services_stopped && bffs_stopped)
        {
            kafka.keep_running();
        }
        self.nginx.take();
        self.databases.clear();
        self.redis_keys.take();
    }
}
