//! `POST /v1/notifications/batch` through nginx and two bff: one answer per item, in order;
//! one bad item never fails the others; per-item idempotency keys replay; whole-request limits
//! refuse the request and write nothing; what was answered accepted is committed and sent.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

fn item(to: &str) -> Value {
    json!({ "recipients": [{ "email": to }], "category": "billing",
            "content": { "subject": "Invoice", "text": format!("for {to}") } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_item_in_order_and_one_bad_item_fails_alone() {
    let stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let batch = |items: Vec<Value>| json!({ "notifications": items });

    let mut keyed = item("keyed@example.com");
    keyed["idempotency_key"] = json!("invoice-7");
    let items = vec![
        item("a@example.com"),
        json!({ "recipients": [], "category": "billing", "content": { "text": "x" } }),
        keyed.clone(),
        json!({ "recipients": [{ "email": "b@example.com" }], "category": "billing",
                "content": { "text": "x" }, "colour": "red" }),
        json!(5),
        item("c@example.com"),
    ];
    let (status, answer) = stack
        .call(
            Method::POST,
            "/v1/notifications/batch",
            Some(&svc),
            Some(batch(items)),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 422, 202, 422, 422, 202], "{answer}");
    for bad in [1, 3, 4] {
        assert_eq!(
            results[bad]["problem"]["type"], "validation_failed",
            "{answer}"
        );
        assert!(results[bad].get("id").is_none(), "{answer}");
    }
    assert_eq!(
        results[1]["problem"]["errors"][0]["field"], "recipients",
        "{answer}"
    );
    // Accepted means committed: each accepted item is there, and only those.
    let ids: Vec<&str> = [0, 2, 5]
        .iter()
        .map(|&i| results[i]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        3
    );
    for id in &ids {
        let view = stack
            .wait_settled(id, &svc, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    }
    assert_eq!(stack.smtp.mails().len(), 3);

    // The keyed item again: its first answer, nothing new written; the same key with another
    // item is refused for that item only.
    let mut changed = keyed.clone();
    changed["content"]["text"] = json!("another invoice");
    let (status, again) = stack
        .call(
            Method::POST,
            "/v1/notifications/batch",
            Some(&svc),
            Some(batch(vec![keyed, changed, item("d@example.com")])),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{again}");
    let r = again["results"].as_array().unwrap();
    assert_eq!(
        (r[0]["status"].as_u64(), r[0]["id"].as_str()),
        (Some(200), Some(ids[1]))
    );
    assert_eq!(r[1]["status"], 422, "{again}");
    assert_eq!(
        r[1]["problem"]["errors"][0]["field"], "idempotency_key",
        "{again}"
    );
    assert_eq!(r[2]["status"], 202, "{again}");
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_limits_refuse_the_batch_and_write_nothing() {
    let stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let post = |body: Value| {
        let (stack, svc) = (&stack, &svc);
        async move {
            stack
                .call(
                    Method::POST,
                    "/v1/notifications/batch",
                    Some(svc),
                    Some(body),
                )
                .await
                .unwrap()
        }
    };
    // No item, more than 1,000 items, more than 10,000 recipients in all: 422.
    let many: Vec<Value> = (0..1001)
        .map(|i| item(&format!("m{i}@example.com")))
        .collect();
    let recipients: Vec<Value> = (0..1000)
        .map(|i| json!({ "email": format!("r{i}@example.com") }))
        .collect();
    let wide: Vec<Value> = (0..11)
        .map(|_| json!({ "recipients": recipients, "category": "billing", "content": { "text": "x" } }))
        .collect();
    for body in [
        json!({ "notifications": [] }),
        json!({ "notifications": many }),
        json!({ "notifications": wide }),
    ] {
        let (status, problem) = post(body).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "notifications", "{problem}");
    }
    // A body the single send could not take (over 256 KiB) is fine here; over 8 MiB is 413.
    let big: Vec<Value> = (0..300)
        .map(|i| {
            json!({ "recipients": [{ "email": format!("big{i}@example.com") }], "category": "billing",
                    "content": { "text": "y".repeat(1000) } })
        })
        .collect();
    let (status, answer) = post(json!({ "notifications": big })).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 202),
        "{answer}"
    );
    let huge = json!({ "notifications": [{ "recipients": [{ "email": "h@example.com" }],
        "category": "billing", "content": { "text": "z".repeat(9 * 1024 * 1024) } }] });
    let (status, problem) = post(huge).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["type"], "payload_too_large", "{problem}");
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        300
    );
}
