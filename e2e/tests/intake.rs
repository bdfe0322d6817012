//! Intake at its limits: a 1,000-recipient request with every kind of recipient plans exactly
//! the expected deliveries, and every validation error names its field and writes nothing.

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    User,
    OptedOut,
    NoEmail,
    Unknown,
    Raw,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_recipients_plan_exactly_the_expected_deliveries() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "crm");
    let mut recipients: Vec<(Kind, Value)> = Vec::new();
    for i in 0..150 {
        let id = stack
            .register_user(&format!("u{i}@Example.com"))
            .await
            .unwrap();
        let kind = if i % 3 == 0 {
            let token = stack.token(Role::User, &id.to_string());
            let prefs = json!({ "categories": { "promo": { "email": false } } });
            let (status, _) = stack
                .call(Method::PUT, "/v1/me/preferences", Some(&token), Some(prefs))
                .await
                .unwrap();
            assert_eq!(status, 200);
            Kind::OptedOut
        } else {
            Kind::User
        };
        recipients.push((kind, json!({ "user_id": id })));
    }
    for i in 0..50 {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/users",
                Some(&svc),
                Some(json!({ "phone": format!("+4930{:07}", 1_000_000 + i) })),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        recipients.push((Kind::NoEmail, json!({ "user_id": body["user_id"] })));
    }
    for _ in 0..100 {
        recipients.push((Kind::Unknown, json!({ "user_id": uuid::Uuid::new_v4() })));
    }
    for i in 0..700 {
        recipients.push((Kind::Raw, json!({ "email": format!("raw{i}@Example.ORG") })));
    }
    // Interleave the kinds deterministically.
    recipients.sort_by_key(|(k, r)| (r.to_string().len() * 7919 + *k as usize * 31) % 1009);
    assert_eq!(recipients.len(), 1000);

    // Scheduled an hour ahead so nothing is dispatched while we look.
    let send_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({
        "recipients": recipients.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        "category": "promo",
        "send_at": send_at,
        "content": { "subject": "Sale", "text": "50% off" }
    });
    // Nothing cached yet for these users, so every profile must come from users-service.
    let mut redis = common::redis::connect(&stack.redis).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(stack.redis.key("profile:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let lookups_before = stack
        .profile_lookups
        .load(std::sync::atomic::Ordering::SeqCst);
    let (status, view) = stack
        .call(Method::POST, "/v1/notifications", Some(&svc), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    assert_eq!(
        stack
            .profile_lookups
            .load(std::sync::atomic::Ordering::SeqCst)
            - lookups_before,
        1,
        "300 user recipients, one batched profile lookup"
    );
    // The answer is bounded: 100 deliveries inline, all of them counted, the rest paged.
    assert_eq!(view["deliveries"].as_array().unwrap().len(), 100);
    assert_eq!(
        view["delivery_counts"]["total"], 1000,
        "{}",
        view["delivery_counts"]
    );
    let by_status = &view["delivery_counts"]["by_status"];
    let pending = recipients
        .iter()
        .filter(|(k, _)| matches!(k, Kind::User | Kind::Raw))
        .count();
    assert_eq!(by_status["pending"], pending, "{by_status}");
    assert_eq!(by_status["suppressed"], 1000 - pending, "{by_status}");
    assert!(view["deliveries_next_cursor"].is_string(), "more to page");
    let deliveries = stack.all_deliveries(&svc, &view).await.unwrap();
    assert_eq!(deliveries.len(), 1000);
    for (i, ((kind, recipient), d)) in recipients.iter().zip(&deliveries).enumerate() {
        // Raw addresses are stored normalised (domain lower-cased).
        let expected_recipient = match recipient["email"].as_str() {
            Some(e) => json!({ "email": e.replace("@Example.ORG", "@example.org") }),
            None => recipient.clone(),
        };
        assert_eq!(
            d["recipient"], expected_recipient,
            "delivery {i} is recipient {i}"
        );
        let (status, reason) = (d["status"].as_str().unwrap(), d["reason"].as_str());
        let expected = match kind {
            Kind::User | Kind::Raw => ("pending", None),
            Kind::OptedOut => ("suppressed", Some("opted_out")),
            Kind::NoEmail => ("suppressed", Some("no_contact")),
            Kind::Unknown => ("suppressed", Some("unknown_user")),
        };
        assert_eq!((status, reason), expected, "delivery {i} ({kind:?}): {d}");
        if *kind == Kind::Raw {
            assert!(
                d["address"].as_str().unwrap().ends_with("@example.org"),
                "{d}"
            );
        }
        assert_eq!(d["lane"], "bulk");
    }

    assert_eq!(
        stack.notify_count("SELECT count(*) FROM deliveries").await,
        1000
    );
    assert_eq!(
        stack
            .notify_count(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND available_at > now()"
            )
            .await,
        800
    );
    // What was answered is what was stored.
    let (_, stored) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{}", view["id"].as_str().unwrap()),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    let summary = |ds: &[Value]| -> Vec<(Value, Value, Value)> {
        ds.iter()
            .map(|d| (d["id"].clone(), d["status"].clone(), d["reason"].clone()))
            .collect()
    };
    assert_eq!(stored["delivery_counts"], view["delivery_counts"]);
    let stored_deliveries = stack.all_deliveries(&svc, &stored).await.unwrap();
    assert_eq!(summary(&stored_deliveries), summary(&deliveries));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_error_names_its_field_and_writes_nothing() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let svc = stack.token(Role::Service, "crm");
    let base = || json!({ "recipients": [{ "email": "a@example.com" }], "category": "news", "content": { "text": "x" } });
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "email": format!("m{i}@example.com") }))
        .collect();
    let cases: Vec<(&str, Value)> = vec![
        ("recipients", {
            let mut b = base();
            b["recipients"] = json!([]);
            b
        }),
        ("recipients", {
            let mut b = base();
            b["recipients"] = json!(many);
            b
        }),
        ("send_at", {
            let mut b = base();
            b["send_at"] = json!("tomorrow");
            b
        }),
        ("channels[0]", {
            let mut b = base();
            b["channels"] = json!(["carrier-pigeon"]);
            b
        }),
        ("template", {
            let mut b = base();
            b.as_object_mut().unwrap().remove("content");
            b["template"] = json!("no-such-template");
            b
        }),
        ("recipients[0]", {
            let mut b = base();
            b["recipients"] =
                json!([{ "email": "a@example.com", "user_id": uuid::Uuid::new_v4() }]);
            b
        }),
        ("priority", {
            let mut b = base();
            b["priority"] = json!("urgent!");
            b
        }),
        ("ttl_seconds", {
            let mut b = base();
            b["ttl_seconds"] = json!(0);
            b
        }),
    ];
    for (field, body) in cases {
        let (status, problem) = stack
            .call(Method::POST, "/v1/notifications", Some(&svc), Some(body))
            .await
            .unwrap();
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["type"], "validation_failed");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field} not named in {problem}");
    }
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_kind_is_planned_on_its_channel_and_unusable_addresses_are_suppressed() {
    use common::events::Channel;
    let opts = Options {
        enabled_channels: vec![
            Channel::Email,
            Channel::Sms,
            Channel::Push,
            Channel::Webhook,
            Channel::Telegram,
        ],
        ..Options::default()
    };
    let stack = Stack::start(opts).await.unwrap();
    let svc = stack.token(Role::Service, "crm");
    let recipients = json!([
        { "email": "ok@Example.com" },
        { "email": "not-an-address" },
        { "phone": "+49 30 1234567" },
        { "phone": "12345" },
        { "device": { "platform": "fcm", "token": "tok-1" } },
        { "device": { "platform": "apns", "token": "has space" } },
        { "webhook": { "url": "https://hooks.example.com/notify" } },
        { "webhook": { "url": "ftp://nope" } },
        { "telegram": { "chat_id": 12345 } }
    ]);
    let body = json!({
        "recipients": recipients,
        "category": "ops",
        "send_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        "content": { "text": "x" }
    });
    let (status, view) = stack
        .call(Method::POST, "/v1/notifications", Some(&svc), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    let got: Vec<(String, String, Value, Value)> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
                d["reason"].clone(),
                d["address"].clone(),
            )
        })
        .collect();
    let row = |c: &str, s: &str, r: Value, a: Value| (c.to_owned(), s.to_owned(), r, a);
    assert_eq!(
        got,
        vec![
            row("email", "pending", Value::Null, json!("ok@example.com")),
            row("email", "suppressed", json!("invalid_address"), Value::Null),
            row("sms", "pending", Value::Null, json!("+49301234567")),
            row("sms", "suppressed", json!("invalid_address"), Value::Null),
            row("push", "pending", Value::Null, json!("fcm:tok-1")),
            row("push", "suppressed", json!("invalid_address"), Value::Null),
            row(
                "webhook",
                "pending",
                Value::Null,
                json!("https://hooks.example.com/notify")
            ),
            row(
                "webhook",
                "suppressed",
                json!("invalid_address"),
                Value::Null
            ),
            row("telegram", "pending", Value::Null, json!("12345")),
        ]
    );
    // Outbox rows go to each channel's topic.
    let topics: Vec<String> = sqlx::query_scalar("SELECT topic FROM outbox ORDER BY id")
        .fetch_all(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(
        topics,
        ["email", "sms", "push", "webhook", "telegram"]
            .map(|c| format!("notify.dispatch.{c}.bulk"))
            .to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_deployment_has_not_enabled_is_refused_never_silently_dropped() {
    // Only email is enabled (the default): everything that needs another channel is a 422
    // naming the field and saying why, and nothing is written.
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "crm");
    let user = stack.register_user("only-email@example.com").await.unwrap();
    let cases = [
        (
            "channels[0]",
            json!({ "recipients": [{ "user_id": user }], "category": "news",
                    "channels": ["sms"], "content": { "text": "x" } }),
        ),
        (
            "recipients[0]",
            json!({ "recipients": [{ "phone": "+49301234567" }], "category": "news",
                    "content": { "text": "x" } }),
        ),
        (
            "recipients[0]",
            json!({ "recipients": [{ "device": { "platform": "fcm", "token": "t" } }],
                    "category": "news", "content": { "text": "x" } }),
        ),
        (
            "recipients[1]",
            json!({ "recipients": [{ "email": "ok@example.com" }, { "telegram": { "chat_id": 42 } }],
                    "category": "news", "content": { "text": "x" } }),
        ),
        (
            "fallback[1]",
            json!({ "recipients": [{ "user_id": user }], "category": "news",
                    "fallback": ["email", "push"], "content": { "text": "x" } }),
        ),
    ];
    for (field, body) in cases {
        let (status, problem) = stack
            .call(Method::POST, "/v1/notifications", Some(&svc), Some(body))
            .await
            .unwrap();
        assert_eq!(
            (status, problem["type"].as_str()),
            (422, Some("validation_failed")),
            "{field}: {problem}"
        );
        let named = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["field"] == field)
            .unwrap_or_else(|| panic!("{field} not named in {problem}"));
        assert!(
            named["message"].as_str().unwrap().contains("not enabled"),
            "{problem}"
        );
    }
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        0
    );
    assert_eq!(stack.notify_count("SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_would_plan_too_much_content_is_refused() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let svc = stack.token(Role::Service, "crm");
    // ~240 kB per rendering from a small template and small data.
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/admin/templates/newsletter",
            Some(&admin),
            Some(json!({ "locales": { "en": {
                "text": "{% for i in range(900) %}{{ line }}{% endfor %}",
                "html": "{% for i in range(1500) %}<p>{{ line }}</p>{% endfor %}"
            } } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let request = |n: usize| {
        json!({ "recipients": (0..n).map(|i| json!({ "email": format!("r{i}@example.com") })).collect::<Vec<_>>(),
                "category": "news", "template": "newsletter", "data": { "line": "z".repeat(93) } })
    };
    // 1,000 × ~240 kB ≈ 240 MB: refused, naming the recipients, nothing written.
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(request(1000)),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "recipients", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 32 MB"),
        "{problem}"
    );
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        0
    );
    // 100 of them (~24 MB) are fine.
    let (status, view) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(request(100)),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    assert_eq!(
        stack.notify_count("SELECT count(*) FROM deliveries").await,
        100
    );
}

/// Every answer is bounded however many recipients a notification has: a list page carries
/// counts, not deliveries (before: 3 MB for one page over three 1,000-recipient
/// notifications), a notification carries its first 100 deliveries, and the rest come in
/// pages that add up to every delivery exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_views_of_big_notifications_stay_small() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let send_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let mut ids = Vec::new();
    for n in 0..3 {
        let recipients: Vec<Value> = (0..1000)
            .map(|i| json!({ "email": format!("n{n}-r{i}@example.org") }))
            .collect();
        let view = stack
            .send(
                &svc,
                json!({ "recipients": recipients, "category": "promo", "send_at": send_at,
                        "content": { "text": "50% off" } }),
            )
            .await
            .unwrap();
        ids.push(view["id"].as_str().unwrap().to_owned());
    }
    for (path, token) in [
        ("/v1/notifications?limit=200", &svc),
        (
            "/v1/admin/notifications?limit=200",
            &stack.token(Role::Admin, "ops"),
        ),
    ] {
        let resp = stack
            .http
            .get(format!("{}{path}", stack.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.len() < 8_000, "{path}: {} bytes", text.len());
        let page: Value = serde_json::from_str(&text).unwrap();
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{page}");
        for item in items {
            assert_eq!(item["delivery_counts"]["total"], 1000, "{item}");
            assert_eq!(
                item["delivery_counts"]["by_channel"]["email"]["pending"],
                1000
            );
            assert_eq!(item["status"], "scheduled");
            assert!(item.get("deliveries").is_none(), "{item}");
        }
    }
    let (status, view) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{}", ids[0]),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        view.to_string().len() < 100_000,
        "{} bytes",
        view.to_string().len()
    );
    assert_eq!(view["deliveries"].as_array().unwrap().len(), 100);
    let all = stack.all_deliveries(&svc, &view).await.unwrap();
    let distinct: std::collections::HashSet<&str> =
        all.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!((all.len(), distinct.len()), (1000, 1000));
    assert!(
        all.windows(2)
            .all(|w| w[0]["id"].as_str() < w[1]["id"].as_str()),
        "in id order"
    );

    // The list pages with its cursor: 2, then the last 1, newest first, none twice.
    let (_, first) = stack
        .call(Method::GET, "/v1/notifications?limit=2", Some(&svc), None)
        .await
        .unwrap();
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, second) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications?limit=2&cursor={cursor}"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert!(second.get("next_cursor").is_none(), "{second}");
    let paged: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(paged, newest_first);

    // Another service cannot page them; a bad cursor or limit is a 422 naming it.
    let (status, _) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{}/deliveries", ids[0]),
            Some(&stack.token(Role::Service, "someone-else")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    for (query, field) in [("cursor=nope", "cursor"), ("limit=501", "limit")] {
        let (status, problem) = stack
            .call(
                Method::GET,
                &format!("/v1/notifications/{}/deliveries?{query}", ids[0]),
                Some(&svc),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}
