//! Applying status events against the real Postgres: the retry schedule and `Retry-After`
//! clamping as written to the outbox, duplicates ignored, two repeater instances handling the
//! same event at once schedule one retry, a re-driven dead letter gets the schedule again and
//! a late status of an older attempt is recorded without moving the delivery.

use std::{path::Path, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use common::events::{Channel, ErrorInfo, Outcome, SCHEMA, StatusEvent};
use common::metrics::Registry;
use delivery::{LockedDelivery, RedriveKind};
use devkit::pg::TestDatabase;
use repeater::{
    config::RetryConfig,
    metrics::Metrics,
    status::{Applied, ApplyConfig, StatusHandler},
};
use sqlx::PgPool;
use uuid::Uuid;

/// A migrated database of the test's own, dropped with the returned guard.
async fn db() -> (PgPool, TestDatabase) {
    let db = TestDatabase::create("repeater").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    sqlx::migrate::Migrator::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/notify"),
    )
    .await
    .unwrap()
    .run(&pool)
    .await
    .unwrap();
    (pool, db)
}

/// A handler with metrics of its own (one repeater instance).
fn handler(pool: &PgPool, retry: RetryConfig) -> (StatusHandler, Registry) {
    let registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&registry));
    (
        StatusHandler::new(pool.clone(), retry, &ApplyConfig::default(), metrics),
        registry,
    )
}

/// The value of `line`'s metric (`name{labels}`) in `registry`, 0 when absent.
fn metric(registry: &Registry, series: &str) -> u64 {
    registry
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn delivery(pool: &PgPool, channel: Channel) -> Uuid {
    let (n, d) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO notifications (id, created_by, category, priority, content)
         VALUES ($1, 'billing', 'billing', 'normal', '{\"text\": \"hi\"}')",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO deliveries (id, notification_id, channel, lane, recipient, address, status)
         VALUES ($1, $2, $3, 'bulk', '{}', 'someone', 'queued')",
    )
    .bind(d)
    .bind(n)
    .bind(channel.as_str())
    .execute(pool)
    .await
    .unwrap();
    d
}

fn event(
    delivery: Uuid,
    attempt: u32,
    outcome: Outcome,
    retry_after_ms: Option<u64>,
) -> StatusEvent {
    StatusEvent {
        schema: SCHEMA,
        delivery_id: delivery,
        attempt,
        channel: Channel::Sms,
        outcome,
        provider: "sms_gateway".into(),
        provider_message_id: None,
        error: (outcome != Outcome::Sent).then(|| ErrorInfo {
            code: "sms_503".into(),
            message: "unavailable".into(),
        }),
        retry_after_ms,
        at: Utc::now(),
        duration_ms: 12,
    }
}

fn fixed(schedule: &[f64]) -> RetryConfig {
    RetryConfig {
        schedule_secs: schedule.to_vec(),
        jitter: 0.0,
        ..RetryConfig::default()
    }
}

/// When attempt `attempt`'s status was recorded (the database's clock).
async fn recorded_at(pool: &PgPool, delivery: Uuid, attempt: i32) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT recorded_at FROM attempts WHERE delivery_id = $1 AND attempt = $2")
        .bind(delivery)
        .bind(attempt)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `available_at` of each outbox row of `delivery`'s attempt `attempt`.
async fn dispatches(pool: &PgPool, delivery: Uuid, attempt: u32) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT available_at FROM outbox WHERE headers ->> 'delivery-id' = $1 AND headers ->> 'attempt' = $2",
    )
    .bind(delivery.to_string())
    .bind(attempt.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn retry_after_is_honoured_within_one_to_two_times_the_schedule() {
    let (pool, _db) = db().await;
    let (handler, _) = handler(&pool, fixed(&[10.0]));
    for (retry_after, expected) in [
        (None, 10),
        (Some(1_000), 10),
        (Some(15_000), 15),
        (Some(600_000), 20),
    ] {
        let d = delivery(&pool, Channel::Sms).await;
        let applied = handler
            .apply(&event(d, 1, Outcome::TransientFailure, retry_after))
            .await
            .unwrap();
        assert_eq!(
            applied,
            Applied::Retrying {
                next_attempt: 2,
                delay: Duration::from_secs(expected)
            },
            "Retry-After {retry_after:?}"
        );
        // Both instants are the database's, in one transaction: exactly the delay apart.
        let due = dispatches(&pool, d, 2).await;
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0] - recorded_at(&pool, d, 1).await).num_milliseconds(),
            expected as i64 * 1000,
            "attempt 2's due time, Retry-After {retry_after:?}"
        );
        let (status, current): (String, i32) =
            sqlx::query_as("SELECT status, current_attempt FROM deliveries WHERE id = $1")
                .bind(d)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), current), ("retrying", 2));
    }
}

