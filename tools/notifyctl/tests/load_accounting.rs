//! The load tool's accounting: run against a stack that accepts every request but loses a
//! delivery, it must say so — one planned delivery that never ends, one never planned at all.
//!
//! The "stack" is a stand-in intake in front of a real `notify` database (the platform's
//! migrations): it writes each accepted notification and its delivery as `sent`, except that
//! it leaves the 5th request's delivery `queued` forever and never plans the 9th.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{Json, extract::State, http::StatusCode};
use devkit::pg::TestDatabase;
use notifyctl::{
    scenario::{self, LoadArgs, LoadChannel, Scenario},
    stack::{JwtInfo, StackFile, Tokens},
};
use sqlx::PgPool;
use uuid::Uuid;

struct Fake {
    pool: PgPool,
    n: AtomicU64,
}

async fn accept(
    State(fake): State<Arc<Fake>>,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let n = fake.n.fetch_add(1, Ordering::SeqCst);
    let id = Uuid::now_v7();
    let mut tx = fake.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO notifications (id, created_by, category, priority, content)
         VALUES ($1, 'load-test', 'bench', 'normal', $2)",
    )
    .bind(id)
    .bind(&body["content"])
    .execute(&mut *tx)
    .await
    .unwrap();
    if n != 8 {
        let status = if n == 4 { "queued" } else { "sent" };
        sqlx::query(
            "INSERT INTO deliveries (id, notification_id, channel, lane, recipient, status, sent_at)
             VALUES ($1, $2, 'webhook', 'bulk', $3, $4, CASE WHEN $4 = 'sent' THEN now() END)",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(&body["recipients"][0])
        .bind(status)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id.to_string() })),
    )
}

/// The batch route of the stand-in: each item accepted as a single send would be (the same
/// losses, counted over items), one result per item.
async fn accept_batch(
    State(fake): State<Arc<Fake>>,
    Json(body): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    let mut results = Vec::new();
    for item in body["notifications"].as_array().unwrap() {
        let (_, Json(answer)) = accept(State(fake.clone()), Json(item.clone())).await;
        results.push(serde_json::json!({ "status": 202, "id": answer["id"] }));
    }
    Json(serde_json::json!({ "results": results }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_that_loses_deliveries_is_reported_with_each_loss() {
    let db = TestDatabase::create("load_accounting").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/notify"
    )))
    .await
    .unwrap()
    .run(&pool)
    .await
    .unwrap();

    let fake = Arc::new(Fake {
        pool: pool.clone(),
        n: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/v1/notifications", axum::routing::post(accept))
        .route("/v1/notifications/batch", axum::routing::post(accept_batch))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("notify-load-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let stack = StackFile {
        url: format!("http://{addr}"),
        grpc_url: String::new(),
        bff_urls: Vec::new(),
        tokens: Tokens {
            user: "u".into(),
            service: "s".into(),
            admin: "a".into(),
        },
        user_id: String::new(),
        jwt: JwtInfo {
            alg: "HS256".into(),
            secret: String::new(),
            iss: String::new(),
            aud: String::new(),
        },
        processes: BTreeMap::new(),
        kafka_bootstrap_servers: String::new(),
        smtp: String::new(),
        mail_dir: String::new(),
        sinks_dir: String::new(),
        webhook_sink: "http://127.0.0.1:9/hook".into(),
        notify_database_url: db.url().to_owned(),
        users_database_url: String::new(),
        metrics: BTreeMap::new(),
        prometheus_url: None,
    };
    std::fs::write(dir.join("stack.json"), serde_json::to_vec(&stack).unwrap()).unwrap();
    let args = LoadArgs {
        scenario: Scenario::E2e,
        channel: LoadChannel::Webhook,
        rate: 20.0,
        duration_secs: 1,
        recipients: None,
        backlog: 0,
        batch_size: 100,
        pause_workers: false,
        settle_secs: 2,
        skip_drain: false,
        max_in_flight: 100,
        name: None,
        stack: dir.join("stack.json"),
        out: dir.join("out"),
    };
    let r = scenario::run_async(&args, true).await.unwrap();

    assert_eq!(r.accepted, 20);
    let d = &r.deliveries;
    assert_eq!(d.expected, 20);
    assert_eq!(d.terminal, 18);
    assert_eq!((d.lost, d.open, d.missing), (2, 1, 1), "{d:?}");
    assert_eq!(d.lost_notifications.len(), 2);
    assert_eq!(d.settled_after_s, None, "a run with losses never settles");
    assert_eq!(r.deliveries.by_status.get("sent"), Some(&18));
    assert_eq!(r.accept_to_sent_ms.count, 18);
    // The same accounting, in the files a reader opens.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/e2e-webhook.json")).unwrap()).unwrap();
    assert_eq!(saved["deliveries"]["lost"], 2);
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    assert!(
        html.contains("class=\"bad\">2<"),
        "the report shows the loss"
    );
    assert!(html.contains(&d.lost_notifications[0]));

    // The batch scenario counts notifications, not requests: 2 batches of 10, the same two
    // losses (the 5th and 9th notification of a fresh count).
    fake.n.store(0, Ordering::SeqCst);
    let batch = LoadArgs {
        scenario: Scenario::Batch,
        rate: 2.0,
        batch_size: 10,
        name: Some("batch".into()),
        ..args
    };
    let r = scenario::run_async(&batch, true).await.unwrap();
    server.abort();
    assert_eq!(r.accepted, 20, "notifications accepted, not requests");
    let d = &r.deliveries;
    assert_eq!((d.expected, d.terminal), (20, 18), "{d:?}");
    assert_eq!((d.lost, d.open, d.missing), (2, 1, 1), "{d:?}");
    assert_eq!(r.accept_ms.count, 2, "one latency per batch");
    let _ = std::fs::remove_dir_all(&dir);
}
