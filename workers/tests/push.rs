//! Push providers against wiremock: the exact FCM v1 and APNs requests (the APNs provider
//! token verified with the public key), error classification, and the FCM OAuth token fetched
//! once for many sends.

use std::time::Duration;

use common::events::{Channel, Content, DispatchMessage, Lane, Outcome, RecipientRef, SCHEMA};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, header, method, path},
};
use workers::{
    apns::ApnsConfig,
    fcm::FcmConfig,
    provider::Provider,
    push::{PushConfig, PushProvider},
};

const RSA_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/rsa_private.pem");
const EC_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/ec_p256_private.pem");
const EC_PUBLIC: &str = include_str!("../../tools/devkit/fixtures/ec_p256_public.pem");

fn message(address: &str, lane: Lane) -> DispatchMessage {
    DispatchMessage {
        schema: SCHEMA,
        delivery_id: uuid::Uuid::now_v7(),
        notification_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Push,
        lane,
        recipient: RecipientRef {
            user_id: Some(uuid::Uuid::now_v7()),
            address: address.into(),
        },
        content: Content {
            subject: Some("Order shipped".into()),
            text: "Your parcel is on its way".into(),
            html: None,
            data: Some(serde_json::json!({ "order": "A-17", "items": 3 })),
        },
        locale: None,
        not_after: None,
        created_at: chrono::Utc::now(),
    }
}

fn fcm_config(server: &MockServer) -> PushConfig {
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "notify-test",
        "private_key_id": "k1",
        "private_key": RSA_PRIVATE,
        "client_email": "sender@notify-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": format!("{}/token", server.uri()),
    });
    PushConfig {
        fcm: Some(FcmConfig {
            base_url: server.uri(),
            project_id: None,
            service_account_path: None,
            service_account_json: Some(SecretString::from(key.to_string())),
            timeout_ms: 2_000,
        }),
        apns: None,
    }
}

async fn mount_token(server: &MockServer, expected_fetches: u64) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "ya29.test-token", "expires_in": 3599, "token_type": "Bearer"
        })))
        .expect(expected_fetches)
        .mount(server)
        .await;
}

const FCM_PATH: &str = "/v1/projects/notify-test/messages:send";

#[tokio::test]
async fn fcm_sends_v1_messages_and_fetches_the_oauth_token_once() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(FCM_PATH))
        .and(header("authorization", "Bearer ya29.test-token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "name": "projects/notify-test/messages/0:1" })),
        )
        .expect(10)
        .mount(&server)
        .await;
    let push = PushProvider::new(&fcm_config(&server)).unwrap();

    // Ten concurrent sends on a cold provider: still one token request.
    let msgs: Vec<_> = (0..10)
        .map(|i| {
            let lane = if i == 0 { Lane::Urgent } else { Lane::Bulk };
            message(&format!("fcm:device-token-{i}"), lane)
        })
        .collect();
    let results = futures::future::join_all(msgs.iter().map(|m| push.send(m))).await;
    for r in &results {
        assert_eq!(
            (r.outcome, r.provider_message_id.as_deref()),
            (Outcome::Sent, Some("projects/notify-test/messages/0:1"))
        );
    }
    assert_eq!(push.provider_for(&msgs[0]), "fcm");

    let requests = server.received_requests().await.unwrap();
    let first = requests
        .iter()
        .filter(|r| r.url.path() == FCM_PATH)
        .map(|r| r.body_json::<serde_json::Value>().unwrap())
        .find(|b| b["message"]["token"] == "device-token-0")
        .expect("the first message reached FCM");
    assert_eq!(
        first,
        serde_json::json!({
            "message": {
                "token": "device-token-0",
                "notification": { "title": "Order shipped", "body": "Your parcel is on its way" },
                "data": {
                    "order": "A-17",
                    "items": "3",
                    "notification_id": msgs[0].notification_id.to_string(),
                    "delivery_id": msgs[0].delivery_id.to_string(),
                },
                "android": { "priority": "HIGH" },
            }
        })
    );
    // The OAuth assertion is the service account's JWT for the FCM scope.
    let token_req = requests.iter().find(|r| r.url.path() == "/token").unwrap();
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&token_req.body)
            .into_owned()
            .collect();
    let assertion = form["assertion"].clone();
    // (gcp_auth pads its base64url segments, which Google accepts; read the claims directly.)
    let payload = assertion.split('.').nth(1).unwrap().trim_end_matches('=');
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], format!("{}/token", server.uri()));
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(claims["iss"], "sender@notify-test.iam.gserviceaccount.com");
}

