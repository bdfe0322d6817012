//! The outbox relay against the real Postgres and the Kafka mock cluster: only committed rows
//! are ever published, each once, and a commit wakes the relay through LISTEN/NOTIFY.

use std::{path::Path, time::Duration};

use common::{
    kafka::{KafkaConfig, consumer, producer},
    outbox::{OutboxMessage, Relay, RelayConfig, enqueue},
};
use devkit::kafka::DevCluster;
use rdkafka::{Message, consumer::Consumer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

async fn setup() -> (DevCluster, KafkaConfig, PgPool) {
    let prefix = format!("r{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let cluster = DevCluster::start(&[format!("{prefix}notify.events")], 3).unwrap();
    let kafka = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        topic_prefix: prefix,
        ..KafkaConfig::default()
    };
    let url = devkit::pg::fresh_database("relay").await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/notify");
    sqlx::migrate::Migrator::new(migrations)
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (cluster, kafka, pool)
}

fn message(text: &str) -> OutboxMessage {
    OutboxMessage::new("notify.events", "k", &serde_json::json!({ "text": text })).unwrap()
}

/// Reads what arrives on the topic within `window`.
async fn received(kafka: &KafkaConfig, group: &str, window: Duration) -> Vec<String> {
    positioned(kafka, group, window)
        .await
        .into_iter()
        .map(|(text, _, _)| text)
        .collect()
}

/// Like [`received`], with each message's partition and offset.
async fn positioned(kafka: &KafkaConfig, group: &str, window: Duration) -> Vec<(String, i32, i64)> {
    let c = consumer(kafka, group, "test").unwrap();
    c.subscribe(&[&kafka.topic("notify.events")]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, c.recv()).await {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        out.push((
            v["text"].as_str().unwrap().to_owned(),
            m.partition(),
            m.offset(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_rows_are_published_and_each_once() {
    let (_cluster, kafka, pool) = setup().await;
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

    let got = positioned(&kafka, "g1", Duration::from_secs(5)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_relay_through_listen_notify() {
    let (_cluster, kafka, pool) = setup().await;
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
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await; // LISTEN is in place

    let mut tx = pool.begin().await.unwrap();
    enqueue(&mut tx, &[message("woken")]).await.unwrap();
    tx.commit().await.unwrap();

    let got = received(&kafka, "g2", Duration::from_secs(5)).await;
    assert_eq!(got, vec!["woken"]);
    stop.cancel();
    task.await.unwrap();
}
