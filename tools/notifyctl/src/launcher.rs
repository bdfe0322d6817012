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
    fs::File,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use common::{auth::Role, events::all_topics};
use devkit::{http_sink::HttpSink, kafka::DevCluster, nginx::Nginx, smtp::SmtpSink};
use rand::Rng;

use crate::stack::{JwtInfo, StackFile, Tokens};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The public port (nginx, or the single bff without nginx).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
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

/// Every child process; all are stopped when this is dropped.
struct Children {
    procs: Vec<(String, Child)>,
}

impl Children {
    fn stop_all(&mut self) {
        for (_, c) in &self.procs {
            // SIGTERM: each service drains and exits on its own.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (name, c) in &mut self.procs {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("  {name} did not stop in time; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.procs.clear();
    }

    fn exited(&mut self) -> Option<String> {
        self.procs
            .iter_mut()
            .find_map(|(name, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| name.clone()))
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn reachable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hp = rest.split('/').next().unwrap_or(rest);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:{default_port}")
    }
}

pub(crate) fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .to_path_buf();
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build first (`cargo build --workspace --bins`, which `make up` does)",
        path.display()
    );
    Ok(path)
}

/// Starts `bin` as `name` (its log file is `<logs>/<name>.log`).
fn spawn(
    name: &str,
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
    logs: &Path,
) -> anyhow::Result<Child> {
    let log = File::create(logs.join(format!("{name}.log")))?;
    let mut cmd = Command::new(binary(bin)?);
    devkit::die_with_parent(&mut cmd);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn().with_context(|| format!("starting {name}"))
}

