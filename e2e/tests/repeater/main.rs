//! The repeater end to end, against an SMS gateway (wiremock) that fails the way real ones
//! do: retries on the schedule, dead letters, re-drive by filter, channel fallback, and the
//! stuck scan telling a lost dispatch message from one waiting in a backlog.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{auth::Role, events::Channel};
use e2e::{Options, Service, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123/Messages.json";

fn sms_options(gateway: &MockServer) -> Options {
    Options {
        welcome: false,
        enabled_channels: vec![Channel::Sms],
        workers: workers::Config {
            channels: vec![Channel::Sms],
            sms: e2e::sms_config(&gateway.uri()),
            ..Default::default()
        },
        ..Options::default()
    }
}

/// An SMS gateway that accepts every message.
async fn accepting_gateway() -> MockServer {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    gateway
}

fn sent() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM0001", "status": "queued" }))
}

fn twilio_error(status: u16, code: i64) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({ "code": code, "message": "refused", "status": status }))
}

/// `POST /v1/notifications` as a service; returns the notification id and its deliveries.
async fn send(stack: &Stack, body: Value) -> (String, Vec<Value>) {
    let token = stack.token(Role::Service, "billing");
    let (status, resp) = stack
        .call(Method::POST, "/v1/notifications", Some(&token), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 202, "{resp}");
    (
        resp["id"].as_str().unwrap().to_owned(),
        resp["deliveries"].as_array().unwrap().clone(),
    )
}

async fn sms(stack: &Stack, phone: &str) -> String {
    let (id, _) = send(
        stack,
        json!({ "recipients": [{ "phone": phone }], "category": "billing",
                "content": { "text": "Your invoice is ready" } }),
    )
    .await;
    id
}

async fn settled(stack: &Stack, id: &str, timeout: Duration) -> Value {
    let admin = stack.token(Role::Admin, "ops-admin");
    stack.wait_settled(id, &admin, timeout).await.unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct AttemptRow {
    attempt: i32,
    outcome: String,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
}

async fn attempts(stack: &Stack, delivery: &str) -> Vec<AttemptRow> {
    sqlx::query_as(
        "SELECT attempt, outcome, at, recorded_at FROM attempts WHERE delivery_id = $1::uuid ORDER BY attempt",
    )
    .bind(delivery)
    .fetch_all(&stack.notify_pool)
    .await
    .unwrap()
}

/// When attempt `n`'s dispatch was due (its outbox row's `available_at`).
async fn due(stack: &Stack, delivery: &str, attempt: i32) -> DateTime<Utc> {
    sqlx::query_scalar(
        "SELECT available_at FROM outbox WHERE headers ->> 'delivery-id' = $1 AND headers ->> 'attempt' = $2",
    )
    .bind(delivery)
    .bind(attempt.to_string())
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap()
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// The delivery's admin view once it has a re-drive (within 30 s).
async fn wait_redriven(stack: &Stack, admin: &str, delivery: impl std::fmt::Display) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, detail) = stack
            .call(
                Method::GET,
                &format!("/v1/admin/deliveries/{delivery}"),
                Some(admin),
                None,
            )
            .await
            .unwrap();
        if !detail["redrives"].as_array().unwrap().is_empty() {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never re-driven: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ids_notification(stack: &Stack, delivery: &str) -> String {
    let id: Uuid = sqlx::query_scalar("SELECT notification_id FROM deliveries WHERE id = $1::uuid")
        .bind(delivery)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    id.to_string()
}

async fn db_now(stack: &Stack) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap()
}

mod dead_letters;
mod fallback;
mod retries;
mod stuck;