#[tokio::test]
async fn a_channel_can_have_its_own_schedule() {
    let (pool, _db) = db().await;
    let mut cfg = fixed(&[30.0]);
    cfg.channels.insert(Channel::Sms, vec![2.0]);
    let (handler, _) = handler(&pool, cfg);
    let sms = delivery(&pool, Channel::Sms).await;
    let email = delivery(&pool, Channel::Email).await;
    let sms_delay = handler
        .apply(&event(sms, 1, Outcome::TransientFailure, None))
        .await
        .unwrap();
    let email_delay = handler
        .apply(&event(email, 1, Outcome::TransientFailure, None))
        .await
        .unwrap();
    assert_eq!(
        (sms_delay, email_delay),
        (
            Applied::Retrying {
                next_attempt: 2,
                delay: Duration::from_secs(2)
            },
            Applied::Retrying {
                next_attempt: 2,
                delay: Duration::from_secs(30)
            }
        )
    );
}

#[tokio::test]
async fn a_duplicate_status_event_changes_nothing() {
    let (pool, _db) = db().await;
    let (handler, registry) = handler(&pool, fixed(&[5.0]));
    let d = delivery(&pool, Channel::Sms).await;
    let ev = event(d, 1, Outcome::TransientFailure, None);
    assert!(matches!(
        handler.apply(&ev).await.unwrap(),
        Applied::Retrying { .. }
    ));
    assert_eq!(handler.apply(&ev).await.unwrap(), Applied::Duplicate);
    assert_eq!(handler.apply(&ev).await.unwrap(), Applied::Duplicate);
    let (attempts, current): (i32, i32) =
        sqlx::query_as("SELECT attempts, current_attempt FROM deliveries WHERE id = $1")
            .bind(d)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((attempts, current), (1, 2));
    assert_eq!(dispatches(&pool, d, 2).await.len(), 1);

    // A sent event delivered twice: one `sent`, then a duplicate.
    let sent = event(d, 2, Outcome::Sent, None);
    assert_eq!(handler.apply(&sent).await.unwrap(), Applied::Sent);
    assert_eq!(handler.apply(&sent).await.unwrap(), Applied::Duplicate);
    assert_eq!(
        metric(&registry, "notify_repeater_duplicate_status_events_total"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_repeater_instances_never_schedule_one_retry_twice() {
    let (pool, db) = db().await;
    // Two instances: their own handler, connection pool and metrics.
    let other = PgPool::connect(db.url()).await.unwrap();
    let (a, metrics_a) = handler(&pool, fixed(&[5.0, 5.0]));
    let (b, metrics_b) = handler(&other, fixed(&[5.0, 5.0]));
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(delivery(&pool, Channel::Sms).await);
    }
    let mut tasks = Vec::new();
    for &d in &ids {
        let ev = event(d, 1, Outcome::TransientFailure, None);
        for h in [a.clone(), b.clone()] {
            let ev = ev.clone();
            tasks.push(tokio::spawn(async move { h.apply(&ev).await.unwrap() }));
        }
    }
    let mut retrying = 0;
    let mut duplicates = 0;
    for t in tasks {
        match t.await.unwrap() {
            Applied::Retrying { .. } => retrying += 1,
            Applied::Duplicate => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((retrying, duplicates), (20, 20));
    for d in ids {
        assert_eq!(dispatches(&pool, d, 2).await.len(), 1, "delivery {d}");
    }
    // Each instance counted what it did, and together they counted each event once.
    let retried = |r: &Registry| {
        metric(
            r,
            "notify_repeater_retries_scheduled_total{channel=\"sms\"}",
        )
    };
    let dup = |r: &Registry| metric(r, "notify_repeater_duplicate_status_events_total");
    assert_eq!(retried(&metrics_a) + retried(&metrics_b), 20);
    assert_eq!(dup(&metrics_a) + dup(&metrics_b), 20);
}

#[tokio::test]
async fn a_redriven_dead_letter_gets_the_retry_schedule_again() {
    let (pool, _db) = db().await;
    let (handler, _) = handler(&pool, fixed(&[1.0]));
    let d = delivery(&pool, Channel::Sms).await;
    assert!(matches!(
        handler
            .apply(&event(d, 1, Outcome::TransientFailure, None))
            .await
            .unwrap(),
        Applied::Retrying {
            next_attempt: 2,
            ..
        }
    ));
    assert_eq!(
        handler
            .apply(&event(d, 2, Outcome::TransientFailure, None))
            .await
            .unwrap(),
        Applied::Dead {
            reason: "attempts_exhausted"
        }
    );

    let mut tx = pool.begin().await.unwrap();
    let locked = LockedDelivery::lock(&mut tx, d).await.unwrap().unwrap();
    let attempt = delivery::redrive(&mut tx, &locked, RedriveKind::DeadLetter, "ops", "dead")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(attempt, 3);
    assert_eq!(dispatches(&pool, d, 3).await.len(), 1);

    // Attempt 3 fails transiently: the re-drive started a new run, so a retry is scheduled.
    assert!(matches!(
        handler
            .apply(&event(d, 3, Outcome::TransientFailure, None))
            .await
            .unwrap(),
        Applied::Retrying {
            next_attempt: 4,
            ..
        }
    ));
    // Statuses of attempts already recorded change nothing.
    assert_eq!(
        handler
            .apply(&event(d, 1, Outcome::Sent, None))
            .await
            .unwrap(),
        Applied::Duplicate
    );
    let late = StatusEvent {
        attempt: 2,
        ..event(d, 2, Outcome::Sent, None)
    };
    assert_eq!(handler.apply(&late).await.unwrap(), Applied::Duplicate);
    assert_eq!(
        handler
            .apply(&event(d, 4, Outcome::Sent, None))
            .await
            .unwrap(),
        Applied::Sent
    );
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM deliveries WHERE id = $1")
            .bind(d)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("sent", 4));
    let redrives: i64 = sqlx::query_scalar("SELECT count(*) FROM redrives WHERE delivery_id = $1")
        .bind(d)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(redrives, 1);
}

#[tokio::test]
async fn a_status_for_an_older_attempt_after_a_redrive_is_recorded_as_stale() {
    let (pool, _db) = db().await;
    let (handler, _) = handler(&pool, fixed(&[1.0]));
    let d = delivery(&pool, Channel::Sms).await;
    // The scan re-drove attempt 1 as lost; then attempt 1's status shows up after all.
    let mut tx = pool.begin().await.unwrap();
    let locked = LockedDelivery::lock(&mut tx, d).await.unwrap().unwrap();
    delivery::redrive(&mut tx, &locked, RedriveKind::Lost, "repeater", "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        handler
            .apply(&event(d, 1, Outcome::Sent, None))
            .await
            .unwrap(),
        Applied::Stale
    );
    let (status, current, attempts): (String, i32, i32) =
        sqlx::query_as("SELECT status, current_attempt, attempts FROM deliveries WHERE id = $1")
            .bind(d)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), current, attempts), ("queued", 2, 1));
    assert_eq!(
        handler
            .apply(&event(d, 2, Outcome::Sent, None))
            .await
            .unwrap(),
        Applied::Sent
    );
}

