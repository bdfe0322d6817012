//! `notifyctl bench-inbox`: what the in-app inbox's real-time streams cost (decision 0029).
//!
//! 1. **Transport**: the same signals (`--signals`, at `--signal-rate`/s) published once and
//!    received by two subscribers — two bff instances — over Redis pub/sub and over a Kafka
//!    topic (the embedded 3-broker cluster, one consumer group per subscriber): publish →
//!    receive latency and this process's CPU for each.
//! 2. **Streams**: a release stack (`notifyctl up`, rate limits off); for each count of
//!    `--streams`, that many users each hold one stream on the *same* bff (its public port,
//!    not nginx): the bff's RSS before and once they are idle (the extra per stream), then one
//!    in-app notification to every one of them (1,000 recipients a request) and the time
//!    from the send until each stream has the item (p50, p99, max). The bench process's own
//!    CPU is reported beside every figure.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use common::auth::Role;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::launcher;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchInboxArgs {
    /// Stream counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub streams: Vec<usize>,
    /// Signals in the transport comparison.
    #[arg(long, default_value_t = 5000)]
    pub signals: usize,
    /// Signals per second in the transport comparison.
    #[arg(long, default_value_t = 1000)]
    pub signal_rate: u32,
    /// Where the report (inbox.json) and the stack's logs go.
    #[arg(long, default_value = "bench-inbox")]
    pub out: std::path::PathBuf,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    /// Skip the transport comparison.
    #[arg(long)]
    pub no_transport: bool,
}

/// Publish → receive latency of one transport, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct TransportFigures {
    pub transport: &'static str,
    pub received: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// This process's CPU while it ran (publisher and both subscribers), % of one core.
    pub harness_cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamFigures {
    pub streams: usize,
    pub opened_in_secs: f64,
    pub bff_rss_before_mib: f64,
    pub bff_rss_idle_mib: f64,
    /// (idle − before) / streams.
    pub extra_kib_per_stream: f64,
    pub delivered: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// From the first send until the last stream had its item.
    pub delivery_secs: f64,
    /// The bff's CPU while the items went out, % of one core.
    pub bff_cpu_percent: f64,
    /// This process's CPU (the streams' client side and the sends) meanwhile, % of one core.
    pub harness_cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InboxBenchReport {
    pub transports: Vec<TransportFigures>,
    pub streams: Vec<StreamFigures>,
}

pub fn run(args: BenchInboxArgs) -> anyhow::Result<InboxBenchReport> {
    raise_file_limit();
    // The launcher runs a runtime of its own: each part here gets one, never nested.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let out = std::path::absolute(&args.out)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let mut report = InboxBenchReport {
        transports: Vec::new(),
        streams: Vec::new(),
    };
    if !args.no_transport {
        report.transports = runtime()?.block_on(transports(&args))?;
    }
    let up = crate::bench::bench_stack(&out, &args.postgres)?;
    eprintln!("bench-inbox: starting the stack (release build, rate limits off) …");
    let running = launcher::start(&up)?;
    let stack = running.stack.clone();
    let result = runtime()?.block_on(async {
        for &n in &args.streams {
            eprintln!("bench-inbox: {n} streams on one bff …");
            let f = streams(&stack, n).await?;
            eprintln!(
                "  opened in {:.1} s; bff RSS {:.1} → {:.1} MiB idle ({:.1} KiB a stream)",
                f.opened_in_secs, f.bff_rss_before_mib, f.bff_rss_idle_mib, f.extra_kib_per_stream
            );
            eprintln!(
                "  {} items: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all in {:.1} s (bff CPU {:.0} %, harness CPU {:.0} %)",
                f.delivered,
                f.latency_p50_ms,
                f.latency_p99_ms,
                f.latency_max_ms,
                f.delivery_secs,
                f.bff_cpu_percent,
                f.harness_cpu_percent
            );
            report.streams.push(f);
        }
        anyhow::Ok(())
    });
    drop(running);
    if let Err(e) = launcher::forget_redis_keys(&up.redis, &launcher::redis_prefix(&up.db_prefix)) {
        eprintln!("  (the stack's Redis keys were not removed: {e})");
    }
    result?;
    std::fs::write(out.join("inbox.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

/// The transport comparison: Redis pub/sub, then Kafka.
async fn transports(args: &BenchInboxArgs) -> anyhow::Result<Vec<TransportFigures>> {
    eprintln!(
        "bench-inbox: {} signals at {}/s to two subscribers, Redis pub/sub then Kafka …",
        args.signals, args.signal_rate
    );
    let mut all = Vec::new();
    for t in [
        redis_transport(args.signals, args.signal_rate).await?,
        kafka_transport(args.signals, args.signal_rate).await?,
    ] {
        eprintln!(
            "  {:<14} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} received; harness CPU {:.0} %)",
            t.transport, t.p50_ms, t.p99_ms, t.max_ms, t.received, t.harness_cpu_percent
        );
        all.push(t);
    }
    Ok(all)
}

/// Streams are connections: the soft limit of open files up to the hard one (the stack's
/// processes, started from here, inherit it).
#[allow(unsafe_code)]
pub fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// CPU seconds this process has used.
#[allow(unsafe_code)]
pub(crate) fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage fills a local struct.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }
}

/// CPU seconds process `pid` has used (`/proc/<pid>/stat`, utime + stime).
#[allow(unsafe_code)]
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn now_nanos(origin: std::time::Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// Latency figures of `received` nanosecond delays.
fn figures(
    transport: &'static str,
    mut delays_ns: Vec<u64>,
    cpu_secs: f64,
    wall_secs: f64,
) -> TransportFigures {
    delays_ns.sort_unstable();
    let ms: Vec<f64> = delays_ns.iter().map(|d| *d as f64 / 1e6).collect();
    TransportFigures {
        transport,
        received: ms.len(),
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        harness_cpu_percent: cpu_secs / wall_secs.max(1e-9) * 100.0,
    }
}

/// Up to `want` delays from `rx`, waiting at most 30 s for them.
async fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>, want: usize) -> Vec<u64> {
    let mut delays = Vec::with_capacity(want);
    let deadline = Instant::now() + Duration::from_secs(30);
    while delays.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => delays.push(d),
            _ => break,
        }
    }
    delays
}

