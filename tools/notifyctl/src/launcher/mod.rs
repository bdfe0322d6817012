//! `notifyctl up`: the whole platform on one machine, no containers.
//!
//! Starts, in this order: the embedded Kafka (librdkafka's mock cluster: 3 brokers, every
//! topic 3 partitions × replication 3), an SMTP catcher that also writes each message to
//! `.dev/mail/*.eml`, the migrations, users-service, notification-service, workers, repeater,
//! two bff instances and nginx in front of them (one bff on the public port when nginx is not
//! installed). Then registers a demo user, mints tokens, writes `.dev/stack.json` and waits for
//! Ctrl-C, when it stops everything it started. Children also get SIGTERM if the launcher
//! itself is killed (PR_SET_PDEATHSIG).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use common::{auth::Role, events::all_topics};
use devkit::{http_sink::HttpSink, kafka::DevCluster, nginx::Nginx, smtp::SmtpSink};

mod children;
pub mod prometheus;
mod providers;

pub(crate) use children::binary;
pub use children::kafka_only;
use children::{Children, host_port, reachable, spawn, wait_for_signal};
use providers::{ALL_CHANNELS, PLANNED_CHANNELS, fake_providers};
pub use providers::{forget_redis_keys, redis_prefix};

use crate::stack::{JwtInfo, StackFile, Tokens};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The public port (nginx, or the single bff without nginx).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// nginx's gRPC port (`notify.v1`, HTTP/2 without TLS). Without nginx the single bff
    /// serves gRPC on the public port.
    #[arg(long, default_value_t = 9090)]
    pub grpc_port: u16,
    /// Where logs, mail and stack.json go.
    #[arg(long, default_value = ".dev")]
    pub dir: PathBuf,
    /// Postgres server (the `users` and `notify` databases are created there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// SMTP catcher port.
    #[arg(long, default_value_t = 2525)]
    pub smtp_port: u16,
    /// Run one bff on the public port and no nginx.
    #[arg(long)]
    pub no_nginx: bool,
    /// Prepended to the database names (`users`, `notify`), so a test can run its own stack.
    #[arg(long, default_value = "")]
    pub db_prefix: String,
    /// Turn the bff's per-principal rate limits off (benchmarks choose their own rate).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// The sinks answer without writing each message to `<dir>/mail` and `<dir>/sinks`.
    #[arg(long)]
    pub no_recording: bool,
    /// Partitions per topic in the embedded Kafka. Its brokers keep at most 5 MiB per
    /// partition (librdkafka's mock, not configurable) and drop the oldest messages beyond
    /// that, consumed or not: a large backlog needs more partitions (docs/benchmarks.md).
    #[arg(long, default_value_t = 3)]
    pub kafka_partitions: i32,
    /// Prometheus's port (Debian's `prometheus`, scraping every process every 2 s with the
    /// alert rules of deploy/prometheus).
    #[arg(long, default_value_t = 9091)]
    pub prometheus_port: u16,
    /// Do not start Prometheus.
    #[arg(long)]
    pub no_prometheus: bool,
    /// Export every service's traces to this OTLP/HTTP endpoint (`telemetry.otlp_endpoint`,
    /// e.g. an OpenTelemetry collector or Jaeger on `http://127.0.0.1:4318`).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

impl UpArgs {
    /// The defaults `notifyctl up` runs with, as a starting point for other commands.
    pub fn defaults() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: UpArgs,
        }
        Wrap::parse_from(["notifyctl"]).args
    }
}

/// A fresh random HS256 secret (hex) and the JWT settings that use it: every stack this tool
/// starts signs its tokens with its own.
pub(crate) fn dev_signing_key() -> (String, common::auth::JwtConfig) {
    use secrecy::ExposeSecret as _;
    let jwt = common::auth::JwtConfig::with_random_secret();
    (jwt.secret.expose_secret().to_owned(), jwt)
}

/// A stack [`start`]ed in this process; everything stops when it is dropped.
pub struct Running {
    pub stack: StackFile,
    pub stack_path: PathBuf,
    pub logs: PathBuf,
    pub nginx: bool,
    pub bff_count: usize,
    // Dropped in this order: nginx, the services, then what they depend on.
    nginx_proc: Option<Nginx>,
    children: Children,
    _cluster: DevCluster,
    _smtp: SmtpSink,
}

impl Running {
    /// The name of a child that exited, if one did.
    pub fn exited(&mut self) -> Option<String> {
        self.children.exited()
    }

