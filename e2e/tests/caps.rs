//! Frequency caps end to end (decision 0030): admins cap a category; concurrent sends through
//! two bff let exactly the limit through and hold the rest back as `suppressed` / `throttled`
//! (visible in the notification, the user's history and the admin stats); the count survives
//! a restart of notification-service; a send's own cap is stricter; urgent sends are exempt;
//! bad rules are refused.

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

async fn send_via(stack: &Stack, i: usize, token: &str, body: &Value) -> Value {
    let resp = stack
        .http
        .post(format!("http://{}/v1/notifications", stack.bffs[i].addr))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    resp.json().await.unwrap()
}

fn outcome(view: &Value) -> (String, Option<String>) {
    let d = &view["deliveries"][0];
    (
        d["status"].as_str().unwrap_or_default().to_owned(),
        d["reason"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_let_exactly_the_limit_through_across_two_bff_and_a_restart() {
    let mut stack = Stack::start(Options {
        welcome: false,
        bff_instances: 2,
        // The binary's default grant, plus `priority: high` (the urgent exemption is tested).
        notification_service_process: Some(vec![(
            "NOTIFY_PERMISSIONS__DEFAULT__HIGH_PRIORITY".into(),
            "true".into(),
        )]),
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let user = stack.register_user("pat@example.com").await.unwrap();

    // Bad rules are refused and change nothing.
    for (body, field) in [
        (
            json!({ "cap": { "limit": 0, "window": "1h" } }),
            "cap.limit",
        ),
        (
            json!({ "cap": { "limit": 3, "window": "32d" } }),
            "cap.window",
        ),
        (json!({ "digest_window": "0s" }), "digest_window"),
    ] {
        let (status, problem) = stack
            .call(
                Method::PUT,
                "/v1/admin/categories/promo",
                Some(&admin),
                Some(body),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{problem}");
        assert!(problem.to_string().contains(field), "{field}: {problem}");
    }
    let (status, _) = stack
        .call(
            Method::PUT,
            "/v1/admin/categories/promo",
            Some(&stack.token(Role::Service, "shop")),
            Some(json!({ "cap": { "limit": 3, "window": "1h" } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "a service cannot set rules");
    let (status, rules) = stack
        .call(
            Method::PUT,
            "/v1/admin/categories/promo",
            Some(&admin),
            Some(json!({ "cap": { "limit": 3, "window": "1h" } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["cap"], json!({ "limit": 3, "window": "1h" }));

    // Ten at once through both bff: three go out, seven are held back.
    let svc = stack.token(Role::Service, "shop");
    let promo = |i: usize| {
        json!({ "recipients": [{ "user_id": user }], "category": "promo",
                "content": { "text": format!("Offer {i}") } })
    };
    let views = futures::future::join_all((0..10).map(|i| {
        let (stack, svc, body) = (&stack, &svc, promo(i));
        async move { send_via(stack, i % 2, svc, &body).await }
    }))
    .await;
    let outcomes: Vec<(String, Option<String>)> = views.iter().map(outcome).collect();
    let sent = outcomes.iter().filter(|(s, _)| s == "queued").count();
    let throttled = outcomes
        .iter()
        .filter(|o| **o == ("suppressed".to_owned(), Some("throttled".to_owned())))
        .count();
    assert_eq!((sent, throttled), (3, 7), "{outcomes:?}");

    // The count is in Postgres: a restarted instance holds the line.
    stack.kill_notification_service();
    stack.start_notification_service().await.unwrap();
    let again = send_via(&stack, 1, &svc, &promo(10)).await;
    assert_eq!(
        outcome(&again),
        ("suppressed".into(), Some("throttled".into()))
    );
    // Urgent sends are exempt.
    let mut urgent = promo(11);
    urgent["priority"] = json!("high");
    assert_eq!(
        outcome(&send_via(&stack, 0, &svc, &urgent).await).0,
        "queued"
    );

    // A send's own cap is stricter: one `news` an hour for this sender's sends that ask so.
    let news = |cap: bool| {
        let mut b = json!({ "recipients": [{ "user_id": user }], "category": "news",
                            "content": { "text": "News" } });
        if cap {
            b["cap"] = json!({ "limit": 1, "window": "1h" });
        }
        b
    };
    assert_eq!(
        outcome(&send_via(&stack, 0, &svc, &news(true)).await).0,
        "queued"
    );
    assert_eq!(
        outcome(&send_via(&stack, 1, &svc, &news(true)).await),
        ("suppressed".into(), Some("throttled".into()))
    );
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(
                json!({ "recipients": [{ "user_id": user }], "category": "news",
                         "content": { "text": "x" }, "cap": { "limit": 0, "window": "1h" } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{problem}");

    // Visible: the user's history says why, the admin stats count it, the rules are listed.
    let (_, history) = stack
        .call(
            Method::GET,
            "/v1/me/notifications?limit=100",
            Some(&stack.token(Role::User, &user.to_string())),
            None,
        )
        .await
        .unwrap();
    let reasons = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["deliveries"].as_array().unwrap())
        .filter(|d| d["reason"] == "throttled")
        .count();
    assert_eq!(reasons, 9, "{history}");
    let (_, stats) = stack
        .call(Method::GET, "/v1/admin/stats", Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(stats["suppressed"]["throttled"], json!(9), "{stats}");
    let (_, listed) = stack
        .call(Method::GET, "/v1/admin/categories", Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(listed["categories"][0]["category"], "promo", "{listed}");
    // Removing the rule lifts the cap.
    let (status, _) = stack
        .call(
            Method::DELETE,
            "/v1/admin/categories/promo",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(
        outcome(&send_via(&stack, 0, &svc, &promo(12)).await).0,
        "queued"
    );
}
