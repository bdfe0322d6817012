//! Email bounces and complaints fill the suppression list: a signed hard bounce suppresses
//! the next send to that address (written `suppressed` / `bounced`, nothing reaches SMTP);
//! soft bounces suppress at the threshold; a complaint at once (`complained`); unsigned or
//! replayed reports change nothing; an admin lists the list and removes an entry, after which
//! the address is sent to again.

use common::{auth::Role, signing::SigningKey};
use e2e::{Options, Stack};
use notification_service::routes::bounces::BouncesConfig;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn options() -> Options {
    Options {
        welcome: false,
        bounces: BouncesConfig {
            secret: SECRET.to_owned().into(),
            soft_bounce_threshold: 3,
            tolerance_secs: 300,
        },
        ..Options::default()
    }
}

/// Sends one email and waits until it is settled; its delivery.
async fn email(stack: &Stack, to: &str) -> Value {
    let view = stack
        .send_settled(
            json!({ "recipients": [{ "email": to }], "category": "billing",
                              "content": { "subject": "Invoice", "text": "Your invoice" } }),
        )
        .await
        .unwrap();
    view["deliveries"][0].clone()
}

/// Posts a bounce report through the bff, signed with `secret` (`None`: unsigned).
async fn report(
    stack: &Stack,
    id: &str,
    kind: &str,
    to: &str,
    secret: Option<&str>,
) -> (u16, Value) {
    let body = json!({ "type": kind, "email": to, "detail": "550 5.1.1 user unknown" }).to_string();
    let mut req = stack
        .http
        .post(format!("{}/v1/bounces", stack.url()))
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(secret) = secret {
        let ts = chrono::Utc::now().timestamp();
        let sig = SigningKey::from_secret(secret)
            .unwrap()
            .sign(id, ts, body.as_bytes());
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_suppresses_the_next_send_and_an_admin_can_lift_it() {
    let stack = Stack::start(options()).await.unwrap();
    let admin = stack.token(Role::Admin, "ops");

    assert_eq!(email(&stack, "gone@example.test").await["status"], "sent");
    assert_eq!(stack.smtp.mails().len(), 1);

    // Unsigned, or signed with another key: refused, nothing suppressed.
    let (status, body) = report(&stack, "msg_0", "hard_bounce", "gone@example.test", None).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("invalid_signature")),
        "{body}"
    );
    let other = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";
    let (status, _) = report(
        &stack,
        "msg_0",
        "hard_bounce",
        "gone@example.test",
        Some(other),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(email(&stack, "gone@example.test").await["status"], "sent");
    assert_eq!(stack.smtp.mails().len(), 2);

    // A signed hard bounce: the next send is suppressed and never reaches SMTP.
    let (status, body) = report(
        &stack,
        "msg_1",
        "hard_bounce",
        "gone@example.test",
        Some(SECRET),
    )
    .await;
    assert_eq!((status, &body["suppressed"]), (200, &json!(true)), "{body}");
    let (status, body) = report(
        &stack,
        "msg_1",
        "hard_bounce",
        "gone@example.test",
        Some(SECRET),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("report_replayed")),
        "{body}"
    );
    let d = email(&stack, "gone@example.test").await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("suppressed"), Some("bounced")),
        "{d}"
    );
    assert_eq!(stack.smtp.mails().len(), 2, "a suppressed address got mail");

    // Soft bounces count up to the threshold; a complaint suppresses at once.
    for (i, want) in [(1, false), (2, false), (3, true)] {
        let (status, body) = report(
            &stack,
            &format!("soft_{i}"),
            "soft_bounce",
            "full@example.test",
            Some(SECRET),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["soft_bounces"].as_i64(), body["suppressed"].as_bool()),
            (Some(i), Some(want))
        );
    }
    report(
        &stack,
        "complaint_1",
        "complaint",
        "angry@example.test",
        Some(SECRET),
    )
    .await;
    let d = email(&stack, "angry@example.test").await;
    assert_eq!(d["reason"], "complained", "{d}");

    // The admin's view, and lifting a suppression.
    let (status, page) = stack
        .call(
            Method::GET,
            "/v1/admin/suppressions?channel=email",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let reasons: Vec<(&str, &str)> = items
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap(),
                s["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("angry@example.test", "complaint"),
            ("full@example.test", "soft_bounces"),
            ("gone@example.test", "hard_bounce")
        ]
    );
    let gone = items[2]["id"].as_str().unwrap();
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/admin/suppressions/{gone}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let user = stack.token(Role::User, &uuid::Uuid::now_v7().to_string());
    let (status, _) = stack
        .call(Method::GET, "/v1/admin/suppressions", Some(&user), None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert_eq!(email(&stack, "gone@example.test").await["status"], "sent");
    assert_eq!(stack.smtp.mails().len(), 3);
}