    /// Stops every process (SIGTERM, then SIGKILL after 15 s) and removes the stack file.
    pub fn stop(mut self) {
        self.nginx_proc.take();
        self.children.stop_all();
        let _ = std::fs::remove_file(&self.stack_path);
    }
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut running = start(&args)?;
    let url = running.stack.url.clone();
    let stack = &running.stack;
    let (stack_path, mail, logs) = (
        running.stack_path.clone(),
        args.dir.join("mail"),
        running.logs.clone(),
    );
    let user_id = stack.user_id.clone();

    println!();
    println!(
        "notify is up: {url}   ({} bff behind {})",
        running.bff_count,
        if running.nginx {
            "nginx"
        } else {
            "no load balancer"
        }
    );
    println!(
        "gRPC (notify.v1, reflection on): {}",
        stack.grpc_url.trim_start_matches("http://")
    );
    match &stack.prometheus_url {
        Some(p) => println!("Prometheus (every process, alert rules): {p}"),
        None => println!(
            "metrics: {}",
            stack
                .metrics
                .values()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
    println!();
    println!(
        "user token    (demo user {user_id}, demo@example.com):\n  {}",
        stack.tokens.user
    );
    println!(
        "service token (sub demo-service):\n  {}",
        stack.tokens.service
    );
    println!("admin token   (sub admin):\n  {}", stack.tokens.admin);
    println!();
    println!(
        "the demo user's preference center: {url}/app#token={}",
        stack.tokens.user
    );
    println!(
        "the in-app feed embedded in a product page: {url}/demo/inbox#token={}",
        stack.tokens.user
    );
    println!("API reference: {url}/docs");
    println!();
    println!("try it (the demo user gets it by email and in the in-app feed):");
    println!(
        "  curl -s -X POST {url}/v1/notifications -H \"Authorization: Bearer $(jq -r .tokens.service {})\" \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"recipients\":[{{\"user_id\":\"{user_id}\"}}],\"category\":\"welcome\",\"content\":{{\"subject\":\"Hi\",\"text\":\"Hello!\"}}}}'",
        stack_path.display()
    );
    println!();
    println!(
        "written to {}; mail lands in {}/; logs in {}/. Ctrl-C stops everything.",
        stack_path.display(),
        mail.display(),
        logs.display()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exited = rt.block_on(async {
        loop {
            tokio::select! {
                _ = wait_for_signal() => return None,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if let Some(name) = running.exited() {
                        return Some(name);
                    }
                }
            }
        }
    });
    if let Some(name) = &exited {
        eprintln!(
            "{name} exited unexpectedly (see {}/{name}.log); stopping everything",
            logs.display()
        );
    }
    eprintln!("stopping …");
    running.stop();
    eprintln!("stopped.");
    if exited.is_some() {
        anyhow::bail!("a service failed")
    } else {
        Ok(())
    }
}

/// Starts the whole stack as [`up`] describes and returns once it answers, with its stack
/// file written.
pub fn start(args: &UpArgs) -> anyhow::Result<Running> {
    let pg = host_port(&args.postgres, 5432);
    anyhow::ensure!(
        reachable(&pg),
        "Postgres is not reachable at {pg}. Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    );
    let rd = host_port(&args.redis, 6379);
    anyhow::ensure!(
        reachable(&rd),
        "Redis is not reachable at {rd}. Start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
    );
    for name in [
        "users-service",
        "notification-service",
        "workers",
        "repeater",
        "bff",
    ] {
        binary(name)?;
    }
    let logs = args.dir.join("logs");
    let mail = args.dir.join("mail");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&mail)?;

    eprintln!(
        "starting embedded Kafka (3 brokers, {} partitions per topic) …",
        args.kafka_partitions
    );
    let cluster = DevCluster::start(&all_topics(), args.kafka_partitions.max(1))?;
    let mail_dir = (!args.no_recording).then(|| mail.clone());
    let smtp = SmtpSink::start(args.smtp_port, mail_dir.clone())
        .or_else(|_| SmtpSink::start(0, mail_dir))
        .context("starting the SMTP catcher")?;
    let sinks = args.dir.join("sinks");
    let sink = HttpSink::start(0, (!args.no_recording).then_some(sinks.as_path()))
        .context("starting the HTTP provider sink")?;
    eprintln!(
        "kafka: {}  smtp catcher: {} → {}/  http providers: {} → {}/<channel>/",
        cluster.bootstrap_servers(),
        smtp.addr(),
        mail.display(),
        sink.addr(),
        sinks.display()
    );
    let provider_env = fake_providers(&args.dir, &sink)?;

    let (secret, jwt) = crate::launcher::dev_signing_key();
    let port = devkit::free_port;
    let (users_port, notify_port, workers_port, repeater_port) = (port(), port(), port(), port());
    let nginx_bin = if args.no_nginx {
        None
    } else {
        devkit::nginx::find_binary()
    };
    let bff_ports: Vec<u16> = if nginx_bin.is_some() {
        vec![port(), port()]
    } else {
        vec![args.port]
    };
    // Each bff serves /metrics on a port of its own (never on the public one).
    let bff_metrics_ports: Vec<u16> = bff_ports.iter().map(|_| port()).collect();
    let mut metrics: BTreeMap<String, String> = [
        ("users-service", users_port),
        ("notification-service", notify_port),
        ("workers", workers_port),
        ("repeater", repeater_port),
    ]
    .into_iter()
    .map(|(name, p)| (name.to_owned(), format!("http://127.0.0.1:{p}/metrics")))
    .collect();

    let pg_base = args.postgres.trim_end_matches('/');
    let mut base_env = vec![
        ("NOTIFY_JWT__SECRET".to_owned(), secret.clone()),
        ("NOTIFY_JWT__ISSUER".to_owned(), jwt.issuer.clone()),
        ("NOTIFY_JWT__AUDIENCE".to_owned(), jwt.audience.clone()),
        (
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
            cluster.bootstrap_servers().to_owned(),
        ),
        ("NOTIFY_REDIS__URL".to_owned(), args.redis.clone()),
        (
            "NOTIFY_REDIS__KEY_PREFIX".to_owned(),
            redis_prefix(&args.db_prefix),
        ),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        ),
    ];
    if let Some(endpoint) = &args.otlp_endpoint {
        base_env.push((
            "NOTIFY_TELEMETRY__OTLP_ENDPOINT".to_owned(),
            endpoint.clone(),
        ));
    }
    let with = |extra: &[(&str, String)]| {
        let mut env = base_env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let listen = |p: u16| ("NOTIFY_HTTP__LISTEN", format!("127.0.0.1:{p}"));
    let users_db = (
        "NOTIFY_DATABASE__URL",
        format!("{pg_base}/{}users", args.db_prefix),
    );
    let notify_db = (
        "NOTIFY_DATABASE__URL",
        format!("{pg_base}/{}notify", args.db_prefix),
    );

    eprintln!("migrating databases `users` and `notify` …");
    for (name, db) in [
        ("users-service", &users_db),
        ("notification-service", &notify_db),
    ] {
        let status = spawn(
            &format!("{name}-migrate"),
            name,
            &["migrate"],
            &with(std::slice::from_ref(db)),
            &logs,
        )?
        .wait()?;
        anyhow::ensure!(
            status.success(),
            "{name} migrate failed: see {}/{name}-migrate.log",
            logs.display()
        );
    }

    let mut children = Children { procs: Vec::new() };
    let mut pids = BTreeMap::new();
    let mut start = |name: &str, env: Vec<(String, String)>| -> anyhow::Result<()> {
        let bin = if name.starts_with("bff") { "bff" } else { name };
        let child = spawn(name, bin, &["serve"], &env, &logs)?;
        pids.insert(name.to_owned(), child.id());
        children.procs.push((name.to_owned(), child));
        Ok(())
    };
    start(
        "users-service",
        with(&[listen(users_port), users_db.clone()]),
    )?;
    start(
        "notification-service",
        with(&[
            listen(notify_port),
            notify_db.clone(),
            (
                "NOTIFY_USERS__BASE_URL",
                format!("http://127.0.0.1:{users_port}"),
            ),
            ("NOTIFY_PLANNING__ENABLED_CHANNELS", PLANNED_CHANNELS.into()),
            // The demo service token may send anything (privileged categories, high priority).
            (
                "NOTIFY_PERMISSIONS__SERVICES__DEMO-SERVICE__PRIVILEGED",
                "[\"*\"]".into(),
            ),
            (
                "NOTIFY_PERMISSIONS__SERVICES__DEMO-SERVICE__HIGH_PRIORITY",
                "true".into(),
            ),
        ]),
    )?;
    let mut workers_env = with(&[
        listen(workers_port),
        ("NOTIFY_EMAIL__SMTP_URL", smtp.url()),
        ("NOTIFY_CHANNELS", ALL_CHANNELS.into()),
    ]);
    workers_env.extend(provider_env);
    start("workers", workers_env)?;
    start(
        "repeater",
        with(&[listen(repeater_port), notify_db.clone()]),
    )?;
    for (i, (p, metrics_port)) in bff_ports.iter().zip(&bff_metrics_ports).enumerate() {
        metrics.insert(
            format!("bff-{}", i + 1),
            format!("http://127.0.0.1:{metrics_port}/metrics"),
        );
        let mut env = with(&[
            listen(*p),
            (
                "NOTIFY_HTTP__METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            ),
            (
                "NOTIFY_UPSTREAMS__USERS_URL",
                format!("http://127.0.0.1:{users_port}"),
            ),
            (
                "NOTIFY_UPSTREAMS__NOTIFICATIONS_URL",
                format!("http://127.0.0.1:{notify_port}"),
            ),
        ]);
        if args.no_rate_limits {
            env.push(("NOTIFY_RATE_LIMITS__ENABLED".into(), "false".into()));
        }
        start(&format!("bff-{}", i + 1), env)?;
    }

    let public = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut nginx = None;
    match &nginx_bin {
        Some(_) => {
            let upstreams: Vec<SocketAddr> = bff_ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect();
            let dir = std::path::absolute(args.dir.join("nginx"))?;
            let listen = devkit::nginx::Listen {
                http: public,
                grpc: SocketAddr::from(([127, 0, 0, 1], args.grpc_port)),
            };
            let n = Nginx::start(listen, &upstreams, &dir).context("starting nginx")?;
            pids.insert("nginx".into(), n.pid());
            nginx = Some(n);
        }
        None if !args.no_nginx => eprintln!(
            "nginx is not installed (`apt-get install -y nginx`); running ONE bff on {public} without a load balancer"
        ),
        None => {}
    }
    let url = format!("http://{public}");
    let grpc_url = match &nginx {
        Some(n) => format!("http://{}", n.grpc_addr),
        None => url.clone(),
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    rt.block_on(wait_until_ok(
        &http,
        &format!("{url}/readyz"),
        &mut children,
        &logs,
    ))?;

    let prometheus_url = match prometheus::find_binary() {
        _ if args.no_prometheus => None,
        Some(bin) => {
            let listen = SocketAddr::from(([127, 0, 0, 1], args.prometheus_port));
            let dir = std::path::absolute(args.dir.join("prometheus"))?;
            let child = prometheus::start(&bin, &dir, listen, &metrics, &logs)?;
            pids.insert("prometheus".into(), child.id());
            children.procs.push(("prometheus".into(), child));
            let url = format!("http://{listen}");
            rt.block_on(wait_until_ok(
                &http,
                &format!("{url}/-/ready"),
                &mut children,
                &logs,
            ))?;
            Some(url)
        }
        None => {
            eprintln!(
                "Prometheus is not installed (`make deps`, or `apt-get install -y prometheus`): starting without it"
            );
            None
        }
    };

    let service = common::auth::mint_hs256(&jwt, "demo-service", Role::Service, 30 * 86_400)?;
    let admin = common::auth::mint_hs256(&jwt, "admin", Role::Admin, 30 * 86_400)?;
    let user_id: String = rt.block_on(async {
        let resp = http
            .post(format!("{url}/v1/users"))
            .bearer_auth(&service)
            .json(&serde_json::json!({ "email": "demo@example.com", "locale": "en", "timezone": "UTC" }))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        anyhow::ensure!(status.as_u16() == 201, "registering the demo user answered {status}: {body}");
        Ok::<_, anyhow::Error>(body["user_id"].as_str().unwrap_or_default().to_owned())
    })?;
    let user = common::auth::mint_hs256(&jwt, &user_id, Role::User, 30 * 86_400)?;

    let stack = StackFile {
        url: url.clone(),
        grpc_url,
        bff_urls: bff_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect(),
        tokens: Tokens {
            user,
            service: service.clone(),
            admin,
        },
        user_id: user_id.clone(),
        jwt: JwtInfo {
            alg: "HS256".into(),
            secret,
            iss: jwt.issuer.clone(),
            aud: jwt.audience.clone(),
        },
        processes: pids,
        kafka_bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        smtp: smtp.url(),
        mail_dir: mail.display().to_string(),
        sinks_dir: sinks.display().to_string(),
        webhook_sink: format!("{}/hook", sink.url("webhook")),
        notify_database_url: notify_db.1.clone(),
        users_database_url: users_db.1.clone(),
        metrics,
        prometheus_url,
    };
    let stack_path = args.dir.join("stack.json");
    std::fs::write(&stack_path, serde_json::to_string_pretty(&stack)?)?;
    Ok(Running {
        stack,
        stack_path,
        logs,
        nginx: nginx.is_some(),
        bff_count: bff_ports.len(),
        nginx_proc: nginx,
        children,
        _cluster: cluster,
        _smtp: smtp,
    })
}

/// Waits up to 60 s for `url` to answer 2xx, failing at once when a child exits.
async fn wait_until_ok(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
    logs: &std::path::Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(url).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if let Some(name) = children.exited() {
            anyhow::bail!(
                "{name} exited during start; see {}/{name}.log",
                logs.display()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} did not answer in 60 s; see {}/",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
