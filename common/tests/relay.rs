//! The outbox relay against the real Postgres and the Kafka mock cluster: only committed rows
//! are ever published, each once, and a commit wakes the relay through LISTEN/NOTIFY.
//!
//! The first test steps the relay by hand (`publish_batch`), so each assertion is about one
//! known batch — no timing involved.

use std::{path::Path, time::Duration};

use common::{
    kafka::{KafkaConfig, producer},
    outbox::{OutboxMessage, Relay, RelayConfig, enqueue},
};
use devkit::{kafka::DevCluster, pg::TestDatabase, tasks::TaskGroup};
use rdkafka::Message;
use sqlx::PgPool;

async fn setup() -> (DevCluster, KafkaConfig, PgPool, TestDatabase) {
    let prefix = format!("r{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let cluster = DevCluster::start(&[format!("{prefix}notify.events")], 3).unwrap();
    let kafka = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        topic_prefix: prefix,
        ..KafkaConfig::default()
    };
    let db = TestDatabase::create("relay").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/notify");
    sqlx::migrate::Migrator::new(migrations)
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (cluster, kafka, pool, db)
}

fn message(text: &str) -> OutboxMessage {
    OutboxMessage::new("notify.events", "k", &serde_json::json!({ "text": text })).unwrap()
}

/// Every message on the topic, which must hold exactly `n`, each with its partition and offset.
async fn positioned(kafka: &KafkaConfig, n: usize) -> Vec<(String, i32, i64)> {
    let (bootstrap, topic) = (
        kafka.bootstrap_servers.clone(),
        kafka.topic("notify.events"),
    );
    let messages = tokio::task::spawn_blocking(move || {
        devkit::kafka::read_topic(&bootstrap, &topic, Duration::from_secs(15))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(messages.len(), n, "messages on the topic");
    messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            (
                v["text"].as_str().unwrap().to_owned(),
                m.partition(),
                m.offset(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_rows_are_published_and_each_once() {
    let (_cluster, kafka, pool, _db) = setup().await;
    let relay = Relay::new(
        pool.clone(),
        producer(&kafka, "t").unwrap(),
        kafka.clone(),
        RelayConfig::default(),
    );

    let mut rolled_back = pool.begin().await.unwrap();
    enqueue(&mut rolled_back, &[message("rolled-back")])
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();

    let mut committed = pool.begin().await.unwrap();
    enqueue(
        &mut committed,
        &[message("committed-1"), message("committed-2")],
    )
    .await
    .unwrap();
    committed.commit().await.unwrap();

    let mut open = pool.begin().await.unwrap();
    enqueue(&mut open, &[message("still-open")]).await.unwrap();

    assert_eq!(
        relay.publish_batch().await.unwrap(),
        2,
        "the open transaction's row is invisible"
    );
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "published rows are not sent again"
    );
    open.commit().await.unwrap();
    assert_eq!(relay.publish_batch().await.unwrap(), 1);

    let got = positioned(&kafka, 3).await;
    // Each row records where its message landed (the stuck-delivery scan relies on it).
    for (text, partition, offset) in &got {
        let stored: (Option<i32>, Option<i64>) = sqlx::query_as(
            "SELECT kafka_partition, kafka_offset FROM outbox WHERE payload->>'text' = $1",
        )
        .bind(text)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(stored, (Some(*partition), Some(*offset)), "{text}");
    }
    let got: Vec<String> = got.into_iter().map(|(t, _, _)| t).collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["committed-1", "committed-2", "still-open"],
        "{got:?}"
    );
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0);
}

/// When the row whose payload text is `text` was published, if it was.
async fn published(pool: &PgPool, text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT published_at FROM outbox WHERE payload->>'text' = $1")
        .bind(text)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn commit(pool: &PgPool, text: &str) {
    let mut tx = pool.begin().await.unwrap();
    enqueue(&mut tx, &[message(text)]).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_relay_through_listen_notify() {
    let (_cluster, kafka, pool, _db) = setup().await;
    // A poll interval far beyond the test: only NOTIFY can wake the relay in time.
    let cfg = RelayConfig {
        poll_interval_ms: 600_000,
        ..RelayConfig::default()
    };
    let relay = Relay::new(
        pool.clone(),
        producer(&kafka, "t").unwrap(),
        kafka.clone(),
        cfg,
    );
    // A row waiting before the start: once it is published, the relay has run LISTEN and
    // its first batch, and sleeps until woken.
    commit(&pool, "before-start").await;
    let mut tasks = TaskGroup::new();
    let stop = tasks.token();
    tasks.spawn_unit("relay", relay.run(stop));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while published(&pool, "before-start").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never published its first batch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The control: with the NOTIFY trigger off, a commit stays unpublished — the relay is
    // asleep, not polling, so what follows can only be NOTIFY's doing.
    sqlx::query("ALTER TABLE outbox DISABLE TRIGGER outbox_notify")
        .execute(&pool)
        .await
        .unwrap();
    commit(&pool, "silent").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(published(&pool, "silent").await, None, "the relay polled");
    sqlx::query("ALTER TABLE outbox ENABLE TRIGGER outbox_notify")
        .execute(&pool)
        .await
        .unwrap();

    commit(&pool, "woken").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while published(&pool, "woken").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commit's NOTIFY did not wake the relay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Woken, it published everything due — the silent row too.
    assert!(published(&pool, "silent").await.is_some());
    let mut got: Vec<String> = positioned(&kafka, 3)
        .await
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    got.sort();
    assert_eq!(got, vec!["before-start", "silent", "woken"]);
    tasks.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_kafka_refuses_is_set_aside_and_the_rows_behind_it_are_published() {
    let (_cluster, kafka, pool, _db) = setup().await;
    let relay = Relay::new(
        pool.clone(),
        producer(&kafka, "t").unwrap(),
        kafka.clone(),
        RelayConfig::default(),
    );
    // First in line: 2 MB, over the producer's 1 MB message limit. Kafka will never take it.
    let huge = "x".repeat(2 << 20);
    let mut tx = pool.begin().await.unwrap();
    enqueue(
        &mut tx,
        &[
            message(&huge).header("delivery-id", "d-huge"),
            message("behind-1"),
            message("behind-2"),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // One batch: the two behind it are published, the refused one is set aside for good.
    assert_eq!(relay.publish_batch().await.unwrap(), 2);
    let (failed_at, last_error): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as(
            "SELECT failed_at, last_error FROM outbox WHERE headers ->> 'delivery-id' = 'd-huge'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(failed_at.is_some(), "the refused row is marked failed");
    assert!(
        last_error.as_deref().is_some_and(|e| e.contains("size")),
        "{last_error:?}"
    );
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "and never tried again"
    );
    let mut got: Vec<String> = positioned(&kafka, 2)
        .await
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    got.sort();
    assert_eq!(got, vec!["behind-1", "behind-2"]);
}

/// A partition without a leader for minutes looks, to the relay, exactly like a row of its own
/// failing while the rest of the batch goes through. Such a row used to be set aside after 5
/// tries — its delivery then ended `dead` and fell back to another channel, an event was lost
/// for good. Now it waits, however many tries it takes, and is published once the partition
/// has a leader again; how long it has been failing is on the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_failing_transiently_waits_and_is_never_set_aside() {
    let prefix = format!("r{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (stalled, healthy) = (
        format!("{prefix}notify.events"),
        format!("{prefix}notify.status"),
    );
    let cluster = DevCluster::start(&[stalled.clone(), healthy.clone()], 1).unwrap();
    cluster.set_leader(&stalled, 0, 1).unwrap();
    cluster.set_leader(&healthy, 0, 2).unwrap();
    let kafka = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        topic_prefix: prefix,
        // A record for the leaderless partition times out after 1 s instead of 30.
        properties: [("message.timeout.ms".to_owned(), "1000".to_owned())].into(),
    };
    let db = TestDatabase::create("relay").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/notify");
    sqlx::migrate::Migrator::new(migrations)
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let relay = Relay::new(
        pool.clone(),
        producer(&kafka, "t").unwrap(),
        kafka.clone(),
        RelayConfig::default(),
    );
    cluster.broker_down(1).unwrap();

    let row = |topic: &str, text: &str| {
        OutboxMessage::new(topic, "k", &serde_json::json!({ "text": text })).unwrap()
    };
    for round in 0..8 {
        let mut tx = pool.begin().await.unwrap();
        let mut rows = vec![row("notify.status", &format!("ok-{round}"))];
        if round == 0 {
            rows.insert(0, row("notify.events", "waits"));
        }
        enqueue(&mut tx, &rows).await.unwrap();
        tx.commit().await.unwrap();
        // Its backoff moved it back: make it due again, so every round tries it.
        sqlx::query("UPDATE outbox SET available_at = now() WHERE topic = 'notify.events'")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(relay.publish_batch().await.unwrap(), 1, "round {round}");
    }
    let (attempts, failed_at, first_failed): (
        i32,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT attempts, failed_at, first_failed_at FROM outbox WHERE topic = 'notify.events'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 8);
    assert!(
        failed_at.is_none(),
        "a transient failure never sets a row aside"
    );
    assert!(
        first_failed.is_some(),
        "how long it has been failing is kept"
    );

    // The partition has a leader again: the row goes out, once.
    cluster.broker_up(1).unwrap();
    sqlx::query("UPDATE outbox SET available_at = now() WHERE topic = 'notify.events'")
        .execute(&pool)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        relay.publish_batch().await.ok();
        let published: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT published_at FROM outbox WHERE topic = 'notify.events'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if published.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the row was not published after the broker came back"
        );
        sqlx::query("UPDATE outbox SET available_at = now() WHERE topic = 'notify.events'")
            .execute(&pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (bootstrap, topic) = (kafka.bootstrap_servers.clone(), stalled.clone());
    let on_topic = tokio::task::spawn_blocking(move || {
        devkit::kafka::read_topic(&bootstrap, &topic, Duration::from_secs(15))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(on_topic.len(), 1);
}
