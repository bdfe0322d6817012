//! Topics end to end: subscribers managed in bulk by services and by users themselves, and a
//! send to a topic fanned out in chunks through the one intake pipeline — every subscriber as
//! of acceptance exactly once, opt-outs and quiet hours holding, resumable across a SIGKILL of
//! notification-service, progress visible, cancel stopping it.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Polls the notification (as an admin) until `done(view)` holds; the view.
async fn wait_for(
    stack: &Stack,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let admin = stack.token(Role::Admin, "ops");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, view) = stack
            .call(
                Method::GET,
                &format!("/v1/notifications/{id}"),
                Some(&admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{view}");
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {timeout:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fanout_state(view: &Value) -> &str {
    view["fanout"]["state"].as_str().unwrap_or_default()
}

/// `n` users written straight into users-service's database (the API registers one per
/// call), `with_email` of them with an address `<prefix><i>@example.com`; their ids in order.
async fn bulk_users(stack: &Stack, prefix: &str, n: i64, with_email: i64) -> Vec<Uuid> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, $1) RETURNING id",
    )
    .bind(n)
    .fetch_all(&stack.users_pool)
    .await
    .unwrap();
    let mailed: Vec<Uuid> = ids.iter().take(with_email as usize).copied().collect();
    let emails: Vec<String> = (0..mailed.len())
        .map(|i| format!("{prefix}{i}@example.com"))
        .collect();
    sqlx::query(
        "INSERT INTO contacts (user_id, email) SELECT * FROM UNNEST($1::uuid[], $2::text[])",
    )
    .bind(&mailed)
    .bind(&emails)
    .execute(&stack.users_pool)
    .await
    .unwrap();
    ids
}

