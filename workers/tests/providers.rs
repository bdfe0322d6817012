//! HTTP providers against wiremock: the exact request each provider receives and how error
//! answers are classified. (Redelivery: `dedupe.rs`; push: `push.rs`.)

use common::events::{Channel, Content, DispatchMessage, Lane, Outcome, RecipientRef, SCHEMA};
use secrecy::SecretString;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, body_string, header, method, path},
};
use workers::{
    provider::Provider,
    sms::{SmsConfig, SmsProvider},
    telegram::{TelegramConfig, TelegramProvider},
};

fn message(channel: Channel, address: &str) -> DispatchMessage {
    DispatchMessage {
        schema: SCHEMA,
        delivery_id: uuid::Uuid::now_v7(),
        notification_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel,
        lane: Lane::Urgent,
        recipient: RecipientRef {
            user_id: None,
            address: address.into(),
        },
        content: Content {
            subject: None,
            text: "Your code is 123456".into(),
            html: None,
            data: None,
        },
        locale: None,
        not_after: None,
        created_at: chrono::Utc::now(),
    }
}

fn sms(server: &MockServer) -> SmsProvider {
    SmsProvider::new(&SmsConfig {
        base_url: server.uri(),
        account_sid: "AC123".into(),
        auth_token: SecretString::from("secret"),
        from: "+15005550006".into(),
        timeout_ms: 2_000,
        ..Default::default()
    })
    .unwrap()
}

const SMS_PATH: &str = "/2010-04-01/Accounts/AC123/Messages.json";

#[tokio::test]
async fn sms_sends_the_twilio_form_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SMS_PATH))
        .and(header("authorization", "Basic QUMxMjM6c2VjcmV0"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "To=%2B4930123456&From=%2B15005550006&Body=Your+code+is+123456",
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": "SM42" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let r = sms(&server)
        .send(&message(Channel::Sms, "+4930123456"))
        .await;
    assert_eq!(
        (r.outcome, r.provider_message_id.as_deref()),
        (Outcome::Sent, Some("SM42"))
    );
}

#[tokio::test]
async fn sms_errors_are_classified() {
    let cases = [
        (ResponseTemplate::new(429).insert_header("retry-after", "7"), Outcome::TransientFailure, "sms_429", Some(7000)),
        (ResponseTemplate::new(503), Outcome::TransientFailure, "sms_503", None),
        (
            ResponseTemplate::new(400).set_body_json(serde_json::json!({ "code": 21211, "message": "Invalid 'To' Phone Number" })),
            Outcome::InvalidAddress,
            "sms_21211",
            None,
        ),
        (
            ResponseTemplate::new(400).set_body_json(serde_json::json!({ "code": 21610, "message": "Attempt to send to unsubscribed recipient" })),
            Outcome::PermanentFailure,
            "sms_21610",
            None,
        ),
        (ResponseTemplate::new(401), Outcome::PermanentFailure, "sms_401", None),
    ];
    for (response, outcome, code, retry_after) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(response)
            .mount(&server)
            .await;
        let r = sms(&server)
            .send(&message(Channel::Sms, "+4930123456"))
            .await;
        assert_eq!(
            (
                r.outcome,
                r.error.as_ref().map(|e| e.code.as_str()),
                r.retry_after_ms
            ),
            (outcome, Some(code), retry_after)
        );
    }
}

fn telegram(server: &MockServer) -> TelegramProvider {
    TelegramProvider::new(&TelegramConfig {
        base_url: server.uri(),
        bot_token: SecretString::from("42:abc"),
        timeout_ms: 2_000,
    })
    .unwrap()
}

#[tokio::test]
async fn telegram_sends_to_the_bot_api_and_classifies_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/bot42:abc/sendMessage"))
        .and(body_json(
            serde_json::json!({ "chat_id": "12345", "text": "Your code is 123456" }),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "ok": true, "result": { "message_id": 777 } })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let r = telegram(&server)
        .send(&message(Channel::Telegram, "12345"))
        .await;
    assert_eq!(
        (r.outcome, r.provider_message_id.as_deref()),
        (Outcome::Sent, Some("777"))
    );

    let err =
        |status: u16, body: serde_json::Value| ResponseTemplate::new(status).set_body_json(body);
    let cases = [
        (
            err(
                429,
                serde_json::json!({ "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": { "retry_after": 3 } }),
            ),
            Outcome::TransientFailure,
            "telegram_429",
            Some(3000),
        ),
        (
            err(
                403,
                serde_json::json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" }),
            ),
            Outcome::PermanentFailure,
            "telegram_403",
            None,
        ),
        (
            err(
                400,
                serde_json::json!({ "ok": false, "error_code": 400, "description": "Bad Request: chat not found" }),
            ),
            Outcome::InvalidAddress,
            "telegram_chat_not_found",
            None,
        ),
        (
            ResponseTemplate::new(502),
            Outcome::TransientFailure,
            "telegram_502",
            None,
        ),
    ];
    for (response, outcome, code, retry_after) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(response)
            .mount(&server)
            .await;
        let r = telegram(&server)
            .send(&message(Channel::Telegram, "12345"))
            .await;
        assert_eq!(
            (
                r.outcome,
                r.error.as_ref().map(|e| e.code.as_str()),
                r.retry_after_ms
            ),
            (outcome, Some(code), retry_after)
        );
    }
}

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn webhook(allow_loopback: bool) -> workers::webhook::WebhookProvider {
    workers::webhook::WebhookProvider::new(&workers::webhook::WebhookConfig {
        secret: SecretString::from(WEBHOOK_SECRET),
        timeout_ms: 2_000,
        allow_loopback,
        proxy_url: None,
    })
    .unwrap()
}