/// Publishes `n` signals (each its send time) at `rate`/s.
async fn pace(
    n: usize,
    rate: u32,
    mut publish: impl AsyncFnMut(u64) -> anyhow::Result<()>,
    origin: std::time::Instant,
) -> anyhow::Result<()> {
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..n {
        tick.tick().await;
        publish(now_nanos(origin)).await?;
    }
    Ok(())
}

async fn redis_transport(n: usize, rate: u32) -> anyhow::Result<TransportFigures> {
    let url = "redis://127.0.0.1:6379";
    let channel = format!("bench:inbox:{}", uuid::Uuid::new_v4().simple());
    let origin = std::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let client = redis::Client::open(url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        let tx = tx.clone();
        subscribers.push(tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            let mut got = 0;
            while let Some(m) = messages.next().await {
                let sent: u64 = m
                    .get_payload::<String>()
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let _ = tx.send(now_nanos(origin).saturating_sub(sent));
                got += 1;
                if got == n {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let (cpu0, wall0) = (own_cpu_secs(), Instant::now());
    pace(
        n,
        rate,
        async |sent: u64| {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(sent.to_string())
                .query_async(&mut conn)
                .await?;
            Ok(())
        },
        origin,
    )
    .await?;
    let delays = collect(&mut rx, 2 * n).await;
    let (cpu, wall) = (own_cpu_secs() - cpu0, wall0.elapsed().as_secs_f64());
    for s in subscribers {
        s.abort();
    }
    Ok(figures("redis-pubsub", delays, cpu, wall))
}

/// One consumer group per subscriber on a Kafka topic of the embedded cluster.
async fn kafka_transport(n: usize, rate: u32) -> anyhow::Result<TransportFigures> {
    use common::kafka::runner::{HandleError, MessageHandler, RunnerConfig};
    use rdkafka::{Message, message::OwnedMessage, producer::FutureRecord};

    struct Receive {
        origin: std::time::Instant,
        tx: tokio::sync::mpsc::UnboundedSender<u64>,
    }
    impl MessageHandler for Receive {
        async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
            let sent: u64 = std::str::from_utf8(raw.payload().unwrap_or_default())
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let _ = self.tx.send(now_nanos(self.origin).saturating_sub(sent));
            Ok(())
        }
    }

    let topic = "bench.inbox";
    let cluster = devkit::kafka::DevCluster::start(&[topic.to_owned()], 3)?;
    let kafka = common::kafka::KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        ..common::kafka::KafkaConfig::default()
    };
    let origin = std::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let membership = common::kafka::Membership::default();
    let shutdown = CancellationToken::new();
    let mut consumers = Vec::new();
    for i in 0..2 {
        consumers.push(common::kafka::runner::spawn(
            &kafka,
            &format!("bench-bff-{i}"),
            topic,
            Arc::new(Receive {
                origin,
                tx: tx.clone(),
            }),
            RunnerConfig::default(),
            &membership,
            &shutdown,
        )?);
    }
    drop(tx);
    let joined = Instant::now() + Duration::from_secs(30);
    while membership.check().is_err() {
        anyhow::ensure!(
            Instant::now() < joined,
            "the Kafka consumers did not join in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = common::kafka::producer(&kafka, "bench-inbox")?;
    // Each message is acknowledged before the next: a signal goes out as its change commits.
    let (cpu0, wall0) = (own_cpu_secs(), Instant::now());
    let mut i = 0u64;
    pace(
        n,
        rate,
        async |sent: u64| {
            i += 1;
            let payload = sent.to_string();
            let key = i.to_string();
            producer
                .send(
                    FutureRecord::to(&kafka.topic(topic))
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("publishing: {e}"))?;
            Ok(())
        },
        origin,
    )
    .await?;
    let delays = collect(&mut rx, 2 * n).await;
    let (cpu, wall) = (own_cpu_secs() - cpu0, wall0.elapsed().as_secs_f64());
    shutdown.cancel();
    for c in consumers {
        let _ = c.await;
    }
    drop(cluster);
    Ok(figures("kafka", delays, cpu, wall))
}

/// `n` users holding a stream each on the first bff; then an item for each.
async fn streams(stack: &crate::stack::StackFile, n: usize) -> anyhow::Result<StreamFigures> {
    let bff_url = stack
        .bff_urls
        .first()
        .context("the stack file names no bff (an older `notifyctl up`)")?
        .clone();
    let bff_pid = *stack
        .processes
        .get("bff-1")
        .context("the stack file has no bff-1 process")?;
    let users = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&stack.users_database_url)
        .await?;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, $1) RETURNING id",
    )
    .bind(n as i64)
    .fetch_all(&users)
    .await?;
    let jwt = stack.jwt_config();
    let now = chrono::Utc::now().timestamp();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .build()?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_mib(bff_pid);
    let ready = Arc::new(AtomicUsize::new(0));
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let stop = CancellationToken::new();
    let opened = Instant::now();
    let mut holders = Vec::with_capacity(n);
    let open_slots = Arc::new(tokio::sync::Semaphore::new(200));
    for (i, id) in ids.iter().enumerate() {
        let token = common::auth::mint_claims(
            &jwt,
            &common::auth::Claims {
                sub: id.to_string(),
                role: Role::User,
                exp: now + 3600,
                iat: now,
                nbf: None,
                iss: jwt.issuer.clone(),
                aud: jwt.audience.clone(),
            },
        )?;
        let (http, url, ready, arrived_tx, stop, slots) = (
            http.clone(),
            format!("{bff_url}/v1/me/inbox/stream"),
            ready.clone(),
            arrived_tx.clone(),
            stop.clone(),
            open_slots.clone(),
        );
        holders.push(tokio::spawn(async move {
            let permit = slots.acquire_owned().await;
            let resp = http.get(&url).bearer_auth(&token).send().await;
            drop(permit);
            let Ok(mut resp) = resp else { return };
            if !resp.status().is_success() {
                return;
            }
            let mut first = true;
            loop {
                let chunk = tokio::select! {
                    _ = stop.cancelled() => return,
                    c = resp.chunk() => c,
                };
                let Ok(Some(chunk)) = chunk else { return };
                if first {
                    first = false;
                    ready.fetch_add(1, Ordering::SeqCst);
                }
                if memchr_inbox(&chunk) {
                    let _ = arrived_tx.send((i, Instant::now()));
                }
            }
        }));
    }
    drop(arrived_tx);
    let deadline = Instant::now() + Duration::from_secs(300);
    while ready.load(Ordering::SeqCst) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} streams opened in 300 s",
            ready.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened_in = opened.elapsed().as_secs_f64();
    // Idle: past a heartbeat, allocator settled.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rss_idle = rss_mib(bff_pid);

    // One in-app item each, 1,000 recipients a request, sent one after another.
    let (cpu0, bff_cpu0, wall0) = (own_cpu_secs(), cpu_secs(bff_pid), Instant::now());
    let mut sent_at: HashMap<usize, Instant> = HashMap::with_capacity(n);
    let base = stack.url.trim_end_matches('/');
    for (c, chunk) in ids.chunks(1000).enumerate() {
        let recipients: Vec<serde_json::Value> = chunk
            .iter()
            .map(|id| serde_json::json!({ "user_id": id }))
            .collect();
        let at = Instant::now();
        for j in 0..chunk.len() {
            sent_at.insert(c * 1000 + j, at);
        }
        let resp = http
            .post(format!("{base}/v1/notifications"))
            .bearer_auth(&stack.tokens.service)
            .json(&serde_json::json!({
                "recipients": recipients,
                "category": "bench",
                "channels": ["in_app"],
                "content": { "subject": "Bench", "text": "An in-app item" }
            }))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 202,
            "send answered {}",
            resp.status()
        );
    }
    let mut delays = Vec::with_capacity(n);
    let mut last = wall0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while delays.len() < n {
        match tokio::time::timeout_at(deadline, arrived.recv()).await {
            Ok(Some((i, at))) => {
                if let Some(s) = sent_at.remove(&i) {
                    delays.push(at.duration_since(s).as_secs_f64() * 1000.0);
                    last = at;
                }
            }
            _ => break,
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let (cpu, bff_cpu) = (own_cpu_secs() - cpu0, cpu_secs(bff_pid) - bff_cpu0);
    stop.cancel();
    for h in holders {
        let _ = h.await;
    }
    delays.sort_by(f64::total_cmp);
    Ok(StreamFigures {
        streams: n,
        opened_in_secs: opened_in,
        bff_rss_before_mib: rss_before,
        bff_rss_idle_mib: rss_idle,
        extra_kib_per_stream: (rss_idle - rss_before) * 1024.0 / n as f64,
        delivered: delays.len(),
        latency_p50_ms: percentile(&delays, 0.5),
        latency_p99_ms: percentile(&delays, 0.99),
        latency_max_ms: delays.last().copied().unwrap_or(0.0),
        delivery_secs: last.duration_since(wall0).as_secs_f64(),
        bff_cpu_percent: bff_cpu / wall * 100.0,
        harness_cpu_percent: cpu / wall * 100.0,
    })
}

/// Whether a chunk of a stream holds an `inbox` event.
fn memchr_inbox(chunk: &[u8]) -> bool {
    chunk.windows(12).any(|w| w == b"event: inbox")
}
