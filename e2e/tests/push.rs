//! Push end to end: a user's devices get push deliveries through FCM (wiremock), and a token
//! FCM calls `UNREGISTERED` is removed from users-service, so the next notification skips it.

use std::time::Duration;

use common::{auth::Role, events::Channel};
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const RSA_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/rsa_private.pem");
const SEND: &str = "/v1/projects/notify-e2e/messages:send";

async fn fcm() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.e2e", "expires_in": 3599, "token_type": "Bearer"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(body_string_contains("\"token\":\"dead-token\""))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]
        }})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(body_string_contains("\"token\":\"live-token\""))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "name": "projects/notify-e2e/messages/1" })),
        )
        .mount(&server)
        .await;
    server
}

fn options(fcm: &MockServer) -> Options {
    let key = json!({
        "type": "service_account",
        "project_id": "notify-e2e",
        "private_key": RSA_PRIVATE,
        "client_email": "sender@notify-e2e.iam.gserviceaccount.com",
        "token_uri": format!("{}/token", fcm.uri()),
    });
    Options {
        welcome: false,
        enabled_channels: vec![Channel::Email, Channel::Push],
        workers: workers::Config {
            channels: vec![Channel::Email, Channel::Push],
            push: workers::push::PushConfig {
                fcm: Some(workers::fcm::FcmConfig {
                    base_url: fcm.uri(),
                    service_account_json: Some(key.to_string().into()),
                    timeout_ms: 2_000,
                    ..Default::default()
                }),
                apns: None,
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
    stack
        .wait_settled(&id, &service, Duration::from_secs(15))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_push_token_is_removed_and_not_used_again() {
    let server = fcm().await;
    let stack = Stack::start(options(&server)).await.unwrap();
    let user = stack.register_user("pia@example.com").await.unwrap();
    let pia = stack.token(Role::User, &user.to_string());
    for token in ["dead-token", "live-token"] {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/me/devices",
                Some(&pia),
                Some(json!({ "platform": "fcm", "token": token })),
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
                "fcm:dead-token".into(),
                "dead".into(),
                json!("invalid_address")
            ),
            ("fcm:live-token".into(), "sent".into(), Value::Null),
        ],
        "{first}"
    );

    // The repeater's device.invalidated reaches users-service, which removes the device.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let devices = loop {
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
        if tokens.len() == 1 || tokio::time::Instant::now() > deadline {
            break tokens;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(devices, vec!["live-token".to_owned()]);

    // The next notification plans only the live device (the cached profile was evicted).
    let second = notify(&stack, user).await;
    assert_eq!(
        push_rows(&second),
        vec![("fcm:live-token".into(), "sent".into(), Value::Null)],
        "{second}"
    );
    // FCM saw the dead token exactly once: invalid_address is never retried.
    let dead_sends = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("dead-token"))
        .count();
    assert_eq!(dead_sends, 1);
}
