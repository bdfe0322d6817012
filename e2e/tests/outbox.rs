//! The outbox relay never stalls: a dispatch Kafka refuses (here: over the deployment's
//! `message.max.bytes`) ends `dead` with reason `undeliverable` — visible in the dead letters —
//! and the notifications behind it go out as if it were not there.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Service, Stack};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_kafka_refuses_is_dead_and_visible_and_holds_nothing_up() {
    let stack = Stack::start(Options {
        welcome: false,
        // Kafka takes at most 100 kB per message in this deployment.
        kafka_properties: [("message.max.bytes".to_owned(), "100000".to_owned())].into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    // 90 kB of text and 120 kB of HTML: within the API's limits, over Kafka's.
    let big = stack
        .send(
            &svc,
            json!({ "recipients": [{ "email": "big@example.com" }], "category": "report",
                    "content": { "subject": "Report", "text": "x".repeat(90_000),
                                "html": format!("<p>{}</p>", "y".repeat(120_000)) } }),
        )
        .await
        .unwrap();
    let mut small = Vec::new();
    for i in 0..5 {
        small.push(
            stack
                .send(
                    &svc,
                    json!({ "recipients": [{ "email": format!("s{i}@example.com") }],
                            "category": "report", "content": { "text": "small" } }),
                )
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &small {
        let view = stack
            .wait_settled(id, &svc, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    }
    let view = stack
        .wait_settled(big["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();
    let d = &view["deliveries"][0];
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("dead"), Some("undeliverable")),
        "{view}"
    );
    assert_eq!(d["last_error"]["code"], "undeliverable", "{view}");
    assert!(
        d["last_error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("size"),
        "{view}"
    );
    assert_eq!(d["attempts"], 0, "no worker ever saw it");

    // Visible where an admin looks, counted where an operator looks.
    let admin = stack.token(Role::Admin, "ops");
    let (status, dead) = stack
        .call(
            Method::GET,
            "/v1/admin/dead-letters?error_code=undeliverable",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{dead}");
    assert_eq!(dead["items"].as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead["items"][0]["id"], d["id"]);
    stack
        .expect_metrics(&[
            (
                Service::Notifications,
                "notify_outbox_rows_failed_total{topic=\"notify.dispatch.email.bulk\"} 1",
            ),
            (
                Service::Repeater,
                "notify_repeater_dead_letters_total{channel=\"email\",reason=\"undeliverable\"} 1",
            ),
        ])
        .await
        .unwrap();
    assert_eq!(stack.smtp.mails().len(), 5);
}
