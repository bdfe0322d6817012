//! What chaos breaks: the fleet of service processes, the infrastructure of its own, and the
//! webhook endpoint that counts what it received.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use devkit::{
    kafka::DevCluster, postgres::PostgresServer, process::Guarded, redis::RedisServer,
    smtp::SmtpSink,
};
use tokio::time::Instant;

/// The webhook endpoint: fails a share of requests (or all of them during an outage) with
/// 503 and counts what it accepted per `webhook-id` (the delivery).
#[derive(Default)]
pub(super) struct Hooks {
    pub(super) fail_percent: AtomicU32,
    pub(super) outage: AtomicBool,
    pub(super) received: Mutex<HashMap<String, u32>>,
    pub(super) dice: Mutex<u64>,
}

impl Hooks {
    pub(super) fn answer(&self, id: Option<&str>) -> axum::http::StatusCode {
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

    pub(super) fn start(self: &Arc<Self>) -> anyhow::Result<std::net::SocketAddr> {
        let me = self.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let me = me.clone();
            async move { me.answer(headers.get("webhook-id").and_then(|v| v.to_str().ok())) }
        });
        let addr = devkit::serve::on_thread("chaos-hooks", 0, app)?;
        Ok(addr)
    }
}

/// The services as processes, each restartable with its environment.
pub(super) struct Fleet {
    pub(super) logs: PathBuf,
    pub(super) env: BTreeMap<&'static str, Vec<(String, String)>>,
    pub(super) running: BTreeMap<&'static str, Guarded>,
    pub(super) health: BTreeMap<&'static str, u16>,
}

pub(super) const SERVICES: [&str; 5] = [
    "users-service",
    "notification-service",
    "workers",
    "repeater",
    "bff",
];

impl Fleet {
    pub(super) fn start(&mut self, name: &'static str) -> anyhow::Result<()> {
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
    pub(super) fn kill(&mut self, name: &'static str) {
        if let Some(mut p) = self.running.remove(name) {
            p.kill();
        }
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        for env in self.env.values_mut() {
            for (k, v) in env.iter_mut() {
                if k == key {
                    *v = value.to_owned();
                }
            }
        }
    }

    /// Waits until `name`'s `/readyz` answers 200.
    pub(super) async fn ready(
        &mut self,
        name: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
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
pub(super) fn consumer_groups() -> Vec<String> {
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
pub(super) struct Rig {
    pub(super) fleet: Fleet,
    pub(super) pg: Option<PostgresServer>,
    pub(super) redis: Option<RedisServer>,
    pub(super) kafka: Option<DevCluster>,
    pub(super) smtp: SmtpSink,
    pub(super) hooks: Arc<Hooks>,
    pub(super) failure_percent: u32,
    pub(super) kills: u64,
    /// Deliveries whose send was in flight (claimed, not recorded) when a workers process was
    /// killed: the only ones a provider may get twice.
    pub(super) in_flight_at_kills: std::collections::HashSet<String>,
}

impl Rig {
    /// SIGKILLs `name`. A workers process is frozen first (SIGSTOP) and the sends it had in
    /// flight — dedupe claims still `sending` in Redis — are noted before it dies.
    pub(super) async fn kill(&mut self, name: &'static str) {
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
pub(super) fn claims_in_flight(url: &str) -> anyhow::Result<Vec<String>> {
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

pub(super) fn run_migrations(fleet: &Fleet) -> anyhow::Result<()> {
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
