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
            sms: workers::sms::SmsConfig {
                base_url: gateway.uri(),
                account_sid: "AC0123".into(),
                auth_token: "secret".to_owned().into(),
                from: "+15550000000".into(),
                timeout_ms: 2_000,
            },
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_twice_then_succeeding_is_sent_on_attempt_3_on_the_schedule() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .with_priority(2)
        .mount(&gateway)
        .await;
    let stack = Stack::start(Options {
        retry_schedule: vec![1.0, 2.0, 60.0],
        retry_jitter: 0.2,
        ..sms_options(&gateway)
    })
    .await
    .unwrap();

    let id = sms(&stack, "+49301234001").await;
    let view = settled(&stack, &id, Duration::from_secs(30)).await;
    let d = &view["deliveries"][0];
    assert_eq!(d["status"], "sent", "{view}");
    assert_eq!(d["attempts"], 3);
    let delivery = d["id"].as_str().unwrap();

    let rows = attempts(&stack, delivery).await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| (r.attempt, r.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, "transient_failure"),
            (2, "transient_failure"),
            (3, "sent")
        ]
    );
    // Each retry was scheduled at schedule[n] ± 20 % after the failure was recorded (both
    // instants on the database's clock, in the transaction that recorded the failure)…
    for (failed, base) in [(0usize, 1.0), (1, 2.0)] {
        let scheduled =
            secs(due(&stack, delivery, failed as i32 + 2).await - rows[failed].recorded_at);
        assert!(
            (base * 0.8 - 0.001..=base * 1.2 + 0.001).contains(&scheduled),
            "retry {} scheduled {scheduled}s after the failure (schedule {base}s ± 20%)",
            failed + 2
        );
        // …and the provider was not called again before then.
        let gap = secs(rows[failed + 1].at - rows[failed].at);
        assert!(
            gap >= base * 0.8 - 0.05,
            "attempt {} came {gap}s after the previous",
            failed + 2
        );
    }
    assert_eq!(gateway.received_requests().await.unwrap().len(), 3);
    stack
        .expect_metrics(&[(
            Service::Repeater,
            "notify_repeater_retries_scheduled_total{channel=\"sms\"} 2",
        )])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_die_at_once_and_exhausted_retries_die_after_the_last() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_string_contains("49301234002"))
        .respond_with(twilio_error(400, 21610))
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_string_contains("49301234003"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&gateway)
        .await;
    let stack = Stack::start(Options {
        retry_schedule: vec![0.3, 0.3],
        ..sms_options(&gateway)
    })
    .await
    .unwrap();

    let permanent = sms(&stack, "+49301234002").await;
    let exhausted = sms(&stack, "+49301234003").await;
    let p = settled(&stack, &permanent, Duration::from_secs(20)).await;
    let e = settled(&stack, &exhausted, Duration::from_secs(20)).await;

    let p = &p["deliveries"][0];
    assert_eq!(p["status"], "dead", "{p}");
    assert_eq!(p["reason"], "permanent_failure");
    assert_eq!(p["attempts"], 1);
    assert_eq!(p["last_error"]["code"], "sms_21610");

    let e = &e["deliveries"][0];
    assert_eq!(e["status"], "dead", "{e}");
    assert_eq!(e["reason"], "attempts_exhausted");
    assert_eq!(e["attempts"], 3, "1 attempt + 2 scheduled retries");

    let requests = gateway.received_requests().await.unwrap();
    let to = |n: &str| {
        requests
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(n))
            .count()
    };
    assert_eq!(to("49301234002"), 1);
    assert_eq!(to("49301234003"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_by_filter() {
    let gateway = MockServer::start().await;
    for (number, code) in [
        ("49301234011", 21610),
        ("49301234012", 21610),
        ("49301234013", 30007),
    ] {
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(body_string_contains(number))
            .respond_with(twilio_error(400, code))
            .mount(&gateway)
            .await;
    }
    let stack = Stack::start(sms_options(&gateway)).await.unwrap();
    let admin = stack.token(Role::Admin, "ops-admin");

    let mut ids = Vec::new();
    for n in ["+49301234011", "+49301234012", "+49301234013"] {
        let id = sms(&stack, n).await;
        let view = settled(&stack, &id, Duration::from_secs(20)).await;
        assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");
        ids.push(view["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }

    let list = |q: &'static str| {
        let (stack, admin) = (&stack, admin.clone());
        async move {
            stack
                .call(
                    Method::GET,
                    &format!("/v1/admin/dead-letters{q}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap()
        }
    };
    let (status, all) = list("").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, by_code) = list("?error_code=sms_21610&provider=sms_gateway&channel=sms").await;
    let mut listed: Vec<&str> = by_code["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec![ids[0].as_str(), ids[1].as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    let (_, none) = list("?channel=email").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let (_, paged) = list("?limit=2").await;
    assert_eq!(paged["items"].as_array().unwrap().len(), 2);
    let cursor = paged["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = stack
        .call(
            Method::GET,
            &format!("/v1/admin/dead-letters?limit=2&cursor={cursor}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let (status, bad) = list("?channel=fax").await;
    assert_eq!(status, 422, "{bad}");

    // Bad re-drive requests change nothing.
    let redrive = |body: Value, token: String| {
        let stack = &stack;
        async move {
            stack
                .call(
                    Method::POST,
                    "/v1/admin/dead-letters/redrive",
                    Some(&token),
                    Some(body),
                )
                .await
                .unwrap()
        }
    };
    let (status, _) = redrive(json!({}), admin.clone()).await;
    assert_eq!(status, 422);
    let (status, _) = redrive(json!({ "ids": [ids[0]], "filter": {} }), admin.clone()).await;
    assert_eq!(status, 422);
    let (status, _) = redrive(
        json!({ "filter": { "channel": "sms" } }),
        stack.token(Role::Service, "billing"),
    )
    .await;
    assert_eq!(status, 403);
    let (_, still) = list("").await;
    assert_eq!(still["items"].as_array().unwrap().len(), 3);

    // The gateway now takes 0011 and 0012; re-drive exactly the sms_21610 ones.
    gateway.reset().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_string_contains("49301234013"))
        .respond_with(twilio_error(400, 30007))
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    let (status, body) = redrive(
        json!({ "filter": { "error_code": "sms_21610" } }),
        admin.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], 2);

    for id in &ids[..2] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let detail = loop {
            let (_, d) = stack
                .call(
                    Method::GET,
                    &format!("/v1/admin/deliveries/{id}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap();
            if d["status"] == "sent" || tokio::time::Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(detail["status"], "sent", "{detail}");
        assert_eq!(detail["attempts"], 2);
        assert_eq!(detail["redrives"][0]["kind"], "dead_letter");
        assert_eq!(detail["redrives"][0]["actor"], "ops-admin");
        assert_eq!(detail["redrives"][0]["to_attempt"], 2);
    }
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "only the re-driven two were sent again");
    assert!(
        requests
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("49301234013"))
    );

    let (_, left) = list("").await;
    let left: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![ids[2].as_str()]);

    // By ids: the dead one is re-driven (and dies again), the sent one is skipped.
    let (status, body) = redrive(json!({ "ids": [ids[2], ids[0]] }), admin.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], 1);
    assert_eq!(body["skipped"], json!([ids[0]]));
    let view = settled(
        &stack,
        &ids_notification(&stack, &ids[2]).await,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");

    stack
        .expect_metrics(&[
        (
            Service::Notifications,
            "notify_dead_letters_redriven_total 3",
        ),
        (
            Service::Repeater,
            "notify_repeater_dead_letters_total{channel=\"sms\",reason=\"permanent_failure\"} 4",
        ),
        ])
        .await
        .unwrap();
}

async fn ids_notification(stack: &Stack, delivery: &str) -> String {
    let id: Uuid = sqlx::query_scalar("SELECT notification_id FROM deliveries WHERE id = $1::uuid")
        .bind(delivery)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    id.to_string()
}

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
async fn the_stuck_scan_redrives_a_passed_over_message_and_leaves_a_backlog_alone() {
    use rdkafka::producer::FutureRecord;

    let gateway = MockServer::start().await;
    let mut opts = sms_options(&gateway);
    // SMS is planned but no worker consumes it: its messages wait in a backlog.
    opts.enabled_channels = vec![Channel::Email, Channel::Sms];
    opts.workers.channels = vec![Channel::Email];
    let mut stack = Stack::start(opts).await.unwrap();

    // A backlog: published, no status, far past the visibility timeout (3 s).
    let waiting = sms(&stack, "+49301234021").await;
    let waiting_delivery: Uuid =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE notification_id = $1::uuid")
            .bind(&waiting)
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();

    // A message the workers passed over: the outbox row says it went to (partition, offset) of
    // a message that was not it (as if lost), and the workers' group has committed past that.
    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "email": "passed-over@example.test" }], "category": "billing",
                "content": { "text": "hello" },
                "send_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }),
    )
    .await;
    let delivery = planned[0]["id"].as_str().unwrap().to_owned();
    let producer = common::kafka::producer(&stack.kafka_cfg, "test").unwrap();
    let topic = stack.kafka_cfg.topic("notify.dispatch.email.bulk");
    let rdkafka::producer::future_producer::Delivery {
        partition, offset, ..
    } = producer
        .send(
            FutureRecord::to(&topic)
                .key("someone-else")
                .payload("not a dispatch message"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '10 seconds', kafka_partition = $2, kafka_offset = $3
         WHERE headers ->> 'delivery-id' = $1",
    )
    .bind(&delivery)
    .bind(partition)
    .bind(offset)
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    sqlx::query("UPDATE deliveries SET status = 'queued' WHERE id = $1::uuid")
        .bind(&delivery)
        .execute(&stack.notify_pool)
        .await
        .unwrap();

    let view = settled(&stack, &id, Duration::from_secs(30)).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(
        stack.smtp.mails().len(),
        1,
        "the lost message was re-driven and sent once"
    );
    let admin = stack.token(Role::Admin, "ops-admin");
    let (_, detail) = stack
        .call(
            Method::GET,
            &format!("/v1/admin/deliveries/{delivery}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(detail["redrives"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(detail["redrives"][0]["kind"], "lost");
    assert_eq!(detail["redrives"][0]["actor"], "repeater");
    assert_eq!(detail["redrives"][0]["to_attempt"], 2);

    // The backlog was older than the visibility timeout for all that time, and untouched.
    let published: DateTime<Utc> = sqlx::query_scalar(
        "SELECT published_at FROM outbox WHERE headers ->> 'delivery-id' = $1::text",
    )
    .bind(waiting_delivery.to_string())
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    let wait = Duration::from_secs(5)
        .saturating_sub((Utc::now() - published).to_std().unwrap_or_default());
    tokio::time::sleep(wait).await;
    let (status, attempt, redrives): (String, i32, i64) = sqlx::query_as(
        "SELECT status, current_attempt, (SELECT count(*) FROM redrives WHERE delivery_id = d.id)
         FROM deliveries d WHERE id = $1",
    )
    .bind(waiting_delivery)
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempt, redrives), ("queued", 1, 0));

    // An SMS worker joins: the backlog's one message is sent once, as attempt 1 — a re-drive
    // would have left a second message (attempt 2) behind it.
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    let mut sms_workers = sms_options(&gateway).workers;
    sms_workers.channels = vec![Channel::Sms];
    stack.spawn_workers(sms_workers).await.unwrap();
    let view = settled(&stack, &waiting, Duration::from_secs(30)).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(view["deliveries"][0]["attempts"], 1, "{view}");
    let dispatched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE headers ->> 'delivery-id' = $1")
            .bind(waiting_delivery.to_string())
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert_eq!(dispatched, 1, "never re-driven");
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "the backlog was sent once");
    assert!(String::from_utf8_lossy(&requests[0].body).contains("To=%2B49301234021"));
}

/// The database's clock now (the one `updated_at` of a death is stamped with).
async fn db_now(stack: &Stack) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_filtered_and_redriven_by_time_of_death() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(twilio_error(400, 21610))
        .mount(&gateway)
        .await;
    let stack = Stack::start(sms_options(&gateway)).await.unwrap();
    let admin = stack.token(Role::Admin, "ops-admin");
    let mut dead = Vec::new();
    let mut boundary = None;
    for (i, phone) in ["+49301234031", "+49301234032"].iter().enumerate() {
        if i == 1 {
            // Everything before this instant died before it; everything after, after.
            boundary = Some(db_now(&stack).await);
        }
        let view = settled(&stack, &sms(&stack, phone).await, Duration::from_secs(20)).await;
        assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");
        dead.push(view["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    let t = boundary
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let t = t.replace('+', "%2B");
    let list = |q: String| {
        let (stack, admin) = (&stack, admin.clone());
        async move {
            let (status, body) = stack
                .call(
                    Method::GET,
                    &format!("/v1/admin/dead-letters{q}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "{q}: {body}");
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(format!("?since={t}")).await, vec![dead[1].clone()]);
    assert_eq!(list(format!("?until={t}")).await, vec![dead[0].clone()]);
    // An empty or reversed range is refused, naming `until`.
    for until in [t.clone(), "2000-01-01T00:00:00Z".to_owned()] {
        let (status, problem) = stack
            .call(
                Method::GET,
                &format!("/v1/admin/dead-letters?since={t}&until={until}"),
                Some(&admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            (status, problem["errors"][0]["field"].as_str()),
            (422, Some("until")),
            "{problem}"
        );
    }
    let (status, _) = stack
        .call(
            Method::GET,
            "/v1/admin/dead-letters?since=yesterday",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert!(status == 400 || status == 422, "{status}");

    // Re-drive only what died before the boundary.
    gateway.reset().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    let (status, body) = stack
        .call(
            Method::POST,
            "/v1/admin/dead-letters/redrive",
            Some(&admin),
            Some(json!({ "filter": { "until": boundary.unwrap() } })),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["redriven"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let view = settled(
        &stack,
        &ids_notification(&stack, &dead[0]).await,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(
        list(String::new()).await,
        vec![dead[1].clone()],
        "the later one stays dead"
    );
    assert_eq!(gateway.received_requests().await.unwrap().len(), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stuck_scan_recovers_what_retention_dropped_and_expires_what_outlived_its_ttl() {
    let gateway = accepting_gateway().await;
    let mut opts = sms_options(&gateway);
    // SMS is planned but nothing consumes it yet: its messages wait in the log.
    opts.enabled_channels = vec![Channel::Email, Channel::Sms];
    opts.workers.channels = vec![Channel::Email];
    let mut stack = Stack::start(opts).await.unwrap();

    let (keep, _) = send(
        &stack,
        json!({ "recipients": [{ "phone": "+49301234041" }], "category": "billing",
                "content": { "text": "keep me" } }),
    )
    .await;
    let (short, _) = send(
        &stack,
        json!({ "recipients": [{ "phone": "+49301234042" }], "category": "billing",
                "ttl_seconds": 2, "content": { "text": "only for 2 s" } }),
    )
    .await;
    // Both dispatch messages are published; wait until the short one's TTL is behind us.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let positions: Vec<(i32, i64)> = loop {
        let rows: Vec<(Option<i32>, Option<i64>)> = sqlx::query_as(
            "SELECT o.kafka_partition, o.kafka_offset FROM outbox o
             JOIN deliveries d ON o.headers ->> 'delivery-id' = d.id::text
             WHERE d.notification_id IN ($1::uuid, $2::uuid)",
        )
        .bind(&keep)
        .bind(&short)
        .fetch_all(&stack.notify_pool)
        .await
        .unwrap();
        if rows.len() == 2 && rows.iter().all(|(p, o)| p.is_some() && o.is_some()) {
            break rows
                .into_iter()
                .map(|(p, o)| (p.unwrap(), o.unwrap()))
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not published: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Retention: fill each partition holding one of them past the broker's 5 MB, so the log
    // no longer has them (their offsets fall below the low watermark).
    let topic = stack.kafka_cfg.topic("notify.dispatch.sms.bulk");
    let bootstrap = stack.kafka_cfg.bootstrap_servers.clone();
    let mut partitions: Vec<i32> = positions.iter().map(|(p, _)| *p).collect();
    partitions.sort_unstable();
    partitions.dedup();
    tokio::task::spawn_blocking(move || {
        for p in partitions {
            devkit::kafka::fill_partition(&bootstrap, &topic, p, 7, 900_000).unwrap();
        }
    })
    .await
    .unwrap();

    // The scan re-drives the first (a new message, after the filler) and expires the second.
    let admin = stack.token(Role::Admin, "ops-admin");
    let short_view = settled(&stack, &short, Duration::from_secs(30)).await;
    let d = &short_view["deliveries"][0];
    assert_eq!(
        (
            d["status"].as_str(),
            d["reason"].as_str(),
            d["attempts"].as_i64()
        ),
        (Some("expired"), Some("ttl_passed"), Some(0)),
        "{short_view}"
    );
    let keep_delivery: Uuid =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE notification_id = $1::uuid")
            .bind(&keep)
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    let detail = wait_redriven(&stack, &admin, keep_delivery).await;
    assert_eq!(detail["redrives"][0]["kind"], "lost", "{detail}");
    assert!(
        detail["redrives"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("retention"),
        "{detail}"
    );
    stack
        .expect_metrics(&[
            (
                Service::Repeater,
                "notify_repeater_stuck_redriven_total{channel=\"sms\"} 1",
            ),
            (
                Service::Repeater,
                "notify_repeater_stuck_expired_total{channel=\"sms\"} 1",
            ),
        ])
        .await
        .unwrap();

    // An SMS worker joins: it reads past the filler (undecodable: skipped) to the re-driven
    // attempt and sends it — once; the expired one never.
    let mut sms_workers = sms_options(&gateway).workers;
    sms_workers.channels = vec![Channel::Sms];
    stack.spawn_workers(sms_workers).await.unwrap();
    let view = settled(&stack, &keep, Duration::from_secs(60)).await;
    assert_eq!(
        (
            view["deliveries"][0]["status"].as_str(),
            view["deliveries"][0]["attempts"].as_i64()
        ),
        (Some("sent"), Some(1)),
        "{view}"
    );
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert!(String::from_utf8_lossy(&requests[0].body).contains("keep+me"));
}

/// Makes `delivery` (a scheduled one, its dispatch not yet published) look like a dispatch the
/// workers passed over: its outbox row "published" `age` ago at the position of a junk message
/// the email workers will skip, the delivery `status`.
async fn pass_over(stack: &Stack, delivery: &str, age_secs: i32, status: &str) {
    use rdkafka::producer::FutureRecord;
    let producer = common::kafka::producer(&stack.kafka_cfg, "test").unwrap();
    let topic = stack.kafka_cfg.topic("notify.dispatch.email.bulk");
    let rdkafka::producer::future_producer::Delivery {
        partition, offset, ..
    } = producer
        .send(
            FutureRecord::to(&topic)
                .key("someone-else")
                .payload("not a dispatch message"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET published_at = now() - make_interval(secs => $4), kafka_partition = $2,
                           kafka_offset = $3
         WHERE headers ->> 'delivery-id' = $1",
    )
    .bind(delivery)
    .bind(partition)
    .bind(offset)
    .bind(f64::from(age_secs))
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    sqlx::query("UPDATE deliveries SET status = $2 WHERE id = $1::uuid")
        .bind(delivery)
        .bind(status)
        .execute(&stack.notify_pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_continuous_load_a_lost_dispatch_is_recovered_while_traffic_goes_on() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    // Steady traffic, 50 emails a second, for the whole test: the repeater always has some
    // status events it has not committed yet.
    let load = tokio_util::sync::CancellationToken::new();
    let traffic = tokio::spawn({
        let (stack_url, svc, stop, http) =
            (stack.url(), svc.clone(), load.clone(), stack.http.clone());
        async move {
            let mut sent = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.is_cancelled() {
                tick.tick().await;
                let resp = http
                    .post(format!("{stack_url}/v1/notifications"))
                    .bearer_auth(&svc)
                    .json(
                        &json!({ "recipients": [{ "email": format!("load{sent}@example.com") }],
                                   "category": "news", "content": { "text": "load" } }),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                sent += 1;
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "email": "lost-under-load@example.test" }], "category": "billing",
                "content": { "text": "hello" },
                "send_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }),
    )
    .await;
    let delivery = planned[0]["id"].as_str().unwrap().to_owned();
    pass_over(&stack, &delivery, 10, "queued").await;

    let view = settled(&stack, &id, Duration::from_secs(30)).await;
    let sent_under_load = !traffic.is_finished();
    load.cancel();
    let total = traffic.await.unwrap();
    assert!(sent_under_load, "the load stopped early");
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    let admin = stack.token(Role::Admin, "ops-admin");
    let (_, detail) = stack
        .call(
            Method::GET,
            &format!("/v1/admin/deliveries/{delivery}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(detail["redrives"][0]["kind"], "lost", "{detail}");
    // (How many depends on the machine: the traffic only has to be going on.)
    assert!(total > 0, "no load was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_dispatch_lost_after_its_outbox_row_was_purged_is_still_recovered() {
    let gateway = accepting_gateway().await;
    let mut opts = sms_options(&gateway);
    // SMS is planned but nothing consumes it yet; published rows are purged after 2 s, and the
    // scan remembers a dispatch's position once it is 1 s old.
    opts.enabled_channels = vec![Channel::Email, Channel::Sms];
    opts.workers.channels = vec![Channel::Email];
    opts.relay.retention_secs = 2;
    opts.relay.purge_interval_secs = 1;
    opts.stuck.remember_after_secs = 1.0;
    let mut stack = Stack::start(opts).await.unwrap();

    // Scheduled a second ahead: published then, and `pending` until a status arrives.
    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "phone": "+49301234051" }], "category": "billing",
                "content": { "text": "scheduled" },
                "send_at": (Utc::now() + chrono::Duration::seconds(1)).to_rfc3339() }),
    )
    .await;
    let delivery: Uuid = planned[0]["id"].as_str().unwrap().parse().unwrap();
    // The scan copies the dispatch's position onto the delivery; then the relay purges the row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let partition = loop {
        let (remembered, partition, rows): (Option<i32>, Option<i32>, i64) = sqlx::query_as(
            "SELECT dispatch_attempt, dispatch_partition,
                    (SELECT count(*) FROM outbox WHERE headers ->> 'delivery-id' = d.id::text)
             FROM deliveries d WHERE id = $1",
        )
        .bind(delivery)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
        if remembered == Some(1) && rows == 0 {
            break partition.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "remembered {remembered:?}, {rows} outbox rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status: String = sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
        .bind(delivery)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");

    // Now the message is lost too (retention drops it): recovered from what the delivery kept.
    let (bootstrap, topic) = (
        stack.kafka_cfg.bootstrap_servers.clone(),
        stack.kafka_cfg.topic("notify.dispatch.sms.bulk"),
    );
    tokio::task::spawn_blocking(move || {
        devkit::kafka::fill_partition(&bootstrap, &topic, partition, 7, 900_000).unwrap();
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops-admin");
    let detail = wait_redriven(&stack, &admin, delivery).await;
    assert!(
        detail["redrives"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("retention"),
        "{detail}"
    );

    let mut sms_workers = sms_options(&gateway).workers;
    sms_workers.channels = vec![Channel::Sms];
    stack.spawn_workers(sms_workers).await.unwrap();
    let view = settled(&stack, &id, Duration::from_secs(60)).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(gateway.received_requests().await.unwrap().len(), 1);
}