/// Events applied concurrently share transactions (group commit); each still gets its own
/// answer and its delivery its own state: sent, retrying, a redelivered duplicate, an unknown
/// delivery, and two attempts of one delivery in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_are_applied_together_each_with_its_own_outcome() {
    let (pool, _db) = db().await;
    let (handler, registry) = handler(&pool, fixed(&[5.0]));
    let handler = Arc::new(handler);
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for _ in 0..40 {
        sent.push(delivery(&pool, Channel::Sms).await);
        failed.push(delivery(&pool, Channel::Sms).await);
    }
    let twice = delivery(&pool, Channel::Sms).await;
    let unknown = Uuid::now_v7();
    let mut events: Vec<StatusEvent> = Vec::new();
    events.extend(sent.iter().map(|&d| event(d, 1, Outcome::Sent, None)));
    events.extend(
        failed
            .iter()
            .map(|&d| event(d, 1, Outcome::TransientFailure, None)),
    );
    events.push(event(sent[0], 1, Outcome::Sent, None)); // redelivered
    events.push(event(unknown, 1, Outcome::Sent, None));
    events.push(event(twice, 1, Outcome::TransientFailure, None));
    events.push(event(twice, 2, Outcome::Sent, None));
    let tasks: Vec<_> = events
        .iter()
        .cloned()
        .map(|ev| {
            let h = handler.clone();
            tokio::spawn(async move { (ev.delivery_id, h.apply(&ev).await.unwrap()) })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let count = |f: &dyn Fn(&(Uuid, Applied)) -> bool| answers.iter().filter(|a| f(a)).count();
    assert_eq!(count(&|(d, a)| sent.contains(d) && *a == Applied::Sent), 40);
    assert_eq!(
        count(&|(d, a)| *d == sent[0] && *a == Applied::Duplicate),
        1
    );
    assert_eq!(
        count(&|(d, a)| failed.contains(d)
            && matches!(
                a,
                Applied::Retrying {
                    next_attempt: 2,
                    ..
                }
            )),
        40
    );
    assert_eq!(
        count(&|(d, a)| *d == unknown && *a == Applied::UnknownDelivery),
        1
    );

    let state = |d: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32, Option<DateTime<Utc>>)>(
                "SELECT status, attempts, sent_at FROM deliveries WHERE id = $1",
            )
            .bind(d)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for &d in &sent {
        let (status, attempts, sent_at) = state(d).await;
        assert_eq!((status.as_str(), attempts), ("sent", 1), "delivery {d}");
        assert!(sent_at.is_some());
    }
    for &d in &failed {
        assert_eq!(state(d).await.0, "retrying", "delivery {d}");
        assert_eq!(dispatches(&pool, d, 2).await.len(), 1, "delivery {d}");
    }
    // Whichever of its two events came first, the delivery ends sent with both attempts.
    let (status, attempts, _) = state(twice).await;
    assert_eq!((status.as_str(), attempts), ("sent", 2));
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 40 + 40 + 2);
    // Applied together: rows one transaction wrote share its id (`xmin`). Applied one by one,
    // the 82 attempts would be 82 transactions.
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        transactions < 82,
        "82 attempts in {transactions} transactions: nothing was applied together"
    );
    assert_eq!(
        metric(&registry, "notify_repeater_duplicate_status_events_total"),
        1
    );
}