/// Standard Webhooks verification, written here independently of the provider.
fn verify(id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    use base64::Engine;
    use hmac::Mac;
    let key = base64::engine::general_purpose::STANDARD
        .decode(WEBHOOK_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signature.split(' ').any(|s| s == format!("v1,{expected}"))
}

#[tokio::test]
async fn webhooks_are_signed_per_standard_webhooks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/orders"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let msg = message(Channel::Webhook, &format!("{}/hooks/orders", server.uri()));
    let r = webhook(true).send(&msg).await;
    assert_eq!(r.outcome, Outcome::Sent, "{r:?}");

    let requests = server.received_requests().await.unwrap();
    let req = &requests[0];
    let h = |name: &str| req.headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("webhook-id"), msg.delivery_id.to_string());
    let ts: i64 = h("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 10);
    assert!(
        verify(
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &req.body,
            &h("webhook-signature")
        ),
        "signature verifies"
    );
    assert!(!verify(
        &h("webhook-id"),
        &h("webhook-timestamp"),
        b"tampered",
        &h("webhook-signature")
    ));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["delivery_id"], msg.delivery_id.to_string());
    assert_eq!(body["content"]["text"], "Your code is 123456");
}

#[tokio::test]
async fn webhook_answers_are_classified_and_internal_targets_refused() {
    let cases = [
        (
            ResponseTemplate::new(410),
            Outcome::PermanentFailure,
            "webhook_410",
            None,
        ),
        (
            ResponseTemplate::new(503).insert_header("retry-after", "5"),
            Outcome::TransientFailure,
            "webhook_503",
            Some(5000),
        ),
        (
            ResponseTemplate::new(429),
            Outcome::TransientFailure,
            "webhook_429",
            None,
        ),
        (
            ResponseTemplate::new(400),
            Outcome::PermanentFailure,
            "webhook_400",
            None,
        ),
        // A redirect is an answer, never followed (it could point inside).
        (
            ResponseTemplate::new(302).insert_header("location", "http://169.254.169.254/"),
            Outcome::PermanentFailure,
            "webhook_302",
            None,
        ),
    ];
    for (response, outcome, code, retry_after) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(response)
            .mount(&server)
            .await;
        let r = webhook(true)
            .send(&message(Channel::Webhook, &format!("{}/h", server.uri())))
            .await;
        assert_eq!(
            (
                r.outcome,
                r.error.as_ref().map(|e| e.code.as_str()),
                r.retry_after_ms
            ),
            (outcome, Some(code), retry_after)
        );
    }

    // Without the loopback allow-list: refused before any connection, by literal IP and by name.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let port = server.address().port();
    for url in [
        format!("http://127.0.0.1:{port}/h"),
        format!("http://[::ffff:127.0.0.1]:{port}/h"),
        format!("http://localhost:{port}/h"),
    ] {
        let r = webhook(false).send(&message(Channel::Webhook, &url)).await;
        assert_eq!(
            (r.outcome, r.error.as_ref().map(|e| e.code.as_str())),
            (Outcome::PermanentFailure, Some("webhook_target_refused")),
            "{url}: {r:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_provider_error_never_carries_a_credential() {
    // Nothing listens on port 1: the request fails before any answer.
    let telegram = TelegramProvider::new(&TelegramConfig {
        base_url: "http://127.0.0.1:1".into(),
        bot_token: SecretString::from("42:SECRET-BOT-TOKEN"),
        timeout_ms: 2_000,
    })
    .unwrap();
    let r = telegram.send(&message(Channel::Telegram, "12345")).await;
    assert_eq!(r.outcome, Outcome::TransientFailure);
    let error = r.error.unwrap();
    assert_eq!(error.code, "telegram_connection");
    assert!(
        !error.message.contains("SECRET"),
        "the bot token leaked into the error: {}",
        error.message
    );
    assert!(!error.message.is_empty());
}
