//! Scheduled sends fire at `send_at` and not before; cancel before dispatch stops them; cancel
//! after is 409; cancel racing the relay never leaves a delivery both sent and cancelled.

use std::time::{Duration, Instant};

use chrono::Utc;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_fires_at_send_at_and_not_before() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let at = Utc::now() + chrono::Duration::seconds(2);
    let view = send(&stack, &svc, "sam@example.com", Some(at)).await;
    assert_eq!(view["status"], "scheduled");
    assert_eq!(view["deliveries"][0]["status"], "pending");
    let started = Instant::now();
    let smtp = stack.smtp.clone();
    let mails = tokio::task::spawn_blocking(move || smtp.wait_for(1, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(mails.len(), 1);
    let arrived = Utc::now();
    assert!(
        arrived >= at,
        "sent {} ms early",
        (at - arrived).num_milliseconds()
    );
    assert!(
        arrived - at < chrono::Duration::seconds(1),
        "sent {} ms late",
        (arrived - at).num_milliseconds()
    );
    assert!(started.elapsed() > Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_dispatch_stops_it_and_after_dispatch_is_409() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");

    let later = send(
        &stack,
        &svc,
        "never@example.com",
        Some(Utc::now() + chrono::Duration::seconds(2)),
    )
    .await;
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

    tokio::time::sleep(Duration::from_secs(3)).await; // past the cancelled one's send_at
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
    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            send(&stack, &svc, &format!("race{i}@example.com"), Some(at)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Fire the cancels staggered from just before send_at to well after it, so they overlap
    // the relay publishing the due rows (it polls every 100 ms in tests).
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait.saturating_sub(Duration::from_millis(50))).await;
    let results = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
        let svc = svc.clone();
        let stack = &stack;
        async move {
            tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
            stack
                .call(
                    Method::POST,
                    &format!("/v1/notifications/{id}/cancel"),
                    Some(&svc),
                    None,
                )
                .await
                .unwrap()
                .0
        }
    }))
    .await;
    assert!(
        results.iter().all(|s| *s == 200 || *s == 409),
        "{results:?}"
    );
    let cancelled = results.iter().filter(|s| **s == 200).count();
    eprintln!(
        "race: {cancelled} cancelled, {} already dispatched",
        100 - cancelled
    );

    // Let everything that was dispatched be delivered.
    let expected = 100 - cancelled;
    let smtp = stack.smtp.clone();
    let mails =
        tokio::task::spawn_blocking(move || smtp.wait_for(expected, Duration::from_secs(30)))
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stack.smtp.mails().len(),
        expected,
        "{cancelled} cancelled, {} mailed",
        mails.len()
    );

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
    // The first attempt fails transiently; the retry would come due after the TTL.
    let stack = Stack::start(Options {
        retry_schedule: vec![2.0],
        ..Options::default()
    })
    .await
    .unwrap();
    stack.smtp.set_mode(devkit::smtp::Mode::FailTransient(1));
    let svc = stack.token(Role::Service, "billing");
    let body = json!({ "recipients": [{ "email": "otp@example.com" }], "category": "otp", "ttl_seconds": 1, "content": { "text": "123456" } });
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