#[tokio::test]
async fn fcm_errors_are_classified() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    let answer =
        |status: u16, body: serde_json::Value| ResponseTemplate::new(status).set_body_json(body);
    let cases = [
        (
            "fcm:gone",
            answer(404, serde_json::json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})),
            Outcome::InvalidAddress,
            "fcm_unregistered",
            None,
        ),
        (
            "fcm:garbage",
            answer(400, serde_json::json!({"error": {"code": 400, "message": "The registration token is not a valid FCM registration token", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
                            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}]}})),
            Outcome::InvalidAddress,
            "fcm_invalid_argument",
            None,
        ),
        (
            "fcm:busy",
            answer(429, serde_json::json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}]}}))
                .insert_header("retry-after", "42"),
            Outcome::TransientFailure,
            "fcm_quota_exceeded",
            Some(42_000),
        ),
        (
            "fcm:down",
            answer(503, serde_json::json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})),
            Outcome::TransientFailure,
            "fcm_unavailable",
            None,
        ),
        (
            "fcm:toobig",
            answer(400, serde_json::json!({"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.data", "description": "too big"}]}]}})),
            Outcome::PermanentFailure,
            "fcm_invalid_argument",
            None,
        ),
    ];
    for (address, response, _, _, _) in &cases {
        let token = address.strip_prefix("fcm:").unwrap();
        Mock::given(method("POST"))
            .and(path(FCM_PATH))
            .and(body_string_contains(format!("\"token\":\"{token}\"")))
            .respond_with(response.clone())
            .mount(&server)
            .await;
    }
    let push = PushProvider::new(&fcm_config(&server)).unwrap();
    for (address, _, outcome, code, retry_after) in cases {
        let r = push.send(&message(address, Lane::Bulk)).await;
        assert_eq!(r.outcome, outcome, "{address}");
        assert_eq!(r.error.unwrap().code, code, "{address}");
        assert_eq!(r.retry_after_ms, retry_after, "{address}");
    }
}

fn apns(server: &MockServer) -> PushProvider {
    PushProvider::new(&PushConfig {
        fcm: None,
        apns: Some(ApnsConfig {
            base_url: server.uri(),
            topic: "com.example.app".into(),
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            key_path: None,
            key_pem: Some(SecretString::from(EC_PRIVATE)),
            token_refresh_secs: 3000,
            timeout_ms: 2_000,
        }),
    })
    .unwrap()
}

