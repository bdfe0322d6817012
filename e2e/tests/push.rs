//! Push end to end: a user's devices get push deliveries through FCM and APNs (wiremock; APNs
//! over HTTP/2), and a token the provider calls dead (FCM `UNREGISTERED`, APNs 410
//! `Unregistered`) is removed from users-service, so the next notification skips it.

use std::time::Duration;

use common::{auth::Role, events::Channel};
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const EC_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/ec_p256_private.pem");
const SEND: &str = "/v1/projects/notify-e2e/messages:send";

/// FCM and APNs on one mock server: `deadbeefdead` is unknown to both, `feedcafe0123` works.
async fn providers() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/3/device/deadbeefdead"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({
            "reason": "Unregistered", "timestamp": 1_700_000_000_000_i64
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/3/device/feedcafe0123"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("apns-id", "4F2C1C0A-0000-0000-0000-000000000001"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.e2e", "expires_in": 3599, "token_type": "Bearer"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(body_string_contains("\"token\":\"deadbeefdead\""))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]
        }})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(body_string_contains("\"token\":\"feedcafe0123\""))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "name": "projects/notify-e2e/messages/1" })),
        )
        .mount(&server)
        .await;
    server
}

fn options(providers: &MockServer) -> Options {
    Options {
        welcome: false,
        enabled_channels: vec![Channel::Email, Channel::Push],
        workers: workers::Config {
            channels: vec![Channel::Email, Channel::Push],
            push: workers::push::PushConfig {
                fcm: Some(e2e::fcm_config(&providers.uri())),
                apns: Some(workers::apns::ApnsConfig {
                    base_url: providers.uri(),
                    topic: "com.example.e2e".into(),
                    key_id: "KEY1234567".into(),
                    team_id: "TEAM123456".into(),
                    key_pem: Some(EC_PRIVATE.to_owned().into()),
                    timeout_ms: 2_000,
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Options::default()
    }
}

async fn notify(stack: &Stack, user: uuid::Uuid) -> Value {
    let service = stack.token(Role::Service, "orders");
    let (status, body) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&service),
            Some(json!({
                "recipients": [{ "user_id": user }],
                "category": "orders",
                "channels": ["push"],
                "content": { "subject": "Shipped", "text": "Your parcel is on its way" },
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    // As an admin: the device addresses come from the user's profile.
    stack
        .wait_settled(
            &id,
            &stack.token(Role::Admin, "ops"),
            Duration::from_secs(15),
        )
        .await
        .unwrap()
}

fn push_rows(view: &Value) -> Vec<(String, String, Value)> {
    let mut rows: Vec<_> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["channel"] == "push")
        .map(|d| {
            (
                d["address"].as_str().unwrap_or_default().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
                d["reason"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// One user, a dead and a live token on `platform`: the dead one ends `dead`, is removed from
/// users-service, and the next notification goes to the live one only.
async fn a_dead_token_is_removed_and_not_used_again(platform: &str) {
    let server = providers().await;
    let stack = Stack::start(options(&server)).await.unwrap();
    let user = stack.register_user("pia@example.com").await.unwrap();
    let pia = stack.token(Role::User, &user.to_string());
    for token in ["deadbeefdead", "feedcafe0123"] {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/me/devices",
                Some(&pia),
                Some(json!({ "platform": platform, "token": token })),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
    }

    let first = notify(&stack, user).await;
    assert_eq!(
        push_rows(&first),
        vec![
            (
                format!("{platform}:deadbeefdead"),
                "dead".into(),
                json!("invalid_address")
            ),
            (
                format!("{platform}:feedcafe0123"),
                "sent".into(),
                Value::Null
            ),
        ],
        "{first}"
    );

    // The repeater's device.invalidated reaches users-service, which removes the device.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, devices) = stack
            .call(Method::GET, "/v1/me/devices", Some(&pia), None)
            .await
            .unwrap();
        assert_eq!(status, 200);
        let tokens: Vec<String> = devices["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["token"].as_str().unwrap().to_owned())
            .collect();
        if tokens == ["feedcafe0123"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead device was never removed: {tokens:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // users-service announced the change (preferences.updated); wait for notification-service
    // to evict its cached profile — the real state, not a guess at how long that takes.
    stack
        .wait_profile_evicted(user, Duration::from_secs(20))
        .await
        .unwrap();

    // The next notification plans only the live device.
    let second = notify(&stack, user).await;
    assert_eq!(
        push_rows(&second),
        vec![(
            format!("{platform}:feedcafe0123"),
            "sent".into(),
            Value::Null
        )],
        "{second}"
    );
    // The provider saw the dead token exactly once: invalid_address is never retried.
    let dead_sends = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.url.path().ends_with("/deadbeefdead")
                || String::from_utf8_lossy(&r.body).contains("deadbeefdead")
        })
        .count();
    assert_eq!(dead_sends, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_fcm_token_is_removed_and_not_used_again() {
    a_dead_token_is_removed_and_not_used_again("fcm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_apns_token_is_removed_and_not_used_again() {
    a_dead_token_is_removed_and_not_used_again("apns").await;
}
