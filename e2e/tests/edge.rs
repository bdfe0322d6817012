//! What the public edge refuses: authentication (401), authorisation (403) and bad input
//! (400/422) — every one a problem+json body, and nothing written.

use common::auth::{Claims, Role};
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

fn body() -> Value {
    json!({ "recipients": [{ "email": "a@example.com" }], "category": "news", "content": { "text": "hi" } })
}

async fn notification_count(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_and_a_user_token_cannot_send() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let send = |token: Option<String>| {
        let stack = &stack;
        async move {
            stack
                .call(
                    Method::POST,
                    "/v1/notifications",
                    token.as_deref(),
                    Some(body()),
                )
                .await
                .unwrap()
        }
    };

    let (status, problem) = send(None).await;
    assert_eq!(status, 401);
    assert_eq!(problem["type"], "unauthorized");
    assert!(problem["request_id"].is_string(), "{problem}");

    let other = common::auth::JwtConfig {
        secret: "not-the-deployment-secret-0123456789".to_owned().into(),
        ..stack.jwt.clone()
    };
    let forged = common::auth::mint_hs256(&other, "billing", Role::Service, 60).unwrap();
    let (status, problem) = send(Some(forged)).await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (401, Some("the token signature is invalid"))
    );

    let now = chrono::Utc::now().timestamp();
    let expired = Claims {
        sub: "billing".into(),
        role: Role::Service,
        exp: now - 120,
        iat: now - 600,
        nbf: None,
        iss: stack.jwt.issuer.clone(),
        aud: stack.jwt.audience.clone(),
    };
    let expired = common::auth::mint_claims(&stack.jwt, &expired).unwrap();
    let (status, problem) = send(Some(expired)).await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (401, Some("the token has expired"))
    );

    let claims = json!({ "sub": "billing", "role": "service", "exp": now + 60, "iat": now, "iss": stack.jwt.issuer, "aud": stack.jwt.audience });
    let none = e2e::alg_none_token(&claims);
    let (status, problem) = send(Some(none)).await;
    assert_eq!(status, 401, "{problem}");

    let (status, problem) = send(Some(stack.token(Role::User, "u-1"))).await;
    assert_eq!(status, 403);
    assert_eq!(problem["type"], "forbidden");

    assert_eq!(notification_count(&stack).await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_and_a_missing_or_bad_field_is_422_naming_it() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let token = stack.token(Role::Service, "billing");

    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"recipients": [{"email": "#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "malformed_json");

    let mut missing = body();
    missing.as_object_mut().unwrap().remove("category");
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&token),
            Some(missing),
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(problem["type"], "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "category", "{problem}");

    let mut bad = body();
    bad["recipients"][0]["email"] = json!("not-an-address");
    bad["channels"] = json!(["pigeon"]);
    let (status, problem) = stack
        .call(Method::POST, "/v1/notifications", Some(&token), Some(bad))
        .await
        .unwrap();
    assert_eq!(status, 422);
    let fields: Vec<_> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert!(fields.contains(&"channels[0]".to_owned()), "{problem}");
    // A structurally broken recipient is named too (an unusable address is not an error: it
    // is planned as a suppressed delivery, see intake.rs).
    let mut broken = body();
    broken["recipients"][0] = json!({ "device": { "platform": "blackberry", "token": "t" } });
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&token),
            Some(broken),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("recipients[0].device.platform")),
        "{problem}"
    );

    let mut empty = body();
    empty["recipients"] = json!([]);
    let (status, problem) = stack
        .call(Method::POST, "/v1/notifications", Some(&token), Some(empty))
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("recipients"))
    );

    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/users",
            Some(&token),
            Some(json!({ "email": "x@example.com", "timezone": "Mars/Base" })),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("timezone"))
    );

    let huge = json!({ "recipients": [{ "email": "a@example.com" }], "category": "news", "content": { "text": "x".repeat(300 * 1024) } });
    let (status, problem) = stack
        .call(Method::POST, "/v1/notifications", Some(&token), Some(huge))
        .await
        .unwrap();
    assert_eq!(
        (status, problem["type"].as_str()),
        (413, Some("payload_too_large"))
    );

    assert_eq!(notification_count(&stack).await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_a_4xx_problem_never_a_500() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let admin = stack.token(Role::Admin, "ops");
    let user = stack.register_user("nul@example.com").await.unwrap();
    let me = stack.token(Role::User, &user.to_string());

    // A NUL character (`\u0000`) anywhere a string goes: Postgres cannot store it, so it is a
    // 422 naming the field, not a 500.
    let mut nul_text = body();
    nul_text["content"]["text"] = json!("before\u{0}after");
    let mut nul_category = body();
    nul_category["category"] = json!("news\u{0}");
    let mut nul_key = body();
    nul_key["content"]["data"] = json!({ "na\u{0}me": "x" });
    for (path, token, value, field) in [
        ("/v1/notifications", &svc, nul_text, "content.text"),
        ("/v1/notifications", &svc, nul_category, "category"),
        ("/v1/notifications", &svc, nul_key, "content.data"),
        (
            "/v1/users",
            &svc,
            json!({ "email": "n\u{0}ul@example.com" }),
            "email",
        ),
    ] {
        let (status, problem) = stack
            .call(Method::POST, path, Some(token), Some(value))
            .await
            .unwrap();
        assert_eq!(
            (status, problem["type"].as_str()),
            (422, Some("validation_failed")),
            "{path}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, problem) = stack
        .call(
            Method::PUT,
            "/v1/me/contacts",
            Some(&me),
            Some(json!({ "email": "a\u{0}@example.com" })),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("email")),
        "{problem}"
    );
    // …and in a query string.
    for (path, token) in [
        ("/v1/admin/notifications?category=news%00", &admin),
        ("/v1/admin/dead-letters?error_code=x%00y", &admin),
        ("/v1/me/notifications?cursor=%00", &me),
    ] {
        let (status, problem) = stack
            .call(Method::GET, path, Some(token), None)
            .await
            .unwrap();
        assert!(
            (400..500).contains(&status) && problem["type"].is_string(),
            "{path}: {status} {problem}"
        );
    }

    // A method a route does not take: 405 problem+json naming the allowed ones.
    let resp = stack
        .http
        .delete(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "method_not_allowed", "{problem}");
    assert_eq!(notification_count(&stack).await, 0, "nothing was written");
}