#[tokio::test]
async fn apns_sends_over_http2_with_a_verifiable_provider_token() {
    let server = MockServer::start().await;
    let token = "a".repeat(64);
    Mock::given(method("POST"))
        .and(path(format!("/3/device/{token}")))
        .and(header("apns-topic", "com.example.app"))
        .and(header("apns-push-type", "alert"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("apns-id", "4F2C1C0A-0000-0000-0000-000000000001"),
        )
        .expect(2)
        .mount(&server)
        .await;
    let push = apns(&server);
    let urgent = message(&format!("apns:{token}"), Lane::Urgent);
    let mut bulk = message(&format!("apns:{token}"), Lane::Bulk);
    let not_after = chrono::Utc::now() + chrono::Duration::hours(1);
    bulk.not_after = Some(not_after);
    for m in [&urgent, &bulk] {
        let r = push.send(m).await;
        assert_eq!(
            (r.outcome, r.provider_message_id.as_deref()),
            (Outcome::Sent, Some("4F2C1C0A-0000-0000-0000-000000000001"))
        );
    }
    assert_eq!(push.provider_for(&urgent), "apns");

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let (u, b) = (&requests[0], &requests[1]);
    // The client speaks HTTP/2 with prior knowledge: an HTTP/1 server would not have answered.
    let h = |r: &wiremock::Request, name: &str| {
        r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(h(u, "apns-priority").as_deref(), Some("10"));
    assert_eq!(h(b, "apns-priority").as_deref(), Some("5"));
    assert_eq!(h(u, "apns-id"), Some(urgent.delivery_id.to_string()));
    assert_eq!(h(u, "apns-expiration"), None);
    assert_eq!(
        h(b, "apns-expiration"),
        Some(not_after.timestamp().to_string())
    );
    assert_eq!(
        u.body_json::<serde_json::Value>().unwrap(),
        serde_json::json!({
            "aps": { "alert": { "title": "Order shipped", "body": "Your parcel is on its way" }, "sound": "default" },
            "order": "A-17",
            "items": "3",
            "notification_id": urgent.notification_id.to_string(),
            "delivery_id": urgent.delivery_id.to_string(),
        })
    );

    // The provider token: ES256, our key id, our team, verified with the public key, and the
    // same token for both sends (Apple throttles renewals).
    let auth = h(u, "authorization").unwrap();
    let jwt = auth.strip_prefix("bearer ").expect("bearer token");
    assert_eq!(h(b, "authorization").as_deref(), Some(auth.as_str()));
    let mut v = Validation::new(Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &DecodingKey::from_ec_pem(EC_PUBLIC.as_bytes()).unwrap(),
        &v,
    )
    .expect("the provider token verifies with the public key");
    assert_eq!(decoded.header.kid.as_deref(), Some("KEY1234567"));
    assert_eq!(decoded.claims["iss"], "TEAM123456");
    let iat = decoded.claims["iat"].as_i64().unwrap();
    assert!((chrono::Utc::now().timestamp() - iat).abs() < 60);
}

#[tokio::test]
async fn apns_errors_are_classified() {
    let server = MockServer::start().await;
    let reason = |status: u16, reason: &str| {
        ResponseTemplate::new(status).set_body_json(serde_json::json!({ "reason": reason }))
    };
    let cases = [
        (
            "0a0e",
            reason(410, "Unregistered"),
            Outcome::InvalidAddress,
            "apns_Unregistered",
            None,
        ),
        (
            "bad0",
            reason(400, "BadDeviceToken"),
            Outcome::InvalidAddress,
            "apns_BadDeviceToken",
            None,
        ),
        (
            "b0b0",
            reason(429, "TooManyRequests").insert_header("retry-after", "7"),
            Outcome::TransientFailure,
            "apns_TooManyRequests",
            Some(7_000),
        ),
        (
            "d0e0",
            reason(503, "ServiceUnavailable"),
            Outcome::TransientFailure,
            "apns_ServiceUnavailable",
            None,
        ),
        (
            "b1b1",
            reason(413, "PayloadTooLarge"),
            Outcome::PermanentFailure,
            "apns_PayloadTooLarge",
            None,
        ),
        (
            "5a1e",
            reason(403, "ExpiredProviderToken"),
            Outcome::TransientFailure,
            "apns_ExpiredProviderToken",
            None,
        ),
    ];
    for (token, response, ..) in &cases {
        Mock::given(method("POST"))
            .and(path(format!("/3/device/{token}")))
            .respond_with(response.clone())
            .mount(&server)
            .await;
    }
    let push = apns(&server);
    for (token, _, outcome, code, retry_after) in cases {
        let r = push
            .send(&message(&format!("apns:{token}"), Lane::Bulk))
            .await;
        assert_eq!(r.outcome, outcome, "{token}");
        assert_eq!(r.error.unwrap().code, code, "{token}");
        assert_eq!(r.retry_after_ms, retry_after, "{token}");
    }
}

/// An APNs token goes into the URL path: one that is not hex (`../`, `?`, `/`) is an invalid
/// address, and APNs is never called with a path it chose.
#[tokio::test]
async fn an_apns_token_that_is_not_hex_never_reaches_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let push = apns(&server);
    for token in ["../../v1/other", "abc?x=1", "abc/def", "abc#frag"] {
        let r = push
            .send(&message(&format!("apns:{token}"), Lane::Bulk))
            .await;
        assert_eq!(
            (r.outcome, r.error.unwrap().code.as_str()),
            (Outcome::InvalidAddress, "apns_bad_token"),
            "{token}"
        );
    }
}

#[tokio::test]
async fn push_addresses_without_a_configured_platform_fail_visibly() {
    let server = MockServer::start().await;
    let push = apns(&server);
    let r = push.send(&message("fcm:abc", Lane::Bulk)).await;
    assert_eq!(
        (r.outcome, r.error.unwrap().code.as_str()),
        (Outcome::PermanentFailure, "push_platform_not_configured")
    );
    let r = push.send(&message("abc", Lane::Bulk)).await;
    assert_eq!(r.outcome, Outcome::InvalidAddress);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_never_answers_fails_the_send_within_the_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    let mut cfg = fcm_config(&server);
    cfg.fcm.as_mut().unwrap().timeout_ms = 500;
    let push = PushProvider::new(&cfg).unwrap();
    let started = std::time::Instant::now();
    let r = push.send(&message("fcm:abc", Lane::Urgent)).await;
    assert_eq!(
        (r.outcome, r.error.unwrap().code.as_str()),
        (Outcome::TransientFailure, "fcm_auth")
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the send waited {:?} for a token",
        started.elapsed()
    );
}

/// The APNs provider token is signed once and reused until it is due (Apple refuses tokens
/// renewed more than once in 20 minutes, and older than an hour): the same token within
/// `token_refresh_secs`, a new one (a later `iat`) after it, and a new one at once after Apple
/// called it expired.
#[test]
fn the_apns_provider_token_is_reused_then_renewed() {
    use workers::apns::ProviderToken;
    let token = ProviderToken::new(
        EC_PRIVATE.as_bytes(),
        "KEY1234567",
        "TEAM123456",
        Duration::from_secs(3000),
    )
    .unwrap();
    let iat = |t: &str| {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(
            t,
            &jsonwebtoken::DecodingKey::from_ec_pem(EC_PUBLIC.as_bytes()).unwrap(),
            &v,
        )
        .unwrap()
        .claims["iat"]
            .as_i64()
            .unwrap()
    };
    let t0 = 1_700_000_000;
    let first = token.get(t0).unwrap();
    assert_eq!(token.get(t0 + 2999).unwrap(), first, "reused while fresh");
    let renewed = token.get(t0 + 3000).unwrap();
    assert_ne!(renewed, first);
    assert_eq!(iat(&renewed), t0 + 3000);
    token.reset();
    let after_reset = token.get(t0 + 3001).unwrap();
    assert_eq!(
        iat(&after_reset),
        t0 + 3001,
        "a refused token is not reused"
    );
}
