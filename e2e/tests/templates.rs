//! Templates: rendered per recipient locale with fallback, HTML-escaped data, refused at intake
//! when unknown or missing a variable, managed by admins only; the welcome uses one.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_per_locale_escape_html_and_fail_at_intake() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let svc = stack.token(Role::Service, "billing");
    let invoice = json!({ "locales": {
        "en": { "subject": "Invoice {{ number }}", "text": "Hello {{ name }}, invoice {{ number }} is ready.", "html": "<p>Hello {{ name }}</p>" },
        "de": { "subject": "Rechnung {{ number }}", "text": "Hallo {{ name }}, Rechnung {{ number }} ist da.", "html": "<p>Hallo {{ name }}</p>" }
    }});
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/admin/templates/invoice",
            Some(&admin),
            Some(invoice),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, got) = stack
        .call(
            Method::GET,
            "/v1/admin/templates/invoice",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, got["locales"]["de"]["subject"].as_str()),
        (200, Some("Rechnung {{ number }}"))
    );
    for token in [
        &svc,
        &stack.token(Role::User, &uuid::Uuid::new_v4().to_string()),
    ] {
        assert_eq!(
            stack
                .call(
                    Method::GET,
                    "/v1/admin/templates/invoice",
                    Some(token),
                    None
                )
                .await
                .unwrap()
                .0,
            403
        );
    }
    let broken = json!({ "locales": { "en": { "text": "Hello {{ name" } } });
    let (status, problem) = stack
        .call(
            Method::PUT,
            "/v1/admin/templates/broken",
            Some(&admin),
            Some(broken),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("locales.en")),
        "{problem}"
    );

    // Two users: de-AT (falls back to de) and fr (falls back to the default, en).
    let mut users = Vec::new();
    for (email, locale) in [("greta@example.com", "de-AT"), ("fleur@example.com", "fr")] {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/users",
                Some(&svc),
                Some(json!({ "email": email, "locale": locale })),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        users.push(body["user_id"].clone());
    }
    let welcomes = stack.smtp.wait_for(2, Duration::from_secs(15)).await;
    let greta_welcome = welcomes
        .iter()
        .find(|m| m.to[0] == "greta@example.com")
        .expect("greta's welcome")
        .text();
    assert!(
        greta_welcome.contains("Subject: Willkommen!"),
        "the welcome in German: {greta_welcome}"
    );

    let send = |data: serde_json::Value, template: &str| json!({ "recipients": [{ "user_id": users[0] }, { "user_id": users[1] }], "category": "billing", "template": template, "data": data });
    let (status, view) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(send(
                json!({ "name": "<b>Eve</b>", "number": 42 }),
                "invoice",
            )),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    let mails = stack.smtp.wait_for(4, Duration::from_secs(15)).await;
    let invoice_to = |to: &str| {
        mails
            .iter()
            .find(|m| {
                m.to[0] == to
                    && (m.text().contains("Subject: Rechnung")
                        || m.text().contains("Subject: Invoice"))
            })
            .map(|m| m.text())
            .unwrap_or_default()
    };
    let greta = invoice_to("greta@example.com");
    assert!(greta.contains("Subject: Rechnung 42"), "{greta}");
    assert!(
        greta.contains("Hallo <b>Eve</b>, Rechnung 42 ist da."),
        "text is not escaped: {greta}"
    );
    assert!(
        greta.contains("<p>Hallo &lt;b&gt;Eve&lt;&#x2f;b&gt;</p>"),
        "HTML escapes the data: {greta}"
    );
    let fleur = invoice_to("fleur@example.com");
    assert!(fleur.contains("Subject: Invoice 42"), "{fleur}");

    // A missing variable or an unknown template is a 422 at intake; nothing is written.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(send(json!({ "name": "Eve" }), "invoice")),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("data")),
        "{problem}"
    );
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("number"),
        "names the variable: {problem}"
    );
    let (status, problem) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(send(json!({}), "nope")),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("template")),
        "{problem}"
    );
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(before, after);

    assert_eq!(
        stack
            .call(
                Method::DELETE,
                "/v1/admin/templates/invoice",
                Some(&admin),
                None
            )
            .await
            .unwrap()
            .0,
        204
    );
    assert_eq!(
        stack
            .call(
                Method::GET,
                "/v1/admin/templates/invoice",
                Some(&admin),
                None
            )
            .await
            .unwrap()
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_runs_too_long_or_renders_too_much_is_refused_at_intake() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let svc = stack.token(Role::Service, "billing");
    for (name, text) in [
        // A million loop turns: stopped by the rendering's work limit.
        (
            "busy",
            "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        ),
        // 5 MB out of a few bytes of template and data.
        ("huge", "{% for i in range(50000) %}{{ line }}{% endfor %}"),
    ] {
        let (status, body) = stack
            .call(
                Method::PUT,
                &format!("/v1/admin/templates/{name}"),
                Some(&admin),
                Some(json!({ "locales": { "en": { "text": text } } })),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, problem) = stack
            .call(
                Method::POST,
                "/v1/notifications",
                Some(&svc),
                Some(
                    json!({ "recipients": [{ "email": "t@example.com" }], "category": "news",
                             "template": name, "data": { "line": "x".repeat(100) } }),
                ),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{name}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "template", "{problem}");
    }
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_renders_a_variant_as_intake_would_and_names_what_does_not_render() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let preview = |body: serde_json::Value| {
        let admin = admin.clone();
        let stack = &stack;
        async move {
            stack
                .call(
                    Method::POST,
                    "/v1/admin/template-preview",
                    Some(&admin),
                    Some(body),
                )
                .await
                .unwrap()
        }
    };
    let variant =
        json!({ "subject": "Order {{ n }}", "text": "Hi {{ name }}", "html": "<p>{{ name }}</p>" });
    let (status, out) =
        preview(json!({ "variant": variant, "data": { "n": 7, "name": "<b>Lea</b>" } })).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        json!({ "subject": "Order 7", "text": "Hi <b>Lea</b>", "html": "<p>&lt;b&gt;Lea&lt;&#x2f;b&gt;</p>" })
    );
    for (body, field) in [
        (json!({ "variant": variant, "data": { "n": 7 } }), "data"),
        (json!({ "variant": { "text": "Hi {{ name " } }), "variant"),
        (json!({ "variant": variant, "data": [1] }), "data"),
        (
            json!({ "variant": { "text": "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}" } }),
            "variant",
        ),
    ] {
        let (status, problem) = preview(body.clone()).await;
        assert_eq!(
            (status, problem["errors"][0]["field"].as_str()),
            (422, Some(field)),
            "{body}: {problem}"
        );
    }
    let svc = stack.token(Role::Service, "billing");
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/admin/template-preview",
            Some(&svc),
            Some(json!({ "variant": { "text": "x" } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
}

/// A welcome template that cannot render (it needs a variable a welcome never has) used to be
/// retried in place forever: eight such registrations held every slot of the events consumer
/// and fallback planning and profile-cache eviction stopped for everyone. Now each is recorded
/// (admins read why) and skipped, and the rest of `notify.events` flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_that_cannot_render_is_recorded_and_skipped_and_the_rest_flows() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let admin = stack.token(Role::Admin, "ops");
    let needs_order =
        json!({ "locales": { "en": { "subject": "Hi", "text": "Your order {{ order_id }}" } } });
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/admin/templates/welcome",
            Some(&admin),
            Some(needs_order),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // More broken welcomes than the consumer handles at once (8).
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(
            stack
                .register_user(&format!("w{i}@example.com"))
                .await
                .unwrap(),
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let skipped = loop {
        let (status, page) = stack
            .call(
                Method::GET,
                "/v1/admin/skipped-events?limit=50",
                Some(&admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= users.len() {
            break items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "welcomes not recorded as skipped: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(skipped.len(), users.len(), "each once: {skipped:?}");
    for item in &skipped {
        assert_eq!(item["event_type"], "user.registered", "{item}");
        let error = item["error"].as_str().unwrap();
        assert!(error.contains("welcome template"), "{error}");
        let user = item["key"].as_str().unwrap().parse::<uuid::Uuid>().unwrap();
        assert!(users.contains(&user), "{item}");
    }
    assert_eq!(stack.smtp.mails().len(), 0, "no welcome went out");
    stack
        .expect_metrics(&[(
            e2e::Service::Notifications,
            "notify_events_skipped_total{event=\"user.registered\"} 10",
        )])
        .await
        .unwrap();

    // The consumer is free: a preference change still evicts the cached profile.
    stack
        .send_settled(
            json!({ "recipients": [{ "user_id": users[0] }], "category": "news",
                              "content": { "text": "hello" } }),
        )
        .await
        .unwrap();
    let token = stack.token(Role::User, &users[0].to_string());
    let (status, _) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&token),
            Some(json!({ "channels": { "email": false }, "categories": {} })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    stack
        .wait_profile_evicted(users[0], Duration::from_secs(30))
        .await
        .unwrap();
}
