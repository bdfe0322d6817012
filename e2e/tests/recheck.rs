//! The re-check before an attempt (decision 0026): a retry, a scheduled send or a re-drive goes
//! out later than it was planned, and by then the user may have opted out, changed or removed
//! the address, or the address may have bounced. Each is checked again just before it is
//! published: not sent (`suppressed` with the reason) or sent to the current address — and an
//! admin's re-drive of a bounced address is refused with the reason.
//!
//! Time is moved, not waited for: retries and sends are scheduled an hour out, and a test makes
//! a row due once the world has changed — written an hour earlier, due now: what the hour would
//! have done.

use std::time::Duration;

use common::{auth::Role, signing::SigningKey};
use devkit::smtp::Mode;
use e2e::{Options, Stack};
use notification_service::routes::bounces::BouncesConfig;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn options() -> Options {
    Options {
        welcome: false,
        // A retry an hour out: nothing is retried unless the test makes it due.
        retry_schedule: vec![3600.0],
        bounces: BouncesConfig {
            secret: SECRET.to_owned().into(),
            soft_bounce_threshold: 3,
            tolerance_secs: 300,
        },
        ..Options::default()
    }
}

/// A signed hard bounce for `to`.
async fn hard_bounce(stack: &Stack, to: &str) {
    let body = json!({ "type": "hard_bounce", "email": to, "detail": "550 5.1.1 user unknown" })
        .to_string();
    let id = format!("msg_{}", Uuid::new_v4().simple());
    let ts = chrono::Utc::now().timestamp();
    let sig = SigningKey::from_secret(SECRET)
        .unwrap()
        .sign(&id, ts, body.as_bytes());
    let resp = stack
        .http
        .post(format!("{}/v1/bounces", stack.url()))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// Delivery `id` as an admin sees it, once its status is one of `statuses`.
async fn delivery_in(stack: &Stack, id: &str, statuses: &[&str]) -> Value {
    let admin = stack.token(Role::Admin, "ops");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, d) = stack
            .call(
                Method::GET,
                &format!("/v1/admin/deliveries/{id}"),
                Some(&admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{d}");
        if statuses.contains(&d["status"].as_str().unwrap_or_default()) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery {id} never reached {statuses:?}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes delivery `id`'s unpublished dispatch due now, as if the hour had passed: written an
/// hour earlier than it was, due now.
async fn due_now(stack: &Stack, id: &str) {
    let moved = sqlx::query(
        "UPDATE outbox SET available_at = now(), created_at = created_at - interval '1 hour'
         WHERE published_at IS NULL AND headers ->> 'delivery-id' = $1",
    )
    .bind(id)
    .execute(&stack.notify_pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(moved, 1, "delivery {id} has one dispatch waiting");
}

async fn put(stack: &Stack, user: Uuid, path: &str, body: Value) {
    let token = stack.token(Role::User, &user.to_string());
    let (status, answer) = stack
        .call(Method::PUT, path, Some(&token), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    stack
        .wait_profile_evicted(user, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_checked_again_before_it_is_sent() {
    let stack = Stack::start(options()).await.unwrap();
    let opted = stack.register_user("opted@example.com").await.unwrap();
    let moved = stack.register_user("moved@example.com").await.unwrap();
    let steady = stack.register_user("steady@example.com").await.unwrap();
    // The first attempt of each of the four fails: each waits for its retry.
    stack.smtp.set_mode(Mode::FailTransient(4));
    let view = stack
        .send(
            &stack.token(Role::Service, "billing"),
            json!({ "recipients": [{ "user_id": opted }, { "user_id": moved },
                                   { "user_id": steady }, { "email": "bounces@example.com" }],
                    "category": "billing", "content": { "subject": "Invoice", "text": "Due" } }),
        )
        .await
        .unwrap();
    let ids: Vec<String> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        delivery_in(&stack, id, &["retrying"]).await;
    }
    assert_eq!(stack.smtp.mails().len(), 0);

    // Meanwhile: one opts out, one changes address, one address bounces, one stays.
    put(
        &stack,
        opted,
        "/v1/me/preferences",
        json!({ "channels": { "email": false }, "categories": {} }),
    )
    .await;
    put(
        &stack,
        moved,
        "/v1/me/contacts",
        json!({ "email": "moved-here@example.com" }),
    )
    .await;
    hard_bounce(&stack, "bounces@example.com").await;
    for id in &ids {
        due_now(&stack, id).await;
    }

    let opted_out = delivery_in(&stack, &ids[0], &["suppressed", "sent"]).await;
    assert_eq!(
        (opted_out["status"].as_str(), opted_out["reason"].as_str()),
        (Some("suppressed"), Some("opted_out")),
        "{opted_out}"
    );
    let readdressed = delivery_in(&stack, &ids[1], &["sent", "suppressed"]).await;
    assert_eq!(readdressed["status"], "sent", "{readdressed}");
    assert_eq!(readdressed["address"], "moved-here@example.com");
    let sent = delivery_in(&stack, &ids[2], &["sent", "suppressed"]).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    let bounced = delivery_in(&stack, &ids[3], &["suppressed", "sent"]).await;
    assert_eq!(
        (bounced["status"].as_str(), bounced["reason"].as_str()),
        (Some("suppressed"), Some("bounced")),
        "{bounced}"
    );
    let mut to: Vec<String> = stack
        .smtp
        .wait_for(2, Duration::from_secs(10))
        .await
        .into_iter()
        .flat_map(|m| m.to)
        .collect();
    to.sort();
    assert_eq!(to, ["moved-here@example.com", "steady@example.com"]);
    stack
        .expect_metrics(&[
            (
                e2e::Service::Notifications,
                "notify_rechecks_total{outcome=\"suppressed\"} 2",
            ),
            (
                e2e::Service::Notifications,
                "notify_rechecks_total{outcome=\"readdressed\"} 1",
            ),
        ])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_to_a_removed_address_is_not_sent() {
    let stack = Stack::start(options()).await.unwrap();
    let user = stack.register_user("leaving@example.com").await.unwrap();
    let send_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let view = stack
        .send(
            &stack.token(Role::Service, "billing"),
            json!({ "recipients": [{ "user_id": user }], "category": "billing",
                    "send_at": send_at, "content": { "text": "Later" } }),
        )
        .await
        .unwrap();
    let id = view["deliveries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(view["deliveries"][0]["status"], "pending");
    put(&stack, user, "/v1/me/contacts", json!({})).await;
    due_now(&stack, &id).await;
    let d = delivery_in(&stack, &id, &["suppressed", "sent"]).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("suppressed"), Some("no_contact")),
        "{d}"
    );
    assert!(stack.smtp.mails().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_re_drive_of_a_bounced_address_is_refused_with_the_reason() {
    let stack = Stack::start(options()).await.unwrap();
    let admin = stack.token(Role::Admin, "ops");
    stack.smtp.set_mode(Mode::RejectAll);
    let view = stack
        .send_settled(json!({ "recipients": [{ "email": "gone@example.com" }, { "email": "back@example.com" }],
                              "category": "billing", "content": { "text": "x" } }))
        .await
        .unwrap();
    let ids: Vec<String> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        view["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "dead"),
        "{view}"
    );
    hard_bounce(&stack, "gone@example.com").await;
    stack.smtp.set_mode(Mode::Accept);

    let (status, out) = stack
        .call(
            Method::POST,
            "/v1/admin/dead-letters/redrive",
            Some(&admin),
            Some(json!({ "ids": ids })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["redriven"], 1, "{out}");
    assert_eq!(out["refused_total"], 1, "{out}");
    assert_eq!(
        out["refused"],
        json!([{ "id": ids[0], "reason": "bounced" }]),
        "{out}"
    );
    delivery_in(&stack, &ids[1], &["sent"]).await;
    let still = delivery_in(&stack, &ids[0], &["dead"]).await;
    assert_eq!(still["attempt_log"].as_array().unwrap().len(), 1);

    // By filter too, and the request ends (the refused one stays dead and matches again).
    let (status, out) = stack
        .call(
            Method::POST,
            "/v1/admin/dead-letters/redrive",
            Some(&admin),
            Some(json!({ "filter": {} })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (out["redriven"].as_u64(), out["refused_total"].as_u64()),
        (Some(0), Some(1)),
        "{out}"
    );
}
