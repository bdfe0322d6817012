//! Group commit (`notification_service::intake`): concurrent requests share a transaction,
//! each is answered only once it is committed, and one request's failure is never another's.

use std::collections::HashMap;

use devkit::pg::TestDatabase;
use notification_service::{
    intake::{Intake, IntakeConfig, Planned},
    planning::{self, PlanningConfig},
    request::SendBody,
};
use sqlx::PgPool;
use uuid::Uuid;

fn planned(n: usize, created_by: &str) -> Planned {
    let cfg = PlanningConfig::default();
    let now = chrono::Utc::now();
    let body: SendBody = serde_json::from_value(serde_json::json!({
        "recipients": [{ "email": format!("r{n}@example.com") }, { "email": format!("s{n}@example.com") }],
        "category": "orders",
        "content": { "subject": "Shipped", "text": format!("order {n}") }
    }))
    .unwrap();
    let request =
        notification_service::request::validate(body, &cfg.enabled_channels, now).unwrap();
    let deliveries = planning::plan(&request, &HashMap::new(), &cfg, now);
    Planned::new(created_by, request, deliveries, now).unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_commit_together_and_a_bad_one_fails_alone() {
    let db = TestDatabase::create("group_commit").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    notification_service::MIGRATOR.run(&pool).await.unwrap();
    // One writer: whatever is queued while it writes goes into its next transaction.
    let intake = Intake::start(
        pool.clone(),
        &IntakeConfig {
            writers: 1,
            ..IntakeConfig::default()
        },
    );

    // 60 good requests and one Postgres refuses (a NUL byte in a text column), all at once.
    let mut handles = Vec::new();
    for n in 0..61 {
        let by = if n == 30 { "bad\u{0}caller" } else { "shop" };
        let intake = intake.clone();
        // Each request in its own context: its outbox rows must carry its request id, even
        // when another request's writer commits them.
        let context =
            common::telemetry::RequestContext::from_parts(Some(&format!("req-{n}")), None);
        handles.push(tokio::spawn(context.scope(async move {
            let p = planned(n, by);
            let id = p.id;
            (id, n, intake.write(p).await)
        })));
    }
    let mut ok = Vec::new();
    for h in handles {
        let (id, n, res) = h.await.unwrap();
        if n == 30 {
            assert!(res.is_err(), "the bad request must fail");
        } else {
            assert!(res.is_ok(), "request {n}: {res:?}");
            ok.push(id);
        }
    }
    // Every answered request is durable, with its deliveries and their outbox rows; the bad
    // one left nothing behind.
    assert_eq!(count(&pool, "SELECT count(*) FROM notifications").await, 60);
    assert_eq!(count(&pool, "SELECT count(*) FROM deliveries").await, 120);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 120);
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM notifications")
        .fetch_all(&pool)
        .await
        .unwrap();
    for id in &ok {
        assert!(stored.contains(id));
    }
    // Each outbox row names its own notification, whose content the relay fills in (the row
    // carries none: content is stored once per notification).
    let mismatched = count(
        &pool,
        "SELECT count(*) FROM outbox o JOIN deliveries d ON d.id = (o.headers->>'delivery-id')::uuid
         JOIN notifications n ON n.id = d.notification_id
         WHERE o.payload->>'notification_id' <> n.id::text OR o.payload ? 'content'
            OR o.headers->>'content' IS DISTINCT FROM 'notification'",
    )
    .await;
    assert_eq!(mismatched, 0);
    let wrong_request_id = count(
        &pool,
        "SELECT count(*) FROM outbox o JOIN deliveries d ON d.id = (o.headers->>'delivery-id')::uuid
         JOIN notifications n ON n.id = d.notification_id
         WHERE o.headers->>'x-request-id' <> 'req-' || substring(n.content->>'text' FROM 7)",
    )
    .await;
    let sample: Vec<(serde_json::Value, String)> = sqlx::query_as(
        "SELECT o.headers, n.content->>'text' FROM outbox o JOIN deliveries d ON d.id = (o.headers->>'delivery-id')::uuid
         JOIN notifications n ON n.id = d.notification_id LIMIT 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        wrong_request_id, 0,
        "each row keeps its own request's id: {sample:?}"
    );
}

/// Concurrent good requests really share transactions: rows written by one transaction carry
/// its id (`xmin`). Without group commit each would be a transaction of its own (a batch
/// with a bad request falls back to one each, hence a test of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_transactions() {
    let db = TestDatabase::create("group_commit_shared").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    notification_service::MIGRATOR.run(&pool).await.unwrap();
    let intake = Intake::start(
        pool.clone(),
        &IntakeConfig {
            writers: 1,
            ..IntakeConfig::default()
        },
    );
    let writes: Vec<_> = (0..40)
        .map(|n| {
            let intake = intake.clone();
            tokio::spawn(async move { intake.write(planned(n, "shop")).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM notifications").await, 40);
    let transactions = count(
        &pool,
        "SELECT count(DISTINCT xmin::text) FROM notifications",
    )
    .await;
    assert!(
        transactions < 40,
        "40 concurrent requests took {transactions} transactions: nothing was grouped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_group_commit_off_each_request_is_its_own_transaction() {
    let db = TestDatabase::create("group_commit_off").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    notification_service::MIGRATOR.run(&pool).await.unwrap();
    let intake = Intake::start(
        pool.clone(),
        &IntakeConfig {
            group_commit: false,
            ..IntakeConfig::default()
        },
    );
    intake.write(planned(1, "shop")).await.unwrap();
    assert!(intake.write(planned(2, "bad\u{0}")).await.is_err());
    assert_eq!(count(&pool, "SELECT count(*) FROM notifications").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 2);
    // Concurrent requests each commit on their own.
    let writes: Vec<_> = (10..20)
        .map(|n| {
            let intake = intake.clone();
            tokio::spawn(async move { intake.write(planned(n, "shop")).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT xmin::text) FROM notifications"
        )
        .await,
        11
    );
}
