//! The whole path through the real services: bff → notification-service (Postgres + outbox)
//! → relay → Kafka → email worker → SMTP → status → repeater → history.

use std::time::Duration;

use common::auth::Role;
use devkit::smtp::Mode;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_to_a_user_is_emailed_and_shows_sent_with_its_attempt() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let user = stack.register_user("Ann@Example.COM").await.unwrap();
    let billing = stack.token(Role::Service, "billing");

    let (status, accepted) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&billing),
            Some(json!({
                "recipients": [{ "user_id": user }],
                "category": "billing",
                "channels": ["email"],
                "content": { "subject": "Your invoice", "text": "Invoice #42 is ready." }
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["deliveries"][0]["status"], "queued");
    assert_eq!(accepted["deliveries"][0]["lane"], "bulk");
    // The address came from the user's profile: not the sender's to read (admins see it).
    assert!(accepted["deliveries"][0]["address"].is_null(), "{accepted}");

    let view = stack
        .wait_settled(&id, &billing, Duration::from_secs(20))
        .await
        .unwrap();
    let d = &view["deliveries"][0];
    assert_eq!(d["status"], "sent", "{view}");
    assert_eq!(view["status"], "completed");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_attempt"]["outcome"], "sent");
    assert_eq!(d["last_attempt"]["provider"], "smtp");
    assert!(d["sent_at"].is_string());

    // Two mails: the invoice, and the welcome that registration triggered
    // (user.registered → notify.events → notification-service).
    let mails = stack.smtp.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(
        mails
            .iter()
            .all(|m| m.to == vec!["Ann@example.com".to_owned()])
    );
    let invoice = mails
        .iter()
        .find(|m| m.text().contains("Subject: Your invoice"))
        .expect("the invoice");
    assert!(invoice.text().contains("Invoice #42 is ready."));
    assert!(
        mails.iter().any(|m| m.text().contains("Subject: Welcome!")),
        "the welcome email"
    );

    let (attempts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM attempts WHERE delivery_id = $1::uuid")
            .bind(d["id"].as_str().unwrap())
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    let (unpublished,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_smtp_failure_is_retried_and_then_sent() {
    let stack = Stack::start(Options::default()).await.unwrap();
    stack.smtp.set_mode(Mode::FailTransient(1));
    let svc = stack.token(Role::Service, "billing");
    let (status, accepted) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(json!({
                "recipients": [{ "email": "bob@example.org" }],
                "category": "security",
                "content": { "subject": "Sign-in", "text": "New sign-in." }
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["deliveries"][0]["lane"], "urgent");
    let id = accepted["id"].as_str().unwrap();

    let view = stack
        .wait_settled(id, &svc, Duration::from_secs(20))
        .await
        .unwrap();
    let d = &view["deliveries"][0];
    assert_eq!(d["status"], "sent", "{view}");
    assert_eq!(d["attempts"], 2);
    assert_eq!(
        d["last_error"]["code"], "smtp_451",
        "the failed first attempt stays visible"
    );
    assert_eq!(stack.smtp.attempts(), 2);
    assert_eq!(stack.smtp.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_with_its_error_and_exhausted_retries_too() {
    let stack = Stack::start(Options {
        retry_schedule: vec![0.2],
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let send = |to: &'static str| {
        let stack = &stack;
        let svc = svc.clone();
        async move {
            let (status, body) = stack
                .call(
                    Method::POST,
                    "/v1/notifications",
                    Some(&svc),
                    Some(json!({ "recipients": [{ "email": to }], "category": "news", "content": { "text": "hi" } })),
                )
                .await
                .unwrap();
            assert_eq!(status, 202, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };

    stack.smtp.set_mode(Mode::RejectAll);
    let id = send("carol@example.org").await;
    let view = stack
        .wait_settled(&id, &svc, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");
    assert_eq!(view["deliveries"][0]["reason"], "permanent_failure");
    assert_eq!(view["deliveries"][0]["last_error"]["code"], "smtp_550");
    assert_eq!(view["status"], "failed");

    stack.smtp.set_mode(Mode::FailTransient(100));
    let id = send("dave@example.org").await;
    let view = stack
        .wait_settled(&id, &svc, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");
    assert_eq!(view["deliveries"][0]["reason"], "attempts_exhausted");
    assert_eq!(view["deliveries"][0]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_without_an_address_are_suppressed_with_a_reason() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let (status, body) = stack
        .call(
            Method::POST,
            "/v1/users",
            Some(&svc),
            Some(json!({ "phone": "+4930123456", "timezone": "Europe/Berlin" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let no_email = body["user_id"].as_str().unwrap().to_owned();
    let unknown = uuid::Uuid::new_v4();

    let (status, accepted) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(json!({
                "recipients": [{ "user_id": no_email }, { "user_id": unknown }],
                "category": "news",
                "content": { "text": "hello" }
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    let reasons: Vec<_> = accepted["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["status"].clone(), d["reason"].clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (json!("suppressed"), json!("no_contact")),
            (json!("suppressed"), json!("unknown_user"))
        ]
    );
    assert_eq!(accepted["status"], "completed");

    let (status, view) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{}", accepted["id"].as_str().unwrap()),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(view["deliveries"][1]["reason"], "unknown_user");

    // Another service may not read it; an admin may.
    let other = stack.token(Role::Service, "marketing");
    let path = format!("/v1/notifications/{}", accepted["id"].as_str().unwrap());
    assert_eq!(
        stack
            .call(Method::GET, &path, Some(&other), None)
            .await
            .unwrap()
            .0,
        404
    );
    let admin = stack.token(Role::Admin, "ops");
    assert_eq!(
        stack
            .call(Method::GET, &path, Some(&admin), None)
            .await
            .unwrap()
            .0,
        200
    );
}

/// Reads every message `topic` (unprefixed) holds now, from the start.
async fn read_topic(
    stack: &Stack,
    topic: &str,
) -> Vec<(
    std::collections::BTreeMap<String, String>,
    serde_json::Value,
)> {
    use rdkafka::Message;
    let (bootstrap, full) = (
        stack.kafka_cfg.bootstrap_servers.clone(),
        stack.kafka_cfg.topic(topic),
    );
    tokio::task::spawn_blocking(move || {
        devkit::kafka::read_topic(&bootstrap, &full, Duration::from_secs(15))
    })
    .await
    .unwrap()
    .unwrap()
    .iter()
    .map(|m| {
        (
            common::kafka::message_headers(m),
            serde_json::from_slice(m.payload().unwrap()).unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_and_trace_travel_through_kafka_to_the_worker_and_back() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&svc)
        .header("x-request-id", "trace-me-1")
        .header("traceparent", traceparent)
        .json(&json!({ "recipients": [{ "email": "tia@example.com" }], "category": "news", "content": { "text": "hi" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    let delivery = body["deliveries"][0]["id"].as_str().unwrap().to_owned();
    stack
        .wait_settled(body["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();

    let dispatched = read_topic(&stack, "notify.dispatch.email.bulk").await;
    assert_eq!(dispatched.len(), 1);
    let (headers, value) = &dispatched[0];
    assert_eq!(
        headers.get("x-request-id").map(String::as_str),
        Some("trace-me-1")
    );
    assert_eq!(
        headers.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
    assert_eq!(headers.get("delivery-id"), Some(&delivery));
    assert_eq!(headers.get("attempt").map(String::as_str), Some("1"));
    assert_eq!(value["schema"], 1);
    assert_eq!(value["recipient"]["address"], "tia@example.com");

    // The worker restored the context from the headers and carried it into its status event.
    let statuses = read_topic(&stack, "notify.status").await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        statuses[0].0.get("x-request-id").map(String::as_str),
        Some("trace-me-1")
    );
    assert_eq!(
        statuses[0].0.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
    assert_eq!(statuses[0].1["outcome"], "sent");
}