/// `notifyctl kafka`: only the embedded Kafka, until Ctrl-C.
pub fn kafka_only(prefix: &str) -> anyhow::Result<()> {
    let topics: Vec<String> = all_topics()
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let cluster = DevCluster::start(&topics, 3)?;
    println!("{}", cluster.bootstrap_servers());
    eprintln!(
        "embedded Kafka up: 3 brokers, {} topics × 3 partitions × replication 3; Ctrl-C stops it",
        topics.len()
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wait_for_signal());
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Every channel runs on the local stack; HTTP providers are the sink.
const ALL_CHANNELS: &str = "[email,sms,push,telegram,webhook]";

/// Worker settings pointing every HTTP provider at the sink, with dev credentials (the FCM
/// service account and the APNs key are the repository's test keys, written under `dir`).
fn fake_providers(dir: &Path, sink: &HttpSink) -> anyhow::Result<Vec<(String, String)>> {
    let config = std::path::absolute(dir.join("config"))?;
    std::fs::create_dir_all(&config)?;
    let fcm_key = config.join("fcm-service-account.json");
    std::fs::write(
        &fcm_key,
        serde_json::to_vec_pretty(&serde_json::json!({
            "type": "service_account",
            "project_id": "notify-dev",
            "private_key": devkit::fixtures::RSA_PRIVATE_PEM,
            "client_email": "dev@notify-dev.iam.gserviceaccount.com",
            "token_uri": format!("{}/token", sink.url("fcm")),
        }))?,
    )?;
    let apns_key = config.join("apns-dev.p8");
    std::fs::write(&apns_key, devkit::fixtures::EC_P256_PRIVATE_PEM)?;
    let webhook_secret = {
        use base64::Engine as _;
        let bytes: [u8; 24] = rand::rng().random();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let env = [
        ("NOTIFY_SMS__BASE_URL", sink.url("sms")),
        ("NOTIFY_SMS__ACCOUNT_SID", "ACdev".into()),
        ("NOTIFY_SMS__AUTH_TOKEN", "dev".into()),
        // Quoted: figment reads an unquoted `+1500…` from the environment as a number.
        ("NOTIFY_SMS__FROM", "\"+15005550006\"".into()),
        ("NOTIFY_TELEGRAM__BASE_URL", sink.url("telegram")),
        ("NOTIFY_TELEGRAM__BOT_TOKEN", "dev".into()),
        ("NOTIFY_PUSH__FCM__BASE_URL", sink.url("fcm")),
        (
            "NOTIFY_PUSH__FCM__SERVICE_ACCOUNT_PATH",
            fcm_key.display().to_string(),
        ),
        ("NOTIFY_PUSH__APNS__BASE_URL", sink.url("apns")),
        ("NOTIFY_PUSH__APNS__TOPIC", "dev.notify.app".into()),
        ("NOTIFY_PUSH__APNS__KEY_ID", "DEVKEY0001".into()),
        ("NOTIFY_PUSH__APNS__TEAM_ID", "DEVTEAM001".into()),
        (
            "NOTIFY_PUSH__APNS__KEY_PATH",
            apns_key.display().to_string(),
        ),
        ("NOTIFY_WEBHOOK__SECRET", webhook_secret),
        ("NOTIFY_WEBHOOK__ALLOW_LOOPBACK", "true".into()),
    ];
    Ok(env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A fresh random HS256 secret (hex) and the JWT settings that use it: every stack this tool
/// starts signs its tokens with its own.
pub(crate) fn dev_signing_key() -> (String, common::auth::JwtConfig) {
    let secret: String = {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let jwt = common::auth::JwtConfig {
        secret: secret.clone().into(),
        ..Default::default()
    };
    (secret, jwt)
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

/// The workers' Redis key prefix (their per-delivery dedupe keys, kept 7 days): `notify:dev:`
/// for `make up`, one of its own for a stack with a database prefix, so a benchmark's millions
/// of keys can be removed with it ([`forget_redis_keys`]) instead of filling the shared Redis.
pub fn workers_redis_prefix(db_prefix: &str) -> String {
    format!("notify:{db_prefix}dev:")
}

/// Deletes every key under `prefix` (SCAN + UNLINK in batches, without blocking Redis).
pub fn forget_redis_keys(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args([
            "-c",
            "redis-cli -u \"$1\" --scan --pattern \"$2*\" | xargs -r -n 1000 redis-cli -u \"$1\" unlink >/dev/null",
            "sh",
            redis_url,
            prefix,
        ])
        .status()
        .context("running redis-cli")?;
    anyhow::ensure!(
        status.success(),
        "deleting the Redis keys under {prefix} failed"
    );
    Ok(())
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
    println!("try it:");
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

    let pg_base = args.postgres.trim_end_matches('/');
    let base_env = vec![
        ("NOTIFY_JWT__SECRET".to_owned(), secret.clone()),
        ("NOTIFY_JWT__ISSUER".to_owned(), jwt.issuer.clone()),
        ("NOTIFY_JWT__AUDIENCE".to_owned(), jwt.audience.clone()),
        (
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
            cluster.bootstrap_servers().to_owned(),
        ),
        ("NOTIFY_REDIS__URL".to_owned(), args.redis.clone()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        ),
    ];
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
            ("NOTIFY_PLANNING__ENABLED_CHANNELS", ALL_CHANNELS.into()),
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
        (
            "NOTIFY_REDIS__KEY_PREFIX",
            workers_redis_prefix(&args.db_prefix),
        ),
        ("NOTIFY_CHANNELS", ALL_CHANNELS.into()),
    ]);
    workers_env.extend(provider_env);
    start("workers", workers_env)?;
    start(
        "repeater",
        with(&[listen(repeater_port), notify_db.clone()]),
    )?;
    for (i, p) in bff_ports.iter().enumerate() {
        let mut env = with(&[
            listen(*p),
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
            let n = Nginx::start(public, &upstreams, &dir).context("starting nginx")?;
            pids.insert("nginx".into(), n.pid());
            nginx = Some(n);
        }
        None if !args.no_nginx => eprintln!(
            "nginx is not installed (`apt-get install -y nginx`); running ONE bff on {public} without a load balancer"
        ),
        None => {}
    }
    let url = format!("http://{public}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http.get(format!("{url}/readyz")).send().await;
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
                "the stack did not become ready in 60 s; see {}/",
                logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;

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
