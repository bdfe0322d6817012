//! Digests end to end (decision 0030): sends with the same key to the same recipient and
//! channel inside a window become exactly one delivery — under concurrent sends through two
//! bff, idempotent retries, and a SIGKILL of notification-service while items fold and while
//! the window closes; the template's digest form (422 without one) and the built-in form;
//! quiet hours holding a digest; urgent sends never digested; history linking each folded
//! notification to the digest that carried it.
//!
//! Windows are opened with long durations and made due by the test (the close step's outbox
//! row and the window's end moved to now): the test waits for states, never for a window to
//! pass — except `a_short_window_closes_on_its_own`, which waits for a 1 s window's close.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Makes every open window due now: its end, and its close step in the outbox.
async fn end_windows(stack: &Stack) {
    sqlx::query("UPDATE digests SET closes_at = now() WHERE state = 'open'")
        .execute(&stack.notify_pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET available_at = now()
         WHERE published_at IS NULL AND key IN (SELECT id::text FROM digests)",
    )
    .execute(&stack.notify_pool)
    .await
    .unwrap();
}

/// Waits until `n` digests are closed (or failed); panics after `timeout`.
async fn wait_closed(stack: &Stack, n: i64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done = stack
            .notify_count("SELECT count(*) FROM digests WHERE state IN ('closed', 'failed')")
            .await;
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {n} digests closed within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the SMTP sink holds `n` messages to `to`.
async fn wait_mails(stack: &Stack, to: &str, n: usize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = mails_to(stack, to);
        if got >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} of {n} mails to {to} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mails_to(stack: &Stack, to: &str) -> usize {
    stack
        .smtp
        .mails()
        .iter()
        .filter(|m| m.to.iter().any(|t| t.contains(to)))
        .count()
}

/// `POST /v1/notifications` to bff `i` directly (not through nginx).
async fn send_via(
    stack: &Stack,
    i: usize,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = stack
        .http
        .post(format!("http://{}/v1/notifications", stack.bffs[i].addr))
        .bearer_auth(token)
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn admin_get(stack: &Stack, path: &str) -> Value {
    let (status, body) = stack
        .call(
            Method::GET,
            path,
            Some(&stack.token(Role::Admin, "ops")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The one digest of the stack (its row id), asserting there is exactly one.
async fn only_digest(stack: &Stack) -> Uuid {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM digests")
        .fetch_all(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "digests: {ids:?}");
    ids[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_and_retries_through_two_bff_fold_into_exactly_one_digest() {
    let stack = Stack::start(Options {
        welcome: false,
        bff_instances: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let user = stack.register_user("lea@example.com").await.unwrap();
    let svc = stack.token(Role::Service, "social");
    let body = |i: usize| {
        json!({
            "recipients": [{ "user_id": user }],
            "category": "comments",
            "content": { "subject": format!("Comment {i}"), "text": format!("Text of comment {i}") },
            "digest": { "key": "post-42", "window": "1h" },
        })
    };
    // 30 sends at once, alternating the two bff; the first 5 are sent again with the same
    // Idempotency-Key (a client's retry) at the same time.
    const N: usize = 30;
    let sends = (0..N).map(|i| {
        let (stack, svc, body) = (&stack, &svc, body(i));
        async move {
            let key = format!("comment-{i}");
            let first = send_via(stack, i % 2, svc, Some(&key), &body);
            if i < 5 {
                let (a, b) =
                    tokio::join!(first, send_via(stack, (i + 1) % 2, svc, Some(&key), &body));
                vec![a, b]
            } else {
                vec![first.await]
            }
        }
    });
    let answers: Vec<(u16, Value)> = futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect();
    // A retry racing its first request may be told to come back (409 in flight); then it does.
    for (status, body) in &answers {
        assert!(
            [200, 202, 409].contains(status),
            "a send answered {status}: {body}"
        );
    }
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), N, "one notification per key");
    for view in &accepted {
        assert_eq!(view["deliveries"][0]["status"], "digested", "{view}");
    }

    // One open window holding every notification once.
    let digest = only_digest(&stack).await;
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM deliveries WHERE status = 'digested'")
            .await,
        N as i64
    );
    let open = admin_get(&stack, &format!("/v1/admin/digests/{digest}")).await;
    assert_eq!(
        (&open["state"], &open["items"]),
        (&json!("open"), &json!(N)),
        "{open}"
    );
    assert_eq!(
        mails_to(&stack, "lea@example.com"),
        0,
        "nothing sent before the window ends"
    );

    // An urgent category is never digested; `priority: high` with a digest is refused.
    let urgent = stack
        .send(
            &svc,
            json!({ "recipients": [{ "user_id": user }], "category": "security",
                    "content": { "text": "New sign-in" }, "digest": { "key": "post-42", "window": "1h" } }),
        )
        .await
        .unwrap();
    assert_eq!(urgent["deliveries"][0]["status"], "queued", "{urgent}");
    let (status, problem) = send_via(
        &stack,
        0,
        &svc,
        None,
        &json!({ "recipients": [{ "user_id": user }], "category": "comments", "priority": "high",
                 "content": { "text": "x" }, "digest": { "key": "k", "window": "1h" } }),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("digest"), "{problem}");

    // The window ends: one message, listing every item in the order they came, with the count.
    end_windows(&stack).await;
    wait_closed(&stack, 1, Duration::from_secs(30)).await;
    // The urgent one and the digest: two mails, never more.
    wait_mails(&stack, "lea@example.com", 2, Duration::from_secs(30)).await;
    let closed = admin_get(&stack, &format!("/v1/admin/digests/{digest}")).await;
    assert_eq!(
        (&closed["state"], &closed["items"]),
        (&json!("closed"), &json!(N)),
        "{closed}"
    );
    let folded = closed["folded"].as_array().unwrap();
    assert_eq!(folded.len(), N);
    let carrier = closed["notification_id"].as_str().unwrap().to_owned();
    let text: String =
        sqlx::query_scalar("SELECT content->>'text' FROM notifications WHERE id = $1::uuid")
            .bind(&carrier)
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert!(text.starts_with(&format!("{N} notifications:")), "{text}");
    let mut at = 0;
    for f in folded {
        let subject = f["summary"].as_str().unwrap();
        let found = text[at..]
            .find(subject)
            .unwrap_or_else(|| panic!("{subject} missing or out of order in {text}"));
        at += found + subject.len();
    }
    assert!(text.contains("Text of comment 7"), "{text}");

    // History: the carrier is a notification of the sending service that says what it folded;
    // each folded notification's delivery is `digested` and links to it.
    let (status, carried) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{carrier}"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{carried}");
    assert_eq!(carried["digest"]["items"], json!(N), "{carried}");
    assert_eq!(carried["digest"]["key"], "post-42");
    let one = accepted[3]["id"].as_str().unwrap();
    let (_, view) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{one}"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    let d = &view["deliveries"][0];
    assert_eq!(d["status"], "digested", "{view}");
    assert_eq!(d["digest"]["id"], json!(digest), "{view}");
    assert_eq!(d["digest"]["notification_id"], json!(carrier), "{view}");
    assert_eq!(view["status"], "completed", "{view}");
    // The user's own history says it was digested.
    let (_, history) = stack
        .call(
            Method::GET,
            "/v1/me/notifications",
            Some(&stack.token(Role::User, &user.to_string())),
            None,
        )
        .await
        .unwrap();
    let statuses: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["deliveries"].as_array().unwrap())
        .filter_map(|d| d["status"].as_str())
        .collect();
    assert!(statuses.contains(&"digested"), "{history}");

    // A send after the close opens a new window; nothing joins the closed one.
    stack.send(&svc, body(99)).await.unwrap();
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM digests WHERE state = 'open'")
            .await,
        1
    );
    assert_eq!(
        stack
            .notify_count(&format!(
                "SELECT items::bigint FROM digests WHERE id = '{digest}'::uuid"
            ))
            .await,
        N as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_while_sends_fold_and_while_the_window_closes_sends_one_digest() {
    let mut stack = Stack::start(Options {
        welcome: false,
        bff_instances: 2,
        // Claims of the killed requests are taken over after 2 s instead of a minute.
        notification_service_process: Some(vec![(
            "NOTIFY_INTAKE__ABANDONED_CLAIM_SECS".into(),
            "2".into(),
        )]),
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "social");
    let send = |i: usize| {
        json!({
            "recipients": [{ "email": "kai@example.com" }],
            "category": "comments",
            "content": { "subject": format!("Item {i}"), "text": format!("item {i}") },
            "digest": { "key": "feed", "window": "1h" },
        })
    };
    // Sends in flight when notification-service is killed: each is either answered 202 (then
    // folded) or not (the client retries with its key, as a client does after a 502/503).
    let round = |stack: &Stack, range: std::ops::Range<usize>| {
        let tasks: Vec<_> = range
            .map(|i| {
                let http = stack.http.clone();
                let url = format!("http://{}/v1/notifications", stack.bffs[i % 2].addr);
                let (svc, body) = (svc.clone(), send(i));
                tokio::spawn(async move {
                    let resp = http
                        .post(url)
                        .bearer_auth(svc)
                        .header("Idempotency-Key", format!("item-{i}"))
                        .json(&body)
                        .send()
                        .await;
                    (i, resp.map(|r| r.status().as_u16()).unwrap_or(0))
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let mut accepted = std::collections::BTreeSet::new();
    for (i, status) in round(&stack, 0..10).await {
        assert_eq!(status, 202);
        accepted.insert(i);
    }
    let in_flight = round(&stack, 10..20);
    tokio::time::sleep(Duration::from_millis(15)).await;
    stack.kill_notification_service();
    for (i, status) in in_flight.await {
        if status == 202 {
            accepted.insert(i);
        }
    }
    stack.start_notification_service().await.unwrap();
    // Every send is retried with its key (answered before: the same answer again); one whose
    // request died holding its key is refused `idempotency_in_flight` (409) until the claim
    // is abandoned (2 s), and retried again, as a client does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answers = round(&stack, 10..20).await;
        for (i, status) in &answers {
            assert!([200, 202, 409].contains(status), "item {i}: {status}");
            if *status != 409 {
                accepted.insert(*i);
            }
        }
        if answers.iter().all(|(_, s)| *s != 409) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "claims still in flight after 30 s: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(accepted.len(), 20);
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM deliveries WHERE status = 'digested'")
            .await,
        20,
        "each notification folded once"
    );
    let digest = only_digest(&stack).await;

    // The window ends and notification-service is killed as the close is handled (the
    // first step committed or not), then started again: one digest, one mail.
    end_windows(&stack).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stack
        .notify_count("SELECT count(*) FROM digests WHERE state = 'open'")
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the close never began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stack.kill_notification_service();
    stack.start_notification_service().await.unwrap();
    wait_closed(&stack, 1, Duration::from_secs(60)).await;
    wait_mails(&stack, "kai@example.com", 1, Duration::from_secs(30)).await;
    let view = admin_get(&stack, &format!("/v1/admin/digests/{digest}")).await;
    assert_eq!(
        (&view["state"], &view["items"]),
        (&json!("closed"), &json!(20)),
        "{view}"
    );
    assert_eq!(
        stack
            .notify_count(&format!(
                "SELECT count(*) FROM digests WHERE notification_id IS NOT NULL AND id = '{digest}'::uuid"
            ))
            .await,
        1
    );
    // Handled again (a redelivered close): nothing more.
    let again = notification_service::db::digests::begin_close(&stack.notify_pool, digest)
        .await
        .unwrap();
    assert!(
        again.is_none(),
        "a closed digest began to close again: {again:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mails_to(&stack, "kai@example.com"),
        1,
        "exactly one digest mail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_their_digest_form_and_one_without_is_refused() {
    let stack = Stack::start(Options {
        welcome: false,
        bff_instances: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let svc = stack.token(Role::Service, "shop");
    let put = |name: &str, body: Value| {
        let (stack, admin, name) = (&stack, admin.clone(), name.to_owned());
        async move {
            let (status, body) = stack
                .call(
                    Method::PUT,
                    &format!("/v1/admin/templates/{name}"),
                    Some(&admin),
                    Some(body),
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
        }
    };
    put(
        "order-plain",
        json!({ "locales": { "en": { "subject": "Order {{ n }}", "text": "Order {{ n }} shipped" } } }),
    )
    .await;
    put(
        "order",
        json!({ "locales": {
            "en": { "subject": "Order {{ n }}", "text": "Order {{ n }} shipped",
                    "digest": { "subject": "{{ count }} orders shipped",
                                "text": "{% for i in items %}[{{ i.data.n }}]{% endfor %} first={{ first.data.n }} last={{ last.data.n }}" } },
            "de": { "subject": "Bestellung {{ n }}", "text": "Bestellung {{ n }} versandt",
                    "digest": { "text": "{{ count }} Bestellungen" } } } }),
    )
    .await;

    // A template without a digest form: 422 naming `digest`, nothing written.
    let (status, problem) = send_via(
        &stack,
        0,
        &svc,
        None,
        &json!({ "recipients": [{ "email": "mo@example.com" }], "category": "orders",
                 "template": "order-plain", "data": { "n": 1 },
                 "digest": { "key": "orders", "window": "1h" } }),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("no digest form"), "{problem}");
    assert_eq!(stack.notify_count("SELECT count(*) FROM digests").await, 0);
    // Bad digest fields: 422 naming each.
    for (digest, field) in [
        (json!({ "key": "", "window": "1h" }), "digest.key"),
        (json!({ "key": "k", "window": "8d" }), "digest.window"),
        (json!({ "key": "k", "window": "10 m" }), "digest.window"),
    ] {
        let (status, problem) = send_via(
            &stack,
            1,
            &svc,
            None,
            &json!({ "recipients": [{ "email": "mo@example.com" }], "category": "orders",
                     "content": { "text": "x" }, "digest": digest }),
        )
        .await;
        assert_eq!(status, 422, "{problem}");
        assert!(problem.to_string().contains(field), "{field}: {problem}");
    }

    for n in 1..=3 {
        stack
            .send(
                &svc,
                json!({ "recipients": [{ "email": "mo@example.com" }], "category": "orders",
                        "template": "order", "data": { "n": n },
                        "digest": { "key": "orders", "window": "1h" } }),
            )
            .await
            .unwrap();
    }
    end_windows(&stack).await;
    wait_closed(&stack, 1, Duration::from_secs(30)).await;
    wait_mails(&stack, "mo@example.com", 1, Duration::from_secs(30)).await;
    let (subject, text): (Option<String>, String) = sqlx::query_as(
        "SELECT n.content->>'subject', n.content->>'text' FROM digests g
         JOIN notifications n ON n.id = g.notification_id",
    )
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(subject.as_deref(), Some("3 orders shipped"));
    assert_eq!(text, "[1][2][3] first=1 last=3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_a_digest_and_a_category_default_digests_sends_without_one() {
    let stack = Stack::start(Options {
        welcome: false,
        bff_instances: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let user = stack.register_user("ivy@example.com").await.unwrap();
    let user_token = stack.token(Role::User, &user.to_string());
    // Quiet now, for the next two hours (UTC).
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::minutes(5))
        .format("%H:%M")
        .to_string();
    let end = (now + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&user_token),
            Some(json!({ "quiet_hours": { "start": start, "end": end, "timezone": "UTC" } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    stack
        .wait_profile_evicted(user, Duration::from_secs(10))
        .await
        .unwrap();

    // Admins give `digestible` a default window; sends of it without `digest` are folded.
    let (status, rules) = stack
        .call(
            Method::PUT,
            "/v1/admin/categories/digestible",
            Some(&admin),
            Some(json!({ "digest_window": "2h" })),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, &rules["digest_window"]),
        (200, &json!("2h")),
        "{rules}"
    );
    let (status, _) = stack
        .call(
            Method::PUT,
            "/v1/admin/categories/digestible",
            Some(&admin),
            Some(json!({ "digest_window": "9d" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    let svc = stack.token(Role::Service, "social");
    for i in 0..2 {
        let view = stack
            .send(
                &svc,
                json!({ "recipients": [{ "user_id": user }], "category": "digestible",
                        "content": { "text": format!("news {i}") } }),
            )
            .await
            .unwrap();
        assert_eq!(view["deliveries"][0]["status"], "digested", "{view}");
    }
    // The user sees the rule in their preference center's source.
    let (status, mine) = stack
        .call(
            Method::GET,
            "/v1/me/delivery-rules",
            Some(&user_token),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{mine}");
    assert!(
        mine["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["category"] == "digestible" && c["digest_window"] == "2h"),
        "{mine}"
    );

    // The window ends inside quiet hours: the digest is planned and held until they end.
    end_windows(&stack).await;
    wait_closed(&stack, 1, Duration::from_secs(30)).await;
    let (status, next_at): (String, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT d.status, o.available_at FROM digests g
         JOIN deliveries d ON d.notification_id = g.notification_id
         LEFT JOIN outbox o ON o.key = g.user_id::text AND o.published_at IS NULL
              AND o.topic LIKE '%dispatch%'",
    )
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(status, "pending");
    let next_at = next_at.expect("its dispatch waits in the outbox");
    assert!(next_at > now + chrono::Duration::minutes(100), "{next_at}");
    assert_eq!(mails_to(&stack, "ivy@example.com"), 0);

    // Quiet hours end (the user clears them; the held dispatch comes due): it goes out.
    let (status, _) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&user_token),
            Some(json!({ "quiet_hours": null })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    stack
        .wait_profile_evicted(user, Duration::from_secs(10))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET available_at = now() WHERE published_at IS NULL
         AND topic LIKE '%dispatch%' AND key IN (SELECT user_id::text FROM digests)",
    )
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    wait_mails(&stack, "ivy@example.com", 1, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_window_closes_on_its_own() {
    let stack = Stack::start(Options {
        welcome: false,
        bff_instances: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "social");
    for i in 0..2 {
        stack
            .send(
                &svc,
                json!({ "recipients": [{ "email": "sol@example.com" }], "category": "comments",
                        "content": { "subject": format!("S{i}"), "text": format!("t{i}") },
                        "digest": { "key": "k", "window": "1s" } }),
            )
            .await
            .unwrap();
    }
    wait_closed(&stack, 1, Duration::from_secs(30)).await;
    wait_mails(&stack, "sol@example.com", 1, Duration::from_secs(30)).await;
    // Both sends may fall in one window or two (the second after the first closed): every
    // item is in exactly one digest either way.
    let items = stack
        .notify_count("SELECT coalesce(sum(items), 0)::bigint FROM digests")
        .await;
    assert_eq!(items, 2);
}
