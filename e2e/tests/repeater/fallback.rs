//! Channel fallback: a dead push falls back to SMS, within the user's preferences.

use super::*;

async fn fcm_with_dead_token() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.e2e", "expires_in": 3599, "token_type": "Bearer"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/notify-e2e/messages:send"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]
        }})))
        .mount(&server)
        .await;
    server
}

/// Email, SMS and push (FCM at `fcm`) planned and sent.
fn push_and_sms_options(gateway: &MockServer, fcm: &MockServer) -> Options {
    let mut opts = sms_options(gateway);
    opts.enabled_channels = vec![Channel::Email, Channel::Sms, Channel::Push];
    opts.workers.channels = vec![Channel::Email, Channel::Sms, Channel::Push];
    opts.workers.push = workers::push::PushConfig {
        fcm: Some(e2e::fcm_config(&fcm.uri())),
        apns: None,
    };
    opts
}

/// A registered user with an email, a phone and one FCM device whose token FCM calls dead;
/// returns the user and a token of theirs.
async fn user_with_phone_and_dead_push(stack: &Stack, email: &str, phone: &str) -> (Uuid, String) {
    let user = stack.register_user(email).await.unwrap();
    let me = stack.token(Role::User, &user.to_string());
    for (m, p, body) in [
        (
            Method::PUT,
            "/v1/me/contacts",
            json!({ "email": email, "phone": phone }),
        ),
        (
            Method::POST,
            "/v1/me/devices",
            json!({ "platform": "fcm", "token": "dead-token" }),
        ),
    ] {
        let (status, answer) = stack.call(m, p, Some(&me), Some(body)).await.unwrap();
        assert!(status == 200 || status == 201, "{p}: {status} {answer}");
    }
    (user, me)
}

/// Waits until notification `id` has its fallback delivery (two in all) and both settled.
async fn settled_with_fallback(stack: &Stack, id: &str) -> Value {
    let admin = stack.token(Role::Admin, "ops-admin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = stack
            .wait_settled(id, &admin, Duration::from_secs(20))
            .await
            .unwrap();
        if view["deliveries"].as_array().unwrap().len() == 2 {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fallback delivery planned: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_push_falls_back_to_sms() {
    let gateway = accepting_gateway().await;
    let fcm = fcm_with_dead_token().await;
    let stack = Stack::start(push_and_sms_options(&gateway, &fcm))
        .await
        .unwrap();
    let (user, _) =
        user_with_phone_and_dead_push(&stack, "fallback@example.test", "+49301234099").await;

    // Refused at intake: an unknown channel in the list.
    let service = stack.token(Role::Service, "billing");
    let (status, body) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&service),
            Some(
                json!({ "recipients": [{ "user_id": user }], "category": "billing",
                         "channels": ["push"], "fallback": ["push", "fax"],
                         "content": { "text": "x" } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "fallback[1]");

    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "user_id": user }], "category": "billing", "priority": "high",
                "channels": ["push"], "fallback": ["push", "sms"],
                "content": { "text": "Payment failed" } }),
    )
    .await;
    assert_eq!(planned.len(), 1);
    let push_id = planned[0]["id"].as_str().unwrap().to_owned();

    let view = settled_with_fallback(&stack, &id).await;
    let ds = view["deliveries"].as_array().unwrap();
    assert_eq!(ds.len(), 2, "{view}");
    let push = ds.iter().find(|d| d["channel"] == "push").unwrap();
    let sms = ds.iter().find(|d| d["channel"] == "sms").unwrap();
    assert_eq!(push["status"], "dead");
    assert_eq!(push["reason"], "invalid_address");
    assert_eq!(sms["status"], "sent", "{view}");
    assert_eq!(sms["fallback_of"], push_id.as_str());
    assert_eq!(sms["address"], "+49301234099");
    assert_eq!(view["status"], "completed", "the fallback delivered it");

    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body = String::from_utf8_lossy(&requests[0].body).into_owned();
    assert!(body.contains("To=%2B49301234099"), "{body}");
    assert!(body.contains("Payment+failed"), "{body}");
    stack
        .expect_metrics(&[
            (
                Service::Repeater,
                "notify_repeater_fallbacks_requested_total{channel=\"push\"} 1",
            ),
            (
                Service::Notifications,
                "notify_fallbacks_planned_total{channel=\"sms\"} 1",
            ),
        ])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_respects_the_users_preferences() {
    let gateway = accepting_gateway().await;
    let fcm = fcm_with_dead_token().await;
    let stack = Stack::start(push_and_sms_options(&gateway, &fcm))
        .await
        .unwrap();
    let (user, me) =
        user_with_phone_and_dead_push(&stack, "no-sms@example.test", "+49301234098").await;
    // The user wants no SMS at all.
    let (status, answer) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&me),
            Some(json!({ "channels": { "sms": false } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");

    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "user_id": user }], "category": "billing",
                "channels": ["push"], "fallback": ["push", "sms"],
                "content": { "text": "Payment failed" } }),
    )
    .await;
    let push_id = planned[0]["id"].as_str().unwrap().to_owned();
    // The push dies, the fallback is planned on SMS — and suppressed, visibly, because the
    // user opted out of SMS.
    let view = settled_with_fallback(&stack, &id).await;
    let ds = view["deliveries"].as_array().unwrap();
    let push = ds.iter().find(|d| d["channel"] == "push").unwrap();
    let sms = ds.iter().find(|d| d["channel"] == "sms").unwrap();
    assert_eq!(
        (push["status"].as_str(), push["reason"].as_str()),
        (Some("dead"), Some("invalid_address"))
    );
    assert_eq!(
        (sms["status"].as_str(), sms["reason"].as_str()),
        (Some("suppressed"), Some("opted_out")),
        "{view}"
    );
    assert_eq!(sms["fallback_of"], push_id.as_str());
    assert!(
        gateway.received_requests().await.unwrap().is_empty(),
        "an SMS worker runs, and was never asked to send"
    );
}
