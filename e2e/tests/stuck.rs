//! A Kafka cluster replaced by a fresh one while a dispatch message was on it: the message is
//! gone, nothing will ever report a status for it. The repeater's stuck scan sees the new
//! log is shorter than the recorded offset, re-drives the delivery once — two repeater
//! instances run, and the delivery is re-driven and sent exactly once.

use std::time::Duration;

use common::{
    db::DatabaseConfig,
    events::all_topics,
    http::HttpConfig,
    kafka::KafkaConfig,
    outbox::{RelayConfig, spawn_relay},
    redis::RedisConfig,
};
use delivery::LockedDelivery;
use devkit::{
    kafka::DevCluster, pg::TestDatabase, redis::TestPrefix, smtp::SmtpSink, tasks::TaskGroup,
};
use sqlx::PgPool;
use uuid::Uuid;

fn http() -> HttpConfig {
    HttpConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..HttpConfig::default()
    }
}

/// A queued email delivery with its attempt-1 dispatch in the outbox, as intake writes it.
async fn queued_email(pool: &PgPool, to: &str) -> Uuid {
    let (notification, delivery) = (Uuid::now_v7(), Uuid::now_v7());
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO notifications (id, created_by, category, priority, content)
         VALUES ($1, 'billing', 'billing', 'normal', '{\"subject\": \"Invoice\", \"text\": \"Your invoice\"}')",
    )
    .bind(notification)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO deliveries (id, notification_id, channel, lane, recipient, address, status)
         VALUES ($1, $2, 'email', 'bulk', jsonb_build_object('email', $3::text), $3, 'queued')",
    )
    .bind(delivery)
    .bind(notification)
    .bind(to)
    .execute(&mut *tx)
    .await
    .unwrap();
    let d = LockedDelivery::lock(&mut tx, delivery)
        .await
        .unwrap()
        .unwrap();
    d.enqueue_attempt(&mut tx, 1, None).await.unwrap();
    tx.commit().await.unwrap();
    delivery
}

/// A migrated notify database of the test's own, and topic names under a fresh prefix.
struct Setup {
    prefix: String,
    topics: Vec<String>,
    _database: TestDatabase,
    repeater_cfg: repeater::Config,
    pool: PgPool,
}

