//! SMS delivery receipts through the public edge: the worker asks Twilio for status callbacks;
//! a signed callback moves a sent SMS to `delivered` / `undelivered`; an unsigned or wrongly
//! signed one is refused (403) and a replayed one too (409), changing nothing; a receipt that
//! arrives before its `sent` status is kept and applied once the attempt is known.

use std::time::Duration;

use common::{auth::Role, events::Channel};
use e2e::{Options, Stack};
use notification_service::routes::receipts::{
    ReceiptsConfig, SIGNATURE_HEADER, TwilioReceipts, twilio_signature,
};
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const TWILIO: &str = "/2010-04-01/Accounts/AC0123/Messages.json";
const CALLBACK: &str = "https://notify.example.test/v1/receipts/twilio";
const TOKEN: &str = "twilio-auth-token";

fn options(gateway: &MockServer) -> Options {
    Options {
        welcome: false,
        enabled_channels: vec![Channel::Sms],
        workers: workers::Config {
            channels: vec![Channel::Sms],
            sms: workers::sms::SmsConfig {
                auth_token: TOKEN.to_owned().into(),
                status_callback_url: Some(CALLBACK.into()),
                ..e2e::sms_config(&gateway.uri())
            },
            ..Default::default()
        },
        receipts: ReceiptsConfig {
            twilio: Some(TwilioReceipts {
                auth_token: TOKEN.to_owned().into(),
                url: CALLBACK.into(),
            }),
        },
        ..Options::default()
    }
}

/// The gateway answers each number with its own message id, and only when the request asks
/// for status callbacks to our URL.
async fn gateway() -> MockServer {
    let gateway = MockServer::start().await;
    for n in ["51", "52", "53"] {
        Mock::given(method("POST"))
            .and(path(TWILIO))
            .and(body_string_contains(format!("To=%2B493012340{n}")))
            .and(body_string_contains(
                "StatusCallback=https%3A%2F%2Fnotify.example.test%2Fv1%2Freceipts%2Ftwilio",
            ))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(json!({ "sid": format!("SM0{n}") })),
            )
            .mount(&gateway)
            .await;
    }
    gateway
}

async fn send_sms(stack: &Stack, phone: &str) -> String {
    let view = stack
        .send(
            &stack.token(Role::Service, "billing"),
            json!({ "recipients": [{ "phone": phone }], "category": "billing",
                    "content": { "text": "Your parcel is on its way" } }),
        )
        .await
        .unwrap();
    view["id"].as_str().unwrap().to_owned()
}

async fn delivery_status(stack: &Stack, notification: &str) -> String {
    let admin = stack.token(Role::Admin, "ops");
    let (_, view) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{notification}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    view["deliveries"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_status(stack: &Stack, notification: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = delivery_status(stack, notification).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery of {notification} is {now}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts a status callback through the bff, signed with `key` (`None`: unsigned).
async fn callback(stack: &Stack, sid: &str, status: &str, key: Option<&str>) -> (u16, Value) {
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC0123"),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("To", "+4930123400"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let mut req = stack
        .http
        .post(format!("{}/v1/receipts/twilio", stack.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(key) = key {
        req = req.header(SIGNATURE_HEADER, twilio_signature(key, CALLBACK, &params));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_receipts_settle_sent_sms_and_unsigned_or_replayed_ones_change_nothing() {
    let gateway = gateway().await;
    let stack = Stack::start(options(&gateway)).await.unwrap();

    let first = send_sms(&stack, "+49301234051").await;
    wait_status(&stack, &first, "sent").await;
    let (status, body) = callback(&stack, "SM051", "delivered", Some(TOKEN)).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(delivery_status(&stack, &first).await, "delivered");

    let second = send_sms(&stack, "+49301234052").await;
    wait_status(&stack, &second, "sent").await;
    for (what, key) in [
        ("unsigned", None),
        ("signed with another key", Some("not-the-token")),
    ] {
        let (status, body) = callback(&stack, "SM052", "undelivered", key).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["type"], "invalid_signature", "{what}: {body}");
    }
    assert_eq!(
        delivery_status(&stack, &second).await,
        "sent",
        "a refused receipt moved it"
    );
    let (status, _) = callback(&stack, "SM052", "undelivered", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(delivery_status(&stack, &second).await, "undelivered");
    let (status, body) = callback(&stack, "SM052", "undelivered", Some(TOKEN)).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("receipt_replayed")),
        "{body}"
    );
    // An intermediate status is acknowledged and changes nothing.
    let (status, _) = callback(&stack, "SM051", "sent", Some(TOKEN)).await;
    assert_eq!(status, 204);
    assert_eq!(delivery_status(&stack, &first).await, "delivered");

    // A receipt faster than the `sent` status: kept, then applied by the repeater.
    let (status, body) = callback(&stack, "SM053", "delivered", Some(TOKEN)).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("unmatched")),
        "{body}"
    );
    let third = send_sms(&stack, "+49301234053").await;
    wait_status(&stack, &third, "delivered").await;
}
