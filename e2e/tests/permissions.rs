//! Who may do what: a service sends only the categories and priorities it is granted (403
//! naming the field otherwise), sees only the addresses it gave itself (no user's address in
//! a view, a filter that cannot confirm a guessed one, no provider text about a user's
//! delivery), and cannot read delivery profiles from users-service's internal API.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Service, Stack};
use notification_service::permissions::{Grant, PermissionsConfig};
use reqwest::Method;
use serde_json::{Value, json};

fn body(category: &str, priority: &str) -> Value {
    json!({ "recipients": [{ "email": "p@example.com" }], "category": category,
            "priority": priority, "content": { "text": "x" } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_send_only_what_they_are_granted() {
    let stack = Stack::start(Options {
        welcome: false,
        permissions: PermissionsConfig {
            privileged_categories: vec!["security".into(), "otp".into()],
            default: Grant::default(),
            services: [
                (
                    "billing".to_owned(),
                    Grant {
                        categories: vec!["billing".into()],
                        privileged: vec![],
                        high_priority: true,
                    },
                ),
                (
                    "auth".to_owned(),
                    Grant {
                        categories: vec!["*".into()],
                        privileged: vec!["otp".into(), "security".into()],
                        high_priority: true,
                    },
                ),
            ]
            .into(),
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let send = |subject: &'static str, category: &'static str, priority: &'static str| {
        let stack = &stack;
        async move {
            stack
                .call(
                    Method::POST,
                    "/v1/notifications",
                    Some(&stack.token(Role::Service, subject)),
                    Some(body(category, priority)),
                )
                .await
                .unwrap()
        }
    };
    let refused = |(status, problem): (u16, Value), field: &str| {
        assert_eq!(
            (status, problem["type"].as_str()),
            (403, Some("forbidden")),
            "{problem}"
        );
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field} not named: {problem}"
        );
    };
    // A service with the default grant: ordinary categories, normal or low priority.
    assert_eq!(send("shop", "news", "normal").await.0, 202);
    assert_eq!(send("shop", "news", "low").await.0, 202);
    refused(send("shop", "news", "high").await, "priority");
    refused(send("shop", "security", "normal").await, "category");
    refused(send("shop", "otp", "normal").await, "category");
    // Its own list only, high priority granted.
    assert_eq!(send("billing", "billing", "high").await.0, 202);
    refused(send("billing", "news", "normal").await, "category");
    refused(send("billing", "otp", "normal").await, "category");
    // Privileged categories, granted.
    assert_eq!(send("auth", "otp", "high").await.0, 202);
    assert_eq!(send("auth", "security", "normal").await.0, 202);

    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(written, 5, "refused requests write nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_sees_only_the_addresses_it_gave_and_no_profiles() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let user = stack.register_user("private@example.com").await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let view = stack
        .send(
            &svc,
            json!({ "recipients": [{ "user_id": user }, { "email": "given@example.com" }],
                    "category": "news", "content": { "text": "x" } }),
        )
        .await
        .unwrap();
    let addresses = |v: &Value| -> Vec<Value> {
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["address"].clone())
            .collect()
    };
    let expected_for_service = vec![Value::Null, json!("given@example.com")];
    assert_eq!(addresses(&view), expected_for_service, "{view}");
    let id = view["id"].as_str().unwrap();
    let (_, shown) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{id}"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(addresses(&shown), expected_for_service, "{shown}");
    let (_, to_admin) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{id}"),
            Some(&stack.token(Role::Admin, "ops")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        addresses(&to_admin),
        vec![json!("private@example.com"), json!("given@example.com")],
        "{to_admin}"
    );

    // A guessed address of a user is not confirmed by a filter: the service's search matches
    // only addresses it gave (before, `?recipient=<the right guess>` found the notification).
    let admin = stack.token(Role::Admin, "ops");
    let found = |token: &str, recipient: &str| {
        let path = format!("/v1/notifications?recipient={recipient}");
        let token = token.to_owned();
        let stack = &stack;
        async move {
            let (status, page) = stack
                .call(Method::GET, &path, Some(&token), None)
                .await
                .unwrap();
            assert_eq!(status, 200, "{page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(found(&svc, "private@example.com").await, 0);
    assert_eq!(found(&svc, "nobody@example.com").await, 0);
    assert_eq!(found(&svc, "given@example.com").await, 1);
    assert_eq!(found(&svc, &user.to_string()).await, 1);
    assert_eq!(found(&admin, "private@example.com").await, 1);

    // Providers echo the address in their text: a service sees the code, not the text, of a
    // delivery to a user (the provider's answer written as the repeater records one).
    stack
        .wait_settled(id, &svc, Duration::from_secs(30))
        .await
        .unwrap();
    let echo = "550 5.1.1 <private@example.com>: mailbox unavailable";
    sqlx::query(
        "UPDATE deliveries SET last_error = jsonb_build_object('code', 'rejected', 'message', $2::text)
         WHERE user_id = $1",
    )
    .bind(user)
    .bind(echo)
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO attempts (delivery_id, attempt, outcome, provider, error_code, error_message, duration_ms, at)
         SELECT id, 99, 'permanent_failure', 'smtp', 'rejected', $2, 5, now() FROM deliveries WHERE user_id = $1",
    )
    .bind(user)
    .bind(echo)
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    let (_, shown) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{id}"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    let (_, paged) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{id}/deliveries"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    for seen in [&shown, &paged] {
        assert!(!seen.to_string().contains("private@example.com"), "{seen}");
        assert!(seen.to_string().contains("rejected"), "{seen}");
    }
    let (_, to_admin) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{id}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert!(
        to_admin.to_string().contains(echo),
        "admins see the provider's text"
    );

    // users-service's internal profiles: notification-service only.
    let internal = format!(
        "http://{}/internal/v1/profiles/batch",
        stack.addr(Service::Users)
    );
    for (token, expected) in [
        (svc.clone(), 403),
        (stack.token(Role::Admin, "ops"), 403),
        (stack.token(Role::Service, "notification-service"), 200),
    ] {
        let resp = stack
            .http
            .post(&internal)
            .bearer_auth(token)
            .json(&json!({ "user_ids": [user] }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected);
    }
}
