//! Rate limits per principal across two bff instances (shared Redis), JWT refusals on an
//! RS256 deployment, and the OpenAPI document.

use common::auth::{Claims, JwtAlgorithm, JwtConfig, Role};
use e2e::{Options, Stack};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_two_bffs_and_only_for_that_principal() {
    let mut opts = Options {
        bff_instances: 2,
        ..Options::default()
    };
    opts.rate_limits.user = bff::config::Limit {
        requests: 5,
        period_secs: 60,
    };
    let stack = Stack::start(opts).await.unwrap();
    let a = stack.register_user("ra@example.com").await.unwrap();
    let b = stack.register_user("rb@example.com").await.unwrap();
    let (ta, tb) = (
        stack.token(Role::User, &a.to_string()),
        stack.token(Role::User, &b.to_string()),
    );

    let get = |i: usize, token: &str| {
        let url = format!("http://{}/v1/me/preferences", stack.bffs[i % 2].addr);
        stack.http.get(url).bearer_auth(token).send()
    };
    for i in 0..5 {
        assert_eq!(get(i, &ta).await.unwrap().status(), 200, "request {i}");
    }
    let limited = get(5, &ta).await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(problem["type"], "rate_limited");
    // The other instance agrees, and another user is unaffected.
    assert_eq!(get(6, &ta).await.unwrap().status(), 429);
    assert_eq!(get(0, &tb).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_admins_have_limits_of_their_own() {
    let mut opts = Options {
        welcome: false,
        ..Options::default()
    };
    opts.rate_limits.service = bff::config::Limit {
        requests: 3,
        period_secs: 60,
    };
    opts.rate_limits.admin = bff::config::Limit {
        requests: 2,
        period_secs: 60,
    };
    let stack = Stack::start(opts).await.unwrap();
    let call = |token: String, path: &'static str| {
        let stack = &stack;
        async move {
            let resp = stack
                .http
                .get(format!("{}{path}", stack.url()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (
                status,
                retry_after,
                body["type"].as_str().map(str::to_owned),
            )
        }
    };
    let some = "/v1/notifications/0190a6b4-0000-7000-8000-000000000000";
    let billing = stack.token(Role::Service, "billing");
    for i in 0..3 {
        assert_eq!(
            call(billing.clone(), some).await.0,
            404,
            "service request {i}"
        );
    }
    let (status, retry_after, kind) = call(billing.clone(), some).await;
    assert_eq!((status, kind.as_deref()), (429, Some("rate_limited")));
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s.parse::<u64>().unwrap())));
    // Another service has its own budget; an admin with the same subject too.
    assert_eq!(call(stack.token(Role::Service, "shop"), some).await.0, 404);
    let ops = stack.token(Role::Admin, "billing");
    for i in 0..2 {
        assert_eq!(
            call(ops.clone(), "/v1/admin/stats").await.0,
            200,
            "admin request {i}"
        );
    }
    let (status, retry_after, kind) = call(ops.clone(), "/v1/admin/stats").await;
    assert_eq!((status, kind.as_deref()), (429, Some("rate_limited")));
    assert!(retry_after.is_some());
    // The limited service is still limited; limits are not shared across roles.
    assert_eq!(call(billing, some).await.0, 429);
}

