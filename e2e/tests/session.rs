//! Browser sessions through nginx and two bff: a token exchanged for an `HttpOnly` cookie that
//! then carries the page's API calls, writes refused without the session's CSRF token and
//! changing nothing, sign-out, and a cookie never standing in for a role it does not have.

use bff::session::COOKIE;
use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::{Method, header};
use serde_json::{Value, json};

/// A request with only the session cookie (and `csrf`, when given).
async fn with_cookie(
    stack: &Stack,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = stack
        .http
        .request(method, format!("{}{path}", stack.url()))
        .header(header::COOKIE, format!("{COOKIE}={cookie}"));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_becomes_a_cookie_session_whose_writes_need_its_csrf_token() {
    let stack = Stack::start(Options {
        nginx: true,
        bff_instances: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let user = stack.register_user("cookie@example.com").await.unwrap();
    let token = stack.token(Role::User, &user.to_string());

    // The exchange: the cookie's attributes and the CSRF token.
    let resp = stack
        .http
        .post(format!("{}/session", stack.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let set = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set.starts_with(&format!("{COOKIE}={token};")), "{set}");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["sub"], user.to_string());
    assert_eq!(session["role"], "user");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();

    // Reads with the cookie alone; the session answers again after a reload.
    let (status, me) = with_cookie(&stack, Method::GET, "/v1/me", &token, None, None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], user.to_string(), "{me}");
    let (status, again) = with_cookie(&stack, Method::GET, "/session", &token, None, None).await;
    assert_eq!(
        (status, again["csrf_token"].as_str()),
        (200, Some(csrf.as_str()))
    );

    // A write without the CSRF token, or with another session's, is refused and changes
    // nothing; with it, it is carried out.
    let prefs = json!({ "channels": { "sms": false }, "categories": {}, "locale": "de-DE" });
    for bad in [None, Some("0123456789abcdef0123456789abcdef")] {
        let (status, problem) = with_cookie(
            &stack,
            Method::PUT,
            "/v1/me/preferences",
            &token,
            bad,
            Some(prefs.clone()),
        )
        .await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (403, Some("csrf_failed")),
            "{problem}"
        );
    }
    let (_, unchanged) = with_cookie(
        &stack,
        Method::GET,
        "/v1/me/preferences",
        &token,
        None,
        None,
    )
    .await;
    assert_ne!(unchanged["locale"], "de-DE", "{unchanged}");
    let (status, p) = with_cookie(
        &stack,
        Method::PUT,
        "/v1/me/preferences",
        &token,
        Some(&csrf),
        Some(prefs),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    let (_, changed) = with_cookie(
        &stack,
        Method::GET,
        "/v1/me/preferences",
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(changed["locale"], "de-DE", "{changed}");

    // The cookie is this user's and no more: no admin route, and an explicit token wins.
    let (status, _) = with_cookie(&stack, Method::GET, "/v1/admin/stats", &token, None, None).await;
    assert_eq!(status, 403);
    let other = stack.register_user("other@example.com").await.unwrap();
    let other_token = stack.token(Role::User, &other.to_string());
    let me: Value = stack
        .http
        .get(format!("{}/v1/me", stack.url()))
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], other.to_string());

    // A cookie that is not a valid token, and a bad token to exchange: 401, no cookie set.
    let (status, problem) = with_cookie(&stack, Method::GET, "/v1/me", "junk", None, None).await;
    assert_eq!(status, 401, "{problem}");
    let resp = stack
        .http
        .post(format!("{}/session", stack.url()))
        .bearer_auth("junk")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
    let (status, _) = stack
        .call(Method::GET, "/session", None, None)
        .await
        .unwrap();
    assert_eq!(status, 401);

    // Signing out expires the cookie.
    let resp = stack
        .http
        .delete(format!("{}/session", stack.url()))
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with(&format!("{COOKIE}=;")) && set.contains("Max-Age=0"),
        "{set}"
    );
}

/// A sign-in link must not silently replace the session a browser has (login CSRF: a link to
/// `/app#token=<attacker's token>` would put the victim in the attacker's account, where they
/// type their own phone number). The bff refuses the swap without the person's confirmation;
/// the same person's new token, or a session that no longer verifies, is replaced at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_not_swapped_for_someone_elses_without_confirmation() {
    let stack = Stack::start(Options {
        nginx: true,
        bff_instances: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let victim = stack.register_user("victim@example.com").await.unwrap();
    let victim_token = stack.token(Role::User, &victim.to_string());
    let attacker = stack.register_user("attacker@example.com").await.unwrap();
    let attacker_token = stack.token(Role::User, &attacker.to_string());
    let exchange = |cookie: Option<&str>, token: &str, confirm: bool| {
        let mut req = stack
            .http
            .post(format!("{}/session", stack.url()))
            .bearer_auth(token);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, format!("{COOKIE}={c}"));
        }
        if confirm {
            req = req.header("x-session-switch", "confirm");
        }
        async move { req.send().await.unwrap() }
    };

    let refused = exchange(Some(&victim_token), &attacker_token, false).await;
    assert_eq!(refused.status(), 409);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "session_switch", "{problem}");
    // The victim is still themself.
    let (_, session) =
        with_cookie(&stack, Method::GET, "/session", &victim_token, None, None).await;
    assert_eq!(session["sub"], victim.to_string());

    // Confirmed, the swap happens.
    let switched = exchange(Some(&victim_token), &attacker_token, true).await;
    assert_eq!(switched.status(), 200);
    let set = switched.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with(&format!("{COOKIE}={attacker_token};")),
        "{set}"
    );

    // The same person's fresh token, no session, or a dead one: no question asked.
    let fresh = stack.token(Role::User, &victim.to_string());
    assert_eq!(
        exchange(Some(&victim_token), &fresh, false).await.status(),
        200
    );
    assert_eq!(exchange(None, &attacker_token, false).await.status(), 200);
    assert_eq!(
        exchange(Some("junk"), &attacker_token, false)
            .await
            .status(),
        200
    );
    // The same subject with another role is someone else.
    let admin_named_like_victim = stack.token(Role::Admin, &victim.to_string());
    assert_eq!(
        exchange(Some(&victim_token), &admin_named_like_victim, false)
            .await
            .status(),
        409
    );
}
