//! Scheduled sends fire at `send_at` and not before; cancel before dispatch stops them; cancel
//! after is 409; cancel racing the relay never leaves a delivery both sent and cancelled.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(
    stack: &Stack,
    token: &str,
    to: &str,
    send_at: Option<chrono::DateTime<Utc>>,
) -> Value {
    let mut body = json!({ "recipients": [{ "email": to }], "category": "reminder", "content": { "text": "tick" } });
    if let Some(at) = send_at {
        body["send_at"] = json!(at.to_rfc3339());
    }
    let (status, view) = stack
        .call(Method::POST, "/v1/notifications", Some(token), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    view
}

/// The outbox row of `notification`'s only delivery: (available_at, published_at).
async fn outbox_times(
    stack: &Stack,
    notification: &str,
) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "SELECT o.available_at, o.published_at FROM outbox o
         JOIN deliveries d ON o.headers ->> 'delivery-id' = d.id::text
         WHERE d.notification_id = $1::uuid",
    )
    .bind(notification)
    .fetch_all(&stack.notify_pool)
    .await
    .unwrap()
}

/// Brings notification `id`'s due row to 2 s from now on the database's clock (the time a
/// test would otherwise wait for, without a margin deciding the outcome); the new due time.
async fn due_in_two_seconds(stack: &Stack, id: &str) -> DateTime<Utc> {
    sqlx::query_scalar(
        "UPDATE outbox o SET available_at = clock_timestamp() + interval '2 seconds'
         FROM deliveries d
         WHERE o.headers ->> 'delivery-id' = d.id::text AND d.notification_id = $1::uuid
         RETURNING o.available_at",
    )
    .bind(id)
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_fires_at_send_at_and_not_before() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    // An hour ahead: still scheduled when the answer comes, however slow the machine.
    let at = Utc::now() + chrono::Duration::hours(1);
    let view = send(&stack, &svc, "sam@example.com", Some(at)).await;
    assert_eq!(view["status"], "scheduled");
    assert_eq!(view["deliveries"][0]["status"], "pending");
    let id = view["id"].as_str().unwrap();
    let times = outbox_times(&stack, id).await;
    assert_eq!(times.len(), 1);
    assert_eq!(
        times[0].0.timestamp_micros(),
        at.timestamp_micros(),
        "due at send_at"
    );
    assert_eq!(times[0].1, None, "not published before it is due");
    // The hour passes (but for 2 s): the scheduler must fire at the due time, not before.
    let due = due_in_two_seconds(&stack, id).await;
    let mails = stack.smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1);
    // Never early: the provider received it at or after its due time (one machine, one clock).
    assert!(
        mails[0].at >= due,
        "sent {} ms early",
        (due - mails[0].at).num_milliseconds()
    );
    // And not forgotten: published after it was due (both instants the database's). How soon
    // is the benchmark's to say; a bound here only guards against a relay that never looks.
    let times = outbox_times(&stack, id).await;
    let published = times[0].1.expect("published");
    let late = published - due;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(20),
        "published {} ms after it was due",
        late.num_milliseconds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_dispatch_stops_it_and_after_dispatch_is_409() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");

    // An hour ahead: nothing is due while the cancel is on its way, however slow the machine.
    let later_at = Utc::now() + chrono::Duration::hours(1);
    let later = send(&stack, &svc, "never@example.com", Some(later_at)).await;
    let path = format!("/v1/notifications/{}/cancel", later["id"].as_str().unwrap());
    let (status, view) = stack
        .call(Method::POST, &path, Some(&svc), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["deliveries"][0]["status"], "cancelled");
    assert_eq!(
        stack
            .call(Method::POST, &path, Some(&svc), None)
            .await
            .unwrap()
            .0,
        200,
        "cancel is idempotent"
    );
    // Another service may not cancel it.
    assert_eq!(
        stack
            .call(
                Method::POST,
                &path,
                Some(&stack.token(Role::Service, "shop")),
                None
            )
            .await
            .unwrap()
            .0,
        404
    );

    let now = send(&stack, &svc, "now@example.com", None).await;
    let id = now["id"].as_str().unwrap();
    stack
        .wait_settled(id, &svc, Duration::from_secs(20))
        .await
        .unwrap();
    let (status, problem) = stack
        .call(
            Method::POST,
            &format!("/v1/notifications/{id}/cancel"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("already_dispatched")),
        "{problem}"
    );
    assert_eq!(
        problem["errors"][0]["field"],
        format!(
            "deliveries.{}",
            now["deliveries"][0]["id"].as_str().unwrap()
        )
    );

    // Its dispatch message is gone from the outbox, so nothing can ever publish it (the
    // mechanism, rather than waiting an hour to see nothing happen).
    assert!(
        outbox_times(&stack, later["id"].as_str().unwrap())
            .await
            .is_empty()
    );
    let to: Vec<Vec<String>> = stack.smtp.mails().into_iter().map(|m| m.to).collect();
    assert_eq!(
        to,
        vec![vec!["now@example.com".to_owned()]],
        "the cancelled one never reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_the_relay_never_leave_a_delivery_both_sent_and_cancelled() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    const N: usize = 100;
    // Accepted an hour ahead (however long accepting 100 takes), then all made due 3 s from
    // now on the database's clock, together.
    let hour = Utc::now() + chrono::Duration::hours(1);
    let ids: Vec<String> = futures::future::join_all((0..N).map(|i| {
        let (stack, svc) = (&stack, &svc);
        async move {
            send(stack, svc, &format!("race{i}@example.com"), Some(hour)).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    }))
    .await;
    let due: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "WITH due AS (SELECT clock_timestamp() + interval '3 seconds' AS at)
         UPDATE outbox SET available_at = (SELECT at FROM due)
         WHERE published_at IS NULL AND topic LIKE 'notify.dispatch.%'
         RETURNING available_at",
    )
    .fetch_all(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(due.len(), N, "every dispatch waiting");
    let at = due[0];
    // Every broker answers 600 ms late from now on: the relay holds the due rows' locks for
    // at least that long while it waits for Kafka's acknowledgement — a wide race window.
    for b in stack.kafka().broker_ids() {
        stack
            .kafka()
            .set_round_trip_time(b, Duration::from_millis(600))
            .unwrap();
    }
    // Watch Postgres for a cancel waiting on a row lock the relay holds: the race happening.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (pool, stop) = (stack.notify_pool.clone(), watching.clone());
        async move {
            let mut seen = 0u32;
            while !stop.is_cancelled() {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'
                       AND query LIKE 'DELETE FROM outbox%'",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                seen += u32::from(waiting > 0);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    });

    // Cancels staggered over 1.5 s, from a second before send_at (those win: nothing is due)
    // to well inside the relay's 600 ms wait for Kafka (those wait on its row locks, then
    // lose) — a margin of a second either way, however loaded the machine.
    let wait = (at - Utc::now() - chrono::Duration::milliseconds(1000))
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let results: Vec<(u16, DateTime<Utc>)> =
        futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
            let (stack, svc) = (&stack, &svc);
            async move {
                tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
                let (status, _) = stack
                    .call(
                        Method::POST,
                        &format!("/v1/notifications/{id}/cancel"),
                        Some(svc),
                        None,
                    )
                    .await
                    .unwrap();
                (status, Utc::now())
            }
        }))
        .await;
    watching.cancel();
    let lock_waits = watcher.await.unwrap();
    for b in stack.kafka().broker_ids() {
        stack
            .kafka()
            .set_round_trip_time(b, Duration::ZERO)
            .unwrap();
    }
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{results:?}"
    );
    let cancelled = results.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "race: {cancelled} cancelled, {} already dispatched, a cancel seen waiting on the relay's lock {lock_waits} times",
        N - cancelled
    );
    // The race really happened: cancels answered before send_at won (nothing was due yet),
    // cancels came after the relay took the rows, and at least one waited on its row lock.
    assert!(
        results
            .iter()
            .filter(|(_, done)| *done < at)
            .all(|(s, _)| *s == 200),
        "a cancel that finished before send_at lost: {results:?}"
    );
    assert!(cancelled > 0, "no cancel won: {results:?}");
    assert!(cancelled < N, "no cancel lost to the relay: {results:?}");
    assert!(
        lock_waits > 0,
        "no cancel ever waited on the relay's row lock"
    );

    // Everything dispatched is delivered: every notification settles.
    let admin = stack.token(Role::Admin, "ops");
    for id in &ids {
        stack
            .wait_settled(id, &admin, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let expected = N - cancelled;
    assert_eq!(stack.smtp.mails().len(), expected, "{cancelled} cancelled");

    let both: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d
         WHERE d.status = 'cancelled'
           AND (d.attempts > 0 OR EXISTS (SELECT 1 FROM outbox o
                                          WHERE o.headers ->> 'delivery-id' = d.id::text AND o.published_at IS NOT NULL)
                OR EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id))",
    )
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(both, 0, "a delivery was both dispatched and cancelled");
    let cancelled_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'cancelled'")
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert_eq!(cancelled_rows as usize, cancelled);
    let sent_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'sent'")
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert_eq!(sent_rows as usize, expected);
    let mailed_cancelled: Vec<String> =
        sqlx::query_scalar("SELECT address FROM deliveries WHERE status = 'cancelled'")
            .fetch_all(&stack.notify_pool)
            .await
            .unwrap();
    assert!(
        stack
            .smtp
            .mails()
            .iter()
            .all(|m| !mailed_cancelled.contains(&m.to[0])),
        "a cancelled delivery reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_ttl_passes_before_it_is_sent_expires() {
    // The first attempt fails transiently; the retry would come due 30 s later, long after
    // the TTL (10 s: ample time for the first attempt, however loaded the machine).
    let stack = Stack::start(Options {
        retry_schedule: vec![30.0],
        ..Options::default()
    })
    .await
    .unwrap();
    stack.smtp.set_mode(devkit::smtp::Mode::FailTransient(1));
    let svc = stack.token(Role::Service, "billing");
    let body = json!({ "recipients": [{ "email": "otp@example.com" }], "category": "otp", "ttl_seconds": 10, "content": { "text": "123456" } });
    let (status, view) = stack
        .call(Method::POST, "/v1/notifications", Some(&svc), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    let settled = stack
        .wait_settled(view["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();
    let d = &settled["deliveries"][0];
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("expired"), Some("ttl_passed")),
        "{settled}"
    );
    // The repeater saw the retry would come due after the TTL and expired it at once: one
    // attempt, no pointless second dispatch.
    assert_eq!(d["attempts"], 1, "{settled}");
    assert_eq!(d["last_attempt"]["error"]["code"], "smtp_451");
    assert!(
        stack.smtp.mails().is_empty(),
        "an expired code is never sent"
    );
}
