//! `Idempotency-Key` on `POST /v1/notifications`: a replay gets the original answer and plans
//! nothing twice (from Redis at the bff, or from Postgres behind it), a different body is
//! refused, and concurrent requests with one key make exactly one notification.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use serde_json::Value;

async fn post(stack: &Stack, token: &str, key: &str, body: &str) -> (u16, Option<String>, Value) {
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, resp.json().await.unwrap())
}

/// `POST /v1/notifications` requests notification-service answered (its own counter: what
/// reached it, past the bff's cache).
async fn served_by_notification_service(stack: &Stack) -> u64 {
    let metrics = stack.metrics(e2e::Service::Notifications).await.unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(r#"notify_http_requests_total{method="POST",route="/v1/notifications","#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_returns_the_original_answer_and_sends_nothing_twice() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let body = r#"{"recipients": [{"email": "ida@example.com"}], "category": "receipt", "content": {"text": "paid"}}"#;
    let (status, replayed, first) = post(&stack, &svc, "order-42", body).await;
    assert_eq!((status, replayed), (202, None), "{first}");

    // Same request, formatted differently: answered from the bff's Redis cache — it never
    // reaches notification-service.
    let mut redis = common::redis::connect(&stack.redis).await.unwrap();
    let cached: bool = redis::cmd("EXISTS")
        .arg(stack.redis.key("idem:billing:order-42"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(cached, "the bff cached the answer");
    let served = served_by_notification_service(&stack).await;
    assert_eq!(served, 1);
    let reformatted = r#"{"category":"receipt","content":{"text":"paid"},"recipients":[{"email":"ida@example.com"}]}"#;
    let (status, replayed, again) = post(&stack, &svc, "order-42", reformatted).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));
    assert_eq!(again, first, "the original answer, same ids");
    assert_eq!(
        served_by_notification_service(&stack).await,
        served,
        "the replay went past the bff's cache"
    );

    // Without the cache, Postgres answers the same way (the request reaches the service).
    let _: () = redis::cmd("DEL")
        .arg(stack.redis.key("idem:billing:order-42"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let (status, replayed, from_db) = post(&stack, &svc, "order-42", body).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));
    assert_eq!(served_by_notification_service(&stack).await, served + 1);
    assert_eq!(from_db["id"], first["id"]);
    assert_eq!(from_db["deliveries"][0]["id"], first["deliveries"][0]["id"]);

    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        1
    );
    assert_eq!(
        stack.notify_count("SELECT count(*) FROM deliveries").await,
        1
    );
    let settled = stack
        .wait_settled(first["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(settled["deliveries"][0]["status"], "sent", "{settled}");
    assert_eq!(stack.smtp.mails().len(), 1, "one email");

    // Same key, different body → 422 naming the header, at the bff and behind it.
    let other = r#"{"recipients": [{"email": "ida@example.com"}], "category": "receipt", "content": {"text": "refund"}}"#;
    let (status, _, problem) = post(&stack, &svc, "order-42", other).await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("Idempotency-Key")),
        "{problem}"
    );
    let _: () = redis::cmd("DEL")
        .arg(stack.redis.key("idem:billing:order-42"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let (status, _, problem) = post(&stack, &svc, "order-42", other).await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("Idempotency-Key")),
        "{problem}"
    );

    // Keys are per caller: another service's "order-42" is its own request.
    let (status, _, theirs) = post(
        &stack,
        &stack.token(Role::Service, "shop"),
        "order-42",
        body,
    )
    .await;
    assert_eq!(status, 202);
    assert_ne!(theirs["id"], first["id"]);

    // An invalid request is refused and its key stays unused.
    let (status, _, _) = post(
        &stack,
        &svc,
        "order-43",
        r#"{"recipients": [], "category": "x", "content": {"text": "y"}}"#,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM idempotency_keys WHERE key = 'order-43'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_make_one_notification() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let body = r#"{"recipients": [{"email": "cc@example.com"}], "category": "receipt", "content": {"text": "once"}}"#;
    let answers =
        futures::future::join_all((0..20).map(|_| post(&stack, &svc, "burst-1", body))).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _, _)| *s == 202)
        .map(|(_, _, b)| b)
        .collect();
    assert!(!accepted.is_empty());
    assert!(
        answers
            .iter()
            .all(|(s, _, b)| *s == 202 || (*s == 409 && b["type"] == "idempotency_in_flight")),
        "{answers:?}"
    );
    assert!(
        accepted.iter().all(|b| b["id"] == accepted[0]["id"]),
        "every 202 carries the same notification"
    );
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        1
    );
    assert_eq!(
        stack.notify_count("SELECT count(*) FROM deliveries").await,
        1
    );
}