const RSA_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../tools/devkit/fixtures/rsa_public.pem");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_deployment_refuses_every_kind_of_bad_token() {
    let jwt = JwtConfig {
        algorithm: JwtAlgorithm::RS256,
        public_key_pem: Some(RSA_PUBLIC.into()),
        ..JwtConfig::default()
    };
    let stack = Stack::start(Options {
        jwt: jwt.clone(),
        signing_key_pem: Some(RSA_PRIVATE.into()),
        ..Options::default()
    })
    .await
    .unwrap();
    let id = stack.register_user("rs@example.com").await.unwrap();
    let good = stack.token(Role::User, &id.to_string());
    assert_eq!(
        stack
            .call(Method::GET, "/v1/me", Some(&good), None)
            .await
            .unwrap()
            .0,
        200
    );

    let now = chrono::Utc::now().timestamp();
    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            sub: id.to_string(),
            role: Role::User,
            exp: now + 600,
            iat: now,
            nbf: None,
            iss: jwt.issuer.clone(),
            aud: jwt.audience.clone(),
        };
        f(&mut c);
        c
    };
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(&|_| {}),
        &jsonwebtoken::EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    let none = e2e::alg_none_token(&claims(&|_| {}));
    let bad = [
        ("alg none", none),
        ("HS256 with the public key as secret", confused),
        ("expired", stack.sign(&claims(&|c| c.exp = now - 120))),
        (
            "not yet valid",
            stack.sign(&claims(&|c| c.nbf = Some(now + 300))),
        ),
        (
            "wrong aud",
            stack.sign(&claims(&|c| c.aud = "someone-else".into())),
        ),
        ("wrong iss", stack.sign(&claims(&|c| c.iss = "evil".into()))),
    ];
    for (what, token) in bad {
        let (status, problem) = stack
            .call(Method::GET, "/v1/me", Some(&token), None)
            .await
            .unwrap();
        assert_eq!(
            (status, problem["type"].as_str()),
            (401, Some("unauthorized")),
            "{what}: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_valid_3_1_and_lists_every_route() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let text = stack
        .http
        .get(format!("{}/openapi.json", stack.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let paths = spec.paths.expect("paths");
    let mut listed: Vec<String> = Vec::new();
    for (path, item) in &paths {
        for (method, op) in [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("delete", &item.delete),
        ] {
            if op.is_some() {
                listed.push(format!("{method} {path}"));
            }
        }
    }
    listed.sort();
    let mut expected = vec![
        "post /v1/notifications",
        "post /v1/notifications/batch",
        "get /v1/notifications",
        "get /v1/notifications/{id}",
        "get /v1/notifications/{id}/deliveries",
        "post /v1/notifications/{id}/cancel",
        "post /v1/users",
        "get /v1/me",
        "put /v1/me/contacts",
        "get /v1/me/preferences",
        "put /v1/me/preferences",
        "get /v1/me/devices",
        "post /v1/me/devices",
        "delete /v1/me/devices/{id}",
        "get /v1/me/notifications",
        "post /v1/me/telegram/link",
        "post /v1/telegram/webhook",
        "put /v1/admin/templates/{name}",
        "post /v1/admin/template-preview",
        "get /v1/admin/templates/{name}",
        "delete /v1/admin/templates/{name}",
        "get /v1/admin/notifications",
        "get /v1/admin/deliveries/{id}",
        "get /v1/admin/stats",
        "get /v1/admin/attempts",
        "get /v1/admin/dead-letters",
        "post /v1/admin/dead-letters/redrive",
        "post /v1/receipts/twilio",
        "post /v1/bounces",
        "get /v1/admin/suppressions",
        "delete /v1/admin/suppressions/{id}",
        "get /v1/admin/digests/{id}",
        "get /v1/admin/categories",
        "put /v1/admin/categories/{name}",
        "delete /v1/admin/categories/{name}",
        "get /v1/me/delivery-rules",
        "get /healthz",
        "get /readyz",
        "get /v1/admin/skipped-events",
        "put /v1/topics/{key}",
        "get /v1/topics/{key}",
        "put /v1/topics/{key}/subscribers",
        "delete /v1/topics/{key}/subscribers",
        "get /v1/me/topics",
        "put /v1/me/topics",
        "delete /v1/me/topics",
        "get /v1/me/inbox",
        "get /v1/me/inbox/counts",
        "get /v1/me/inbox/stream",
        "post /v1/me/inbox/read-all",
        "post /v1/me/inbox/seen-all",
        "post /v1/me/inbox/{id}/archive",
        "post /v1/me/inbox/{id}/click",
        "post /v1/me/inbox/{id}/read",
        "post /v1/me/inbox/{id}/seen",
        "get /v1/admin/topics",
    ];
    expected.sort();
    assert_eq!(listed, expected);
    // And every documented operation is served: past the bff and the service behind it, no
    // "no route matches" and no "this path does not take this method" (a list alone passes
    // for a route documented and never served).
    let admin = stack.token(Role::Admin, "ops");
    for op in &listed {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "0190a6b4-0000-7000-8000-000000000000")
            .replace("{name}", "no-such-template")
            .replace("{key}", "no.such.topic");
        let mut req = stack.http.request(
            method.to_uppercase().parse().unwrap(),
            format!("{}{path}", stack.url()),
        );
        req = req.bearer_auth(&admin);
        if method == "post" || method == "put" {
            req = req.json(&serde_json::json!({}));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let unserved =
            (status == 404 && body["detail"] == "no route matches this path") || status == 405;
        assert!(
            !unserved,
            "{op} is documented but not served: {status} {body}"
        );
    }
    let docs = stack
        .http
        .get(format!("{}/docs", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let html = docs.text().await.unwrap();
    assert!(html.contains("/openapi.json"), "{html}");
    assert!(
        !html.contains("https://"),
        "the page loads nothing from another origin: {html}"
    );
    // Redoc itself comes from the bff, at a content-hashed URL cached for a year.
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert!(script.starts_with("/assets/redoc.standalone."), "{script}");
    let js = stack
        .http
        .get(format!("{}{script}", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = js.headers()["etag"].clone();
    assert!(js.bytes().await.unwrap().len() > 500_000);
    let again = stack
        .http
        .get(format!("{}{script}", stack.url()))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = stack
        .http
        .get(format!("{}/assets/redoc.standalone.0000.js", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
}
