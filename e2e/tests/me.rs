//! The `/v1/me…` surface through the bff: aggregation, replacement, validation naming the
//! field, devices, history, and that one user can never reach another's data.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    stack.call(method, path, Some(token), body).await.unwrap()
}

fn field(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_and_replaces_their_own_contacts_preferences_and_devices() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let id = stack.register_user("lea@example.com").await.unwrap();
    let lea = stack.token(Role::User, &id.to_string());

    let (status, me) = call(&stack, Method::GET, "/v1/me", &lea, None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], id.to_string());
    assert_eq!(me["contacts"]["email"], "lea@example.com");
    assert_eq!(me["devices"], json!([]));
    assert_eq!(
        me["preferences"]["mandatory_categories"],
        json!(["security"])
    );

    // Contacts: replaced as a whole, normalised.
    let (status, c) = call(
        &stack,
        Method::PUT,
        "/v1/me/contacts",
        &lea,
        Some(json!({ "email": "Lea@Example.ORG", "phone": "+49 30 1234567" })),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        c,
        json!({ "email": "Lea@example.org", "phone": "+49301234567", "telegram_chat_id": null })
    );
    let (status, p) = call(
        &stack,
        Method::PUT,
        "/v1/me/contacts",
        &lea,
        Some(json!({ "email": "nope", "phone": "030 1234567" })),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(field(&p), ["email", "phone"]);

    // Preferences.
    let prefs = json!({
        "channels": { "sms": false },
        "categories": { "marketing": { "email": false } },
        "quiet_hours": { "start": "22:00", "end": "07:00", "timezone": "Europe/Berlin" },
        "locale": "de-DE"
    });
    let (status, p) = call(&stack, Method::PUT, "/v1/me/preferences", &lea, Some(prefs)).await;
    assert_eq!(status, 200, "{p}");
    let (_, p) = call(&stack, Method::GET, "/v1/me/preferences", &lea, None).await;
    assert_eq!(p["channels"], json!({ "sms": false }));
    assert_eq!(p["categories"]["marketing"]["email"], false);
    assert_eq!(p["quiet_hours"]["timezone"], "Europe/Berlin");
    assert_eq!(p["locale"], "de-DE");
    let bad = json!({
        "channels": { "pigeon": true },
        "quiet_hours": { "start": "25:00", "end": "07:00", "timezone": "Mars/Olympus" }
    });
    let (status, p) = call(&stack, Method::PUT, "/v1/me/preferences", &lea, Some(bad)).await;
    assert_eq!(status, 422);
    assert_eq!(p["type"], "validation_failed");
    assert_eq!(
        field(&p),
        [
            "channels.pigeon",
            "quiet_hours.start",
            "quiet_hours.timezone"
        ]
    );
    let (_, unchanged) = call(&stack, Method::GET, "/v1/me/preferences", &lea, None).await;
    assert_eq!(
        unchanged["quiet_hours"]["start"], "22:00",
        "a rejected update changes nothing"
    );

    // Devices: add, duplicate, list, remove.
    let device = json!({ "platform": "fcm", "token": "fcm-token-1" });
    let (status, d) = call(
        &stack,
        Method::POST,
        "/v1/me/devices",
        &lea,
        Some(device.clone()),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    let (status, again) = call(&stack, Method::POST, "/v1/me/devices", &lea, Some(device)).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &d["id"]),
        "registering the same token again is idempotent"
    );
    let (status, p) = call(
        &stack,
        Method::POST,
        "/v1/me/devices",
        &lea,
        Some(json!({ "platform": "blackberry", "token": "x" })),
    )
    .await;
    assert_eq!((status, field(&p)), (422, vec!["platform".to_owned()]));
    let (_, me) = call(&stack, Method::GET, "/v1/me", &lea, None).await;
    assert_eq!(me["devices"].as_array().unwrap().len(), 1);
    let path = format!("/v1/me/devices/{}", d["id"].as_str().unwrap());
    assert_eq!(call(&stack, Method::DELETE, &path, &lea, None).await.0, 204);
    assert_eq!(call(&stack, Method::DELETE, &path, &lea, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_never_reaches_another_users_data_and_roles_are_enforced() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let a = stack.register_user("a@example.com").await.unwrap();
    let b = stack.register_user("b@example.com").await.unwrap();
    let (ta, tb) = (
        stack.token(Role::User, &a.to_string()),
        stack.token(Role::User, &b.to_string()),
    );
    let (_, bd) = call(
        &stack,
        Method::POST,
        "/v1/me/devices",
        &tb,
        Some(json!({ "platform": "apns", "token": "b0f0e0" })),
    )
    .await;

    // A cannot delete B's device, and every read of A shows only A.
    let path = format!("/v1/me/devices/{}", bd["id"].as_str().unwrap());
    assert_eq!(call(&stack, Method::DELETE, &path, &ta, None).await.0, 404);
    assert_eq!(
        call(&stack, Method::GET, "/v1/me/devices", &tb, None)
            .await
            .1["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, me) = call(&stack, Method::GET, "/v1/me", &ta, None).await;
    assert_eq!(
        (me["user_id"].as_str(), me["contacts"]["email"].as_str()),
        (Some(a.to_string().as_str()), Some("a@example.com"))
    );
    assert_eq!(me["devices"], json!([]));
    // A's writes land on A (the body cannot name a user).
    let (status, _) = call(
        &stack,
        Method::PUT,
        "/v1/me/contacts",
        &ta,
        Some(json!({ "email": "a2@example.com", "user_id": b })),
    )
    .await;
    assert_eq!(status, 422, "unknown fields are refused");
    let (status, body) = call(
        &stack,
        Method::PUT,
        "/v1/me/contacts",
        &ta,
        Some(json!({ "email": "a2@example.com" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(&stack, Method::GET, "/v1/me", &ta, None).await.1["contacts"]["email"],
        "a2@example.com",
        "the write landed on A"
    );
    assert_eq!(
        call(&stack, Method::GET, "/v1/me", &tb, None).await.1["contacts"]["email"],
        "b@example.com",
        "and not on B"
    );
    // B's notifications are not in A's history.
    let svc = stack.token(Role::Service, "billing");
    let (status, _) = call(&stack, Method::POST, "/v1/notifications", &svc, Some(json!({ "recipients": [{ "user_id": b }], "category": "news", "content": { "text": "for b" } }))).await;
    assert_eq!(status, 202);
    let (_, ha) = call(&stack, Method::GET, "/v1/me/notifications", &ta, None).await;
    assert!(
        ha["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["category"] != "news"),
        "{ha}"
    );

    // Roles: services and admins have no /v1/me; users cannot send, read notifications or admin.
    for token in [&svc, &stack.token(Role::Admin, "ops")] {
        for (m, p) in [
            (Method::GET, "/v1/me"),
            (Method::GET, "/v1/me/preferences"),
            (Method::GET, "/v1/me/notifications"),
        ] {
            let (status, problem) = call(&stack, m, p, token, None).await;
            assert_eq!(
                (status, problem["type"].as_str()),
                (403, Some("forbidden")),
                "{p}"
            );
        }
    }
    let some_id = uuid::Uuid::new_v4();
    for (m, p) in [
        (Method::POST, "/v1/notifications".to_owned()),
        (Method::GET, format!("/v1/notifications/{some_id}")),
        (Method::GET, "/v1/admin/notifications".to_owned()),
        (Method::GET, "/v1/admin/stats".to_owned()),
        (Method::POST, "/v1/users".to_owned()),
    ] {
        let (status, _) = call(&stack, m.clone(), &p, &ta, Some(json!({}))).await;
        assert_eq!(status, 403, "{m} {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_the_users_own_newest_first_and_paginated() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let id = stack.register_user("hal@example.com").await.unwrap();
    let hal = stack.token(Role::User, &id.to_string());
    let svc = stack.token(Role::Service, "billing");
    // The welcome is written first.
    assert_eq!(
        stack.smtp.wait_for(1, Duration::from_secs(15)).await.len(),
        1
    );
    for i in 0..3 {
        let (status, _) = call(&stack, Method::POST, "/v1/notifications", &svc, Some(json!({ "recipients": [{ "user_id": id }], "category": format!("c{i}"), "content": { "text": "x" } }))).await;
        assert_eq!(status, 202);
    }
    // 3 + the welcome.
    let (status, page) = call(
        &stack,
        Method::GET,
        "/v1/me/notifications?limit=2",
        &hal,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let cats: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["category"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cats, ["c2", "c1"]);
    assert_eq!(page["items"][0]["deliveries"][0]["channel"], "email");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = call(
        &stack,
        Method::GET,
        &format!("/v1/me/notifications?limit=2&cursor={cursor}"),
        &hal,
        None,
    )
    .await;
    let cats: Vec<_> = next["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["category"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cats, ["c0", "welcome"]);
    assert!(next["next_cursor"].is_null());
    let (status, p) = call(
        &stack,
        Method::GET,
        "/v1/me/notifications?limit=0",
        &hal,
        None,
    )
    .await;
    assert_eq!((status, field(&p)), (422, vec!["limit".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_sends_the_welcome_email_once_even_when_the_event_comes_twice() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let id = stack.register_user("wes@example.com").await.unwrap();
    let mails = stack.smtp.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["wes@example.com".to_owned()]);
    assert!(mails[0].text().contains("Subject: Welcome!"));

    // Kafka delivers at least once: publish the same user.registered event again (a copy of
    // its outbox row, as a relay crash after the broker's ack would) and wait until
    // notification-service has consumed the copy.
    let copy: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (topic, key, payload, headers)
         SELECT topic, key, payload, headers FROM outbox
         WHERE payload ->> 'type' = 'user.registered' AND payload ->> 'user_id' = $1
         RETURNING id",
    )
    .bind(id.to_string())
    .fetch_one(&stack.users_pool)
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (partition, offset) = loop {
        let at: (Option<i32>, Option<i64>) =
            sqlx::query_as("SELECT kafka_partition, kafka_offset FROM outbox WHERE id = $1")
                .bind(copy)
                .fetch_one(&stack.users_pool)
                .await
                .unwrap();
        if let (Some(p), Some(o)) = at {
            break (p, o);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy was never published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stack
        .wait_consumed(
            "notification-service.events",
            common::events::EVENTS_TOPIC,
            partition,
            offset,
            Duration::from_secs(15),
        )
        .await
        .unwrap();

    let welcomes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications n JOIN deliveries d ON d.notification_id = n.id
         WHERE n.category = 'welcome' AND d.user_id = $1",
    )
    .bind(id)
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(welcomes, 1, "one welcome notification for the user");
    let view = stack
        .wait_settled(
            &notification_service::events::welcome_id(id).to_string(),
            &stack.token(Role::Admin, "ops"),
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(stack.smtp.mails().len(), 1, "one welcome email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preference_change_evicts_the_cached_profile_so_the_next_send_obeys_it() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let id = stack.register_user("cy@example.com").await.unwrap();
    // The welcome flow reads (and caches) the profile too; let it finish first so it cannot
    // re-cache behind the eviction this test waits for.
    assert_eq!(
        stack.smtp.wait_for(1, Duration::from_secs(15)).await.len(),
        1
    );
    let cy = stack.token(Role::User, &id.to_string());
    let svc = stack.token(Role::Service, "billing");
    let send = || async {
        let (status, body) = call(&stack, Method::POST, "/v1/notifications", &svc, Some(json!({ "recipients": [{ "user_id": id }], "category": "promo", "content": { "text": "x" } }))).await;
        assert_eq!(status, 202, "{body}");
        (
            body["deliveries"][0]["status"].as_str().unwrap().to_owned(),
            body["deliveries"][0]["reason"].clone(),
        )
    };
    assert_eq!(send().await.0, "queued");
    let key = stack.redis.key(&format!("profile:{id}"));
    let mut redis = common::redis::connect(&stack.redis).await.unwrap();
    let cached: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(cached, "the profile was cached by the first send");

    let (status, _) = call(
        &stack,
        Method::PUT,
        "/v1/me/preferences",
        &cy,
        Some(json!({ "categories": { "promo": { "email": false } } })),
    )
    .await;
    assert_eq!(status, 200);
    // preferences.updated travels users outbox → Kafka → notification-service, which evicts.
    stack
        .wait_profile_evicted(id, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(send().await, ("suppressed".to_owned(), json!("opted_out")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_has_at_most_twenty_devices() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let id = stack.register_user("many@example.com").await.unwrap();
    let me = stack.token(Role::User, &id.to_string());
    let add = |token: String| {
        let (stack, me) = (&stack, me.clone());
        async move {
            call(
                stack,
                Method::POST,
                "/v1/me/devices",
                &me,
                Some(json!({ "platform": "fcm", "token": token })),
            )
            .await
        }
    };
    let mut first = None;
    for i in 0..20 {
        let (status, d) = add(format!("t{i}")).await;
        assert_eq!(status, 201, "device {i}: {d}");
        first.get_or_insert(d["id"].as_str().unwrap().to_owned());
    }
    let (status, problem) = add("t20".into()).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("too_many_devices")),
        "{problem}"
    );
    // Registering one it has is still fine; after removing one there is room again.
    assert_eq!(add("t3".into()).await.0, 200);
    let path = format!("/v1/me/devices/{}", first.unwrap());
    assert_eq!(call(&stack, Method::DELETE, &path, &me, None).await.0, 204);
    assert_eq!(add("t20".into()).await.0, 201);
    let (_, list) = call(&stack, Method::GET, "/v1/me/devices", &me, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
}