impl Setup {
    async fn new(letter: &str) -> Self {
        common::telemetry::init_for_tests();
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("{letter}{}.", &id[..8]);
        let topics = all_topics()
            .iter()
            .map(|t| format!("{prefix}{t}"))
            .collect();
        let database = TestDatabase::create("notify").await.unwrap();
        let db = DatabaseConfig::new(database.url().to_owned());
        let repeater_cfg = repeater::Config {
            http: http(),
            database: db.clone(),
            ..Default::default()
        };
        repeater::migrate(&repeater_cfg).await.unwrap();
        let pool = common::db::connect_lazy(&db).unwrap();
        Self {
            prefix,
            topics,
            _database: database,
            repeater_cfg,
            pool,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_lost_with_a_replaced_cluster_is_redriven_once_and_sent() {
    let Setup {
        prefix,
        topics,
        _database,
        repeater_cfg,
        pool,
    } = Setup::new("s").await;
    let delivery = queued_email(&pool, "replaced@example.test").await;

    // Cluster A takes the dispatch message; no worker ever reads it.
    let old = DevCluster::start(&topics, 3).unwrap();
    let kafka_on = |cluster: &DevCluster| KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        topic_prefix: prefix.clone(),
        ..KafkaConfig::default()
    };
    let relay_cfg = RelayConfig {
        poll_interval_ms: 100,
        ..RelayConfig::default()
    };
    let mut first = TaskGroup::new();
    let relay = spawn_relay(
        &pool,
        &kafka_on(&old),
        &relay_cfg,
        "test-relay",
        None,
        &first.token(),
    )
    .unwrap()
    .unwrap();
    first.spawn_unit("relay on cluster A", async move {
        let _ = relay.await;
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let offset = loop {
        let o: Option<i64> = sqlx::query_scalar(
            "SELECT kafka_offset FROM outbox WHERE headers ->> 'delivery-id' = $1",
        )
        .bind(delivery.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        if let Some(o) = o {
            break o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never published to cluster A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(offset, 0, "the first message of its partition");
    first.stop(Duration::from_secs(10)).await.unwrap();
    drop(old);

    // Cluster B: empty. The platform comes back on it with two repeater instances.
    let new = DevCluster::start(&topics, 3).unwrap();
    let kafka = kafka_on(&new);
    let smtp = SmtpSink::start(0, None).unwrap();
    let keys = TestPrefix::local();
    // Declared after cluster B: stopped before it, also when an assertion fails.
    let mut services = TaskGroup::new();
    let shutdown = services.token();
    let relay = spawn_relay(&pool, &kafka, &relay_cfg, "test-relay", None, &shutdown)
        .unwrap()
        .unwrap();
    services.spawn_unit("relay", async move {
        let _ = relay.await;
    });
    let workers_cfg = workers::Config {
        http: http(),
        kafka: kafka.clone(),
        redis: RedisConfig {
            key_prefix: keys.prefix().to_owned(),
            ..RedisConfig::default()
        },
        channels: vec![common::events::Channel::Email],
        email: workers::config::EmailConfig {
            smtp_url: smtp.url(),
            timeout_ms: 5_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    services.spawn("workers", workers::run(workers_cfg, l, shutdown.clone()));
    let mut repeaters = Vec::new();
    for i in 0..2 {
        let cfg = repeater::Config {
            kafka: kafka.clone(),
            stuck: repeater::stuck::StuckConfig {
                enabled: true,
                interval_secs: 0.2,
                visibility_timeout_secs: 1.0,
                batch_size: 100,
                ..Default::default()
            },
            ..repeater_cfg.clone()
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        repeaters.push(l.local_addr().unwrap());
        services.spawn(
            &format!("repeater-{i}"),
            repeater::run(cfg, l, shutdown.clone()),
        );
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s: String = sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
            .bind(delivery)
            .fetch_one(&pool)
            .await
            .unwrap();
        if s == "sent" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {s} after 60 s"
        );
        if let Some(t) = services.finished() {
            panic!("{t} exited");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let both scanners go round a few more times: nothing may be re-driven again.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let redrives: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT kind, detail, to_attempt FROM redrives WHERE delivery_id = $1")
            .bind(delivery)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(redrives.len(), 1, "{redrives:?}");
    assert_eq!(redrives[0].0, "lost");
    assert!(
        redrives[0].1.contains("replaced cluster"),
        "{}",
        redrives[0].1
    );
    assert_eq!(redrives[0].2, 2);
    let dispatches: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE headers ->> 'delivery-id' = $1")
            .bind(delivery.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(dispatches, 2, "attempt 1 (lost) and one re-drive");
    let attempts: Vec<(i32, String)> =
        sqlx::query_as("SELECT attempt, outcome FROM attempts WHERE delivery_id = $1")
            .bind(delivery)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, vec![(2, "sent".to_owned())]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["replaced@example.test".to_owned()]);

    // Each repeater counts its own work: together exactly one re-drive. The gauges are
    // refreshed by whichever instance scans; the status lag reaches 0 once the sent status is
    // committed (every second), so poll until some scan has seen it.
    let metrics = |addr: std::net::SocketAddr| async move {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let value = |text: &str, series: &str| -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let mut redriven = 0;
    for addr in &repeaters {
        redriven += value(
            &metrics(*addr).await,
            "notify_repeater_stuck_redriven_total{channel=\"email\"}",
        )
        .unwrap_or(0);
    }
    assert_eq!(redriven, 1, "re-drives counted over both instances");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'settled: loop {
        for addr in &repeaters {
            let text = metrics(*addr).await;
            let queued = value(&text, "notify_repeater_open_deliveries{status=\"queued\"}");
            let lag: Vec<Option<i64>> = (0..3)
                .map(|p| {
                    value(
                        &text,
                        &format!("notify_repeater_status_lag_messages{{partition=\"{p}\"}}"),
                    )
                })
                .collect();
            if queued == Some(0) && lag.iter().all(|l| *l == Some(0)) {
                break 'settled;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gauges never settled at 0 queued and 0 lag:\n{text}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    services.stop(Duration::from_secs(20)).await.unwrap();
}

/// How many deliveries the backlog test loses with its cluster.
const BACKLOG: i64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_clusters_ten_thousand_backlog_is_redriven_in_one_go() {
    let Setup {
        prefix,
        topics,
        _database,
        repeater_cfg,
        pool,
    } = Setup::new("b").await;
    // 10,000 queued emails with their attempt-1 dispatch in the outbox (one statement each).
    let mut tx = pool.begin().await.unwrap();
    let notification = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO notifications (id, created_by, category, priority, content)
         VALUES ($1, 'billing', 'billing', 'normal', '{\"text\": \"backlog\"}')",
    )
    .bind(notification)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO deliveries (id, notification_id, channel, lane, recipient, address, status)
         SELECT gen_random_uuid(), $1, 'email', 'bulk', '{}', 'r' || i || '@example.test', 'queued'
         FROM generate_series(1, $2) AS i",
    )
    .bind(notification)
    .bind(BACKLOG)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers)
         SELECT 'notify.dispatch.email.bulk', address, '{}',
                jsonb_build_object('delivery-id', id::text, 'attempt', '1')
         FROM deliveries",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Cluster A takes all of them; nothing consumes them.
    let old = DevCluster::start(&topics, 3).unwrap();
    let kafka_on = |cluster: &DevCluster| KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        topic_prefix: prefix.clone(),
        ..KafkaConfig::default()
    };
    let mut first = TaskGroup::new();
    let relay = spawn_relay(
        &pool,
        &kafka_on(&old),
        &RelayConfig {
            poll_interval_ms: 100,
            ..RelayConfig::default()
        },
        "test-relay",
        None,
        &first.token(),
    )
    .unwrap()
    .unwrap();
    first.spawn_unit("relay on cluster A", async move {
        let _ = relay.await;
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} rows never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop(Duration::from_secs(10)).await.unwrap();
    drop(old);

    // Cluster B is empty; one repeater on it re-drives the whole backlog.
    let new = DevCluster::start(&topics, 3).unwrap();
    let mut services = TaskGroup::new();
    let cfg = repeater::Config {
        kafka: kafka_on(&new),
        stuck: repeater::stuck::StuckConfig {
            enabled: true,
            interval_secs: 0.5,
            visibility_timeout_secs: 1.0,
            ..Default::default()
        },
        ..repeater_cfg
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = std::time::Instant::now();
    services.spawn("repeater", repeater::run(cfg, l, services.token()));
    // Inside nextest's 120 s kill, so this message is what a failure shows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let redriven: i64 = sqlx::query_scalar("SELECT count(*) FROM redrives")
            .fetch_one(&pool)
            .await
            .unwrap();
        if redriven >= BACKLOG {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{redriven} of {BACKLOG} re-driven after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    eprintln!(
        "re-drove {BACKLOG} lost deliveries in {:.1} s ({:.0}/s, debug build)",
        took.as_secs_f64(),
        BACKLOG as f64 / took.as_secs_f64()
    );
    let (once, attempt2): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT delivery_id) FROM redrives),
                (SELECT count(*) FROM deliveries WHERE current_attempt = 2 AND status = 'queued')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (once, attempt2),
        (BACKLOG, BACKLOG),
        "each re-driven exactly once"
    );
    services.stop(Duration::from_secs(20)).await.unwrap();
}