/// Subscribes `ids` to `topic` through the public API, 10,000 per call.
async fn subscribe(stack: &Stack, topic: &str, ids: &[Uuid]) {
    let svc = stack.token(Role::Service, "crm");
    for chunk in ids.chunks(10_000) {
        let (status, body) = stack
            .call(
                Method::PUT,
                &format!("/v1/topics/{topic}/subscribers"),
                Some(&svc),
                Some(json!({ "user_ids": chunk })),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_managed_in_bulk_and_by_users_with_every_bad_input_refused() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "crm");
    let admin = stack.token(Role::Admin, "ops");
    let users = bulk_users(&stack, "m", 5, 5).await;
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let (stack, path, token) = (&stack, path.to_owned(), token.to_owned());
        async move { stack.call(method, &path, Some(&token), body).await.unwrap() }
    };

    // Subscribing creates the topic (closed); duplicates and repeats are not counted twice.
    let (status, body) = call(
        Method::PUT,
        "/v1/topics/project.apollo/subscribers",
        &svc,
        Some(json!({ "user_ids": [users[0], users[1], users[1]] })),
    )
    .await;
    assert_eq!(
        (status, &body["changed"], &body["subscribers"]),
        (200, &json!(2), &json!(2)),
        "{body}"
    );
    let (_, body) = call(
        Method::PUT,
        "/v1/topics/project.apollo/subscribers",
        &svc,
        Some(json!({ "user_ids": [users[1], users[2]] })),
    )
    .await;
    assert_eq!(
        (&body["changed"], &body["subscribers"]),
        (&json!(1), &json!(3)),
        "{body}"
    );
    // An unknown user: 404 naming it, and nothing changes.
    let stranger = Uuid::now_v7();
    let (status, body) = call(
        Method::PUT,
        "/v1/topics/project.apollo/subscribers",
        &svc,
        Some(json!({ "user_ids": [users[3], stranger] })),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&stranger.to_string()),
        "{body}"
    );
    let (status, topic) = call(Method::GET, "/v1/topics/project.apollo", &svc, None).await;
    assert_eq!(
        (status, &topic["subscribers"], &topic["open"]),
        (200, &json!(3), &json!(false)),
        "{topic}"
    );
    // Too many ids, none, a bad key, a user's token.
    let many: Vec<Uuid> = (0..10_001).map(|_| Uuid::now_v7()).collect();
    let (status, body) = call(
        Method::PUT,
        "/v1/topics/project.apollo/subscribers",
        &svc,
        Some(json!({ "user_ids": many })),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("user_ids")),
        "{body}"
    );
    let (status, _) = call(
        Method::PUT,
        "/v1/topics/project.apollo/subscribers",
        &svc,
        Some(json!({ "user_ids": [] })),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(Method::GET, "/v1/topics/Not%20A%20Key", &svc, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(Method::GET, "/v1/topics/nope", &svc, None).await;
    assert_eq!(status, 404);
    let me0 = stack.token(Role::User, &users[0].to_string());
    let (status, _) = call(Method::GET, "/v1/topics/project.apollo", &me0, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(
        Method::PUT,
        "/v1/topics/project.apollo/subscribers",
        &me0,
        Some(json!({ "user_ids": [users[0]] })),
    )
    .await;
    assert_eq!(status, 403);

    // Unsubscribe counts only those who were.
    let (_, body) = call(
        Method::DELETE,
        "/v1/topics/project.apollo/subscribers",
        &svc,
        Some(json!({ "user_ids": [users[2], users[4]] })),
    )
    .await;
    assert_eq!(
        (&body["changed"], &body["subscribers"]),
        (&json!(1), &json!(2)),
        "{body}"
    );

    // Users: a closed topic cannot be followed, an open one can; any can be left.
    let me3 = stack.token(Role::User, &users[3].to_string());
    let (status, body) = call(
        Method::PUT,
        "/v1/me/topics",
        &me3,
        Some(json!({ "keys": ["project.apollo"] })),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        Method::PUT,
        "/v1/me/topics",
        &me3,
        Some(json!({ "keys": ["no.such.topic"] })),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // A body that is an array, not an object: 422, nothing created.
    let (status, body) = call(
        Method::PUT,
        "/v1/topics/arrays",
        &admin,
        Some(json!([null, null])),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = call(Method::GET, "/v1/topics/arrays", &admin, None).await;
    assert_eq!(status, 404);
    let (status, body) = call(
        Method::PUT,
        "/v1/topics/releases",
        &admin,
        Some(json!({ "name": "Releases", "open": true })),
    )
    .await;
    assert_eq!((status, &body["open"]), (201, &json!(true)), "{body}");
    let (status, _) = call(
        Method::PUT,
        "/v1/topics/releases",
        &admin,
        Some(json!({ "name": "  " })),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        Method::PUT,
        "/v1/topics/releases",
        &admin,
        Some(json!({ "name": "Releases 2" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(Method::GET, "/v1/me/topics", &me3, None).await;
    assert_eq!(status, 200);
    let offered: Vec<(&str, bool)> = body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap(),
                t["following"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        offered,
        vec![("releases", false)],
        "closed topics are not offered: {body}"
    );
    let (status, body) = call(
        Method::PUT,
        "/v1/me/topics",
        &me3,
        Some(json!({ "keys": ["releases", "releases"] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topics"][0]["following"], true, "{body}");
    let (_, topic) = call(Method::GET, "/v1/topics/releases", &svc, None).await;
    assert_eq!(topic["subscribers"], 1);
    // users[0] was subscribed by a service to a closed topic: they see it and can leave it.
    let (_, body) = call(Method::GET, "/v1/me/topics", &me0, None).await;
    assert!(
        body["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "project.apollo" && t["following"] == true),
        "{body}"
    );
    let (status, body) = call(
        Method::DELETE,
        "/v1/me/topics",
        &me0,
        Some(json!({ "keys": ["project.apollo"] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, topic) = call(Method::GET, "/v1/topics/project.apollo", &svc, None).await;
    assert_eq!(topic["subscribers"], 1);
    let (status, _) = call(Method::GET, "/v1/me/topics", &svc, None).await;
    assert_eq!(status, 403);

    // Admins list every topic, a page at a time.
    let (status, page) = call(Method::GET, "/v1/admin/topics?limit=1", &admin, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["key"], "project.apollo");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = call(
        Method::GET,
        &format!("/v1/admin/topics?limit=1&cursor={cursor}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(page["items"][0]["key"], "releases");
    assert!(page["next_cursor"].is_null(), "{page}");
    let (status, _) = call(Method::GET, "/v1/admin/topics", &svc, None).await;
    assert_eq!(status, 403);
}

/// A send to a topic (beside a user named directly and a raw address) reaches every
/// subscriber as of acceptance exactly once, in chunks: not those removed before it, not one
/// who subscribed after it; a user's opt-out and quiet hours hold; the user also named
/// directly gets one delivery; an idempotency key replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_send_reaches_every_subscriber_once_with_their_preferences() {
    let stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        welcome: false,
        // Chunks of 7: the 23 subscribers span four, with a boundary inside.
        fanout: notification_service::fanout::FanoutConfig {
            chunk_size: 7,
            ..Default::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let users = bulk_users(&stack, "t", 27, 27).await;
    subscribe(&stack, "news", &users[..26]).await;
    // Removed before the send: not reached.
    let (status, _) = stack
        .call(
            Method::DELETE,
            "/v1/topics/news/subscribers",
            Some(&stack.token(Role::Service, "crm")),
            Some(json!({ "user_ids": [users[24], users[25]] })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    // users[1] opts out of news by email; users[2] is in quiet hours now.
    let opt_out = stack.token(Role::User, &users[1].to_string());
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&opt_out),
            Some(json!({ "categories": { "news": { "email": false } } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let quiet = stack.token(Role::User, &users[2].to_string());
    let now = chrono::Utc::now();
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&quiet),
            Some(
                json!({ "quiet_hours": { "start": hm(now - chrono::Duration::hours(1)),
                                          "end": hm(now + chrono::Duration::hours(2)),
                                          "timezone": "UTC" } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for u in [users[1], users[2]] {
        stack
            .wait_profile_evicted(u, Duration::from_secs(10))
            .await
            .unwrap();
    }

    // Refused: an unknown topic, two topics.
    let body = |recipients: Value| {
        json!({ "recipients": recipients, "category": "news",
                "content": { "subject": "Launch", "text": "We launched." } })
    };
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(body(json!([{ "topic": "nope" }]))),
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(body(json!([{ "topic": "news" }, { "topic": "news.2" }]))),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("recipients[1].topic")),
        "{problem}"
    );

    // The send: answered at once, fanned out.
    let send = body(
        json!([{ "topic": "news" }, { "user_id": users[0] }, { "email": "press@example.com" }]),
    );
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&svc)
        .header("Idempotency-Key", "launch-1")
        .json(&send)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "in_progress", "{view}");
    assert_eq!(view["fanout"]["topic"], "news", "{view}");
    let id = view["id"].as_str().unwrap().to_owned();
    // Subscribed after acceptance: not reached.
    subscribe(&stack, "news", &users[26..]).await;

    let done = wait_for(&stack, &id, Duration::from_secs(60), |v| {
        fanout_state(v) == "done"
    })
    .await;
    let f = &done["fanout"];
    assert_eq!(
        (&f["total"], &f["planned"], &f["chunks"], &f["chunks_done"]),
        (&json!(24), &json!(23), &json!(4), &json!(4)),
        "users[0] is reached directly: {done}"
    );
    // One delivery per user: 24 users and the raw address.
    let admin = stack.token(Role::Admin, "ops");
    let deliveries = stack.all_deliveries(&admin, &done).await.unwrap();
    assert_eq!(deliveries.len(), 25, "{done}");
    let of = |u: Uuid| {
        deliveries
            .iter()
            .filter(|d| d["recipient"]["user_id"] == json!(u))
            .collect::<Vec<_>>()
    };
    for u in &users[..24] {
        assert_eq!(of(*u).len(), 1, "{u}");
    }
    for u in &users[24..] {
        assert!(of(*u).is_empty(), "{u} was not a subscriber at acceptance");
    }
    assert_eq!(of(users[1])[0]["status"], "suppressed");
    assert_eq!(of(users[1])[0]["reason"], "opted_out");
    assert_eq!(
        of(users[2])[0]["status"],
        "pending",
        "quiet hours hold a topic send"
    );

    // 23 mails: 22 of the 24 users (one opted out, one in quiet hours) and the press address.
    let mails = stack.smtp.wait_for(23, Duration::from_secs(60)).await;
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!((to.len(), mails.len()), (23, 23), "{to:?}");
    assert!(
        !to.iter()
            .any(|t| t.starts_with("t1@") || t.starts_with("t2@") || t.starts_with("t24@"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.smtp.mails().len(), 23, "nobody twice");

    // The same key and body: the first answer, no second fan-out.
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&svc)
        .header("Idempotency-Key", "launch-1")
        .json(&send)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let replay: Value = resp.json().await.unwrap();
    assert_eq!(replay["id"], json!(id));
    assert_eq!(stack.notify_count("SELECT count(*) FROM fanouts").await, 1);
}

/// notification-service SIGKILLed in the middle of a 100,000-subscriber fan-out: back up, it
/// finishes, and every subscriber is planned exactly once; progress is visible meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_fanout_plans_every_subscriber_exactly_once() {
    const N: i64 = 100_000;
    const MAILED: i64 = 200;
    let mut stack = Stack::start(Options {
        welcome: false,
        notification_service_process: Some(vec![(
            "NOTIFY_FANOUT__CHUNK_SIZE".into(),
            "1000".into(),
        )]),
        ..Options::default()
    })
    .await
    .unwrap();
    // Most have no address (planned `suppressed`, no_contact: the test plans 100,000 without
    // mailing them); 200 are mailed.
    let users = bulk_users(&stack, "k", N, MAILED).await;
    subscribe(&stack, "everyone", &users).await;
    let svc = stack.token(Role::Service, "billing");
    let view = stack
        .send(
            &svc,
            json!({ "recipients": [{ "topic": "everyone" }], "category": "news",
                    "content": { "text": "Hello, everyone." } }),
        )
        .await
        .unwrap();
    let id = view["id"].as_str().unwrap().to_owned();

    // Progress while it runs, then the kill.
    let running = wait_for(&stack, &id, Duration::from_secs(120), |v| {
        v["fanout"]["chunks_done"].as_i64().unwrap_or(0) >= 10
    })
    .await;
    stack.kill_notification_service();
    let f = &running["fanout"];
    assert_eq!(
        (f["state"].as_str(), &f["total"], &f["chunks"]),
        (Some("planning"), &json!(N), &json!(100)),
        "{running}"
    );
    let planned = f["planned"].as_i64().unwrap();
    assert!(planned > 0 && planned < N, "{running}");
    assert_eq!(running["status"], "in_progress");
    let at_kill = stack
        .notify_count(&format!(
            "SELECT count(*) FROM deliveries WHERE notification_id = '{id}'"
        ))
        .await;
    assert!(at_kill < N, "the kill was to land mid-fan-out: {at_kill}");

    stack.start_notification_service().await.unwrap();
    let done = wait_for(&stack, &id, Duration::from_secs(240), |v| {
        fanout_state(v) == "done"
    })
    .await;
    let f = &done["fanout"];
    assert_eq!(
        (&f["planned"], &f["chunks_done"]),
        (&json!(N), &json!(100)),
        "{done}"
    );
    let (deliveries, users_reached): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT user_id) FROM deliveries WHERE notification_id = $1",
    )
    .bind(id.parse::<Uuid>().unwrap())
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(
        (deliveries, users_reached),
        (N, N),
        "each subscriber exactly once"
    );
    assert_eq!(done["delivery_counts"]["total"], json!(N));
    let mails = stack
        .smtp
        .wait_for(MAILED as usize, Duration::from_secs(120))
        .await;
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!(to.len(), MAILED as usize);
}

/// Cancel stops a fan-out in progress: no chunk is planned after it, and what was planned
/// and not yet sent is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_fanout_in_progress() {
    let stack = Stack::start(Options {
        welcome: false,
        fanout: notification_service::fanout::FanoutConfig {
            chunk_size: 20,
            concurrency: 1,
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let users = bulk_users(&stack, "c", 4_000, 4_000).await;
    subscribe(&stack, "big", &users).await;
    let svc = stack.token(Role::Service, "billing");
    // Scheduled an hour ahead: every planned delivery waits (`pending`) and can be cancelled.
    let send_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let view = stack
        .send(
            &svc,
            json!({ "recipients": [{ "topic": "big" }], "category": "news", "send_at": send_at,
                    "content": { "text": "Later." } }),
        )
        .await
        .unwrap();
    let id = view["id"].as_str().unwrap().to_owned();
    wait_for(&stack, &id, Duration::from_secs(60), |v| {
        v["fanout"]["chunks_done"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let (status, cancelled) = stack
        .call(
            Method::POST,
            &format!("/v1/notifications/{id}/cancel"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["fanout"]["state"], "cancelled", "{cancelled}");
    let chunks = cancelled["fanout"]["chunks_done"].as_i64().unwrap();
    assert!(chunks < 200, "{cancelled}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = wait_for(&stack, &id, Duration::from_secs(5), |_| true).await;
    assert_eq!(
        later["fanout"]["chunks_done"].as_i64().unwrap(),
        chunks,
        "no chunk after the cancel: {later}"
    );
    assert_eq!(later["status"], "cancelled", "{later}");
    let open = stack
        .notify_count(&format!(
            "SELECT count(*) FROM deliveries WHERE notification_id = '{id}' AND status NOT IN ('cancelled', 'suppressed')"
        ))
        .await;
    assert_eq!(open, 0);
}
