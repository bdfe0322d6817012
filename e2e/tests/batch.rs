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

/// `n` items to distinct addresses, each with its own idempotency key.
fn keyed_items(batch: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut it = item(&format!("{batch}{i}@example.com"));
            it["idempotency_key"] = json!(format!("{batch}-{i}"));
            it
        })
        .collect()
}

/// notification-service (a process here) SIGKILLed while a batch is being written: the batch
/// answered before stays whole, the interrupted one is answered with an error (never a 200
/// for items that were not written), and retried with the same keys once the service is back,
/// each of its items is written exactly once — the ones committed before the kill replayed
/// (200), the rest accepted (202) — and every address is mailed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_loses_nothing_answered_and_a_keyed_retry_writes_each_item_once() {
    const FIRST: usize = 50;
    const SECOND: usize = 500;
    let mut stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        welcome: false,
        // Claims of the killed requests are taken over after 2 s instead of a minute.
        notification_service_process: Some(vec![(
            "NOTIFY_INTAKE__ABANDONED_CLAIM_SECS".into(),
            "2".into(),
        )]),
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let (http, url) = (stack.http.clone(), stack.url());
    let post = |items: Vec<Value>| {
        let (http, url, svc) = (http.clone(), url.clone(), svc.clone());
        async move {
            let resp = http
                .post(format!("{url}/v1/notifications/batch"))
                .bearer_auth(svc)
                .json(&json!({ "notifications": items }))
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let count = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .unwrap() as usize
    };

    let (status, first) = post(keyed_items("a", FIRST)).await.unwrap();
    assert_eq!(status, 200, "{first}");
    let first_ids: Vec<uuid::Uuid> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 202, "{r}");
            r["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();

    // The second batch, killed once some of it is committed and before all of it is.
    let second = tokio::spawn(post(keyed_items("b", SECOND)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(stack.notify_pool.clone()).await == FIRST {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing of the second batch written in 30 s"
        );
        assert!(
            !second.is_finished(),
            "answered before anything was written: {:?}",
            second.await
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stack.kill_notification_service();
    let at_kill = count(stack.notify_pool.clone()).await;
    assert!(
        at_kill > FIRST && at_kill < FIRST + SECOND,
        "the kill was to land mid-batch: {at_kill} notifications"
    );
    match second.await.unwrap() {
        Ok((status, body)) => assert!(status >= 500, "{status} {body}"),
        Err(e) => panic!("no answer at all from nginx: {e}"),
    }
    // Everything answered accepted before the kill is there.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE id = ANY($1)")
        .bind(&first_ids)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(kept as usize, FIRST);

    // Back, and the second batch again with the same keys: items whose requests died holding
    // their key are refused `idempotency_in_flight` (409) until the claim is abandoned (2 s).
    stack.start_notification_service().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let results = loop {
        let (status, answer) = post(keyed_items("b", SECOND)).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        let results = answer["results"].as_array().unwrap().clone();
        if results.iter().all(|r| r["status"] != 409) {
            break results;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "claims still in flight after 30 s: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let replayed = results.iter().filter(|r| r["status"] == 200).count();
    let accepted = results.iter().filter(|r| r["status"] == 202).count();
    assert_eq!(
        (replayed, accepted),
        (at_kill - FIRST, FIRST + SECOND - at_kill),
        "committed before the kill: replayed; the rest: accepted"
    );
    let mut ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), SECOND);
    assert_eq!(count(stack.notify_pool.clone()).await, FIRST + SECOND);

    // Every address mailed, once.
    let mails = stack
        .smtp
        .wait_for(FIRST + SECOND, Duration::from_secs(120))
        .await;
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!(
        (to.len(), mails.len()),
        (FIRST + SECOND, FIRST + SECOND),
        "each address once"
    );
}

/// The rate limit counts a batch's items: with 10 requests an hour, a batch of 8 passes, and
/// then neither another batch of 8 nor a third single send does (429 with `Retry-After`) —
/// batching never gets around a service's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_each_item_against_the_rate_limit() {
    let stack = Stack::start(Options {
        rate_limits: bff::config::RateLimitConfig {
            service: bff::config::Limit {
                requests: 10,
                // One request back every 6 minutes: none comes back during the test.
                period_secs: 3600,
            },
            ..Options::default().rate_limits
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let eight = || json!({ "notifications": (0..8).map(|i| item(&format!("r{i}@example.com"))).collect::<Vec<_>>() });
    let (status, answer) = stack
        .call(
            Method::POST,
            "/v1/notifications/batch",
            Some(&svc),
            Some(eight()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = stack
        .call(
            Method::POST,
            "/v1/notifications/batch",
            Some(&svc),
            Some(eight()),
        )
        .await
        .unwrap();
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["type"], "rate_limited", "{answer}");
    // 8 + the refused batch's first count = 9: one single send left, then refused.
    let one = item("single@example.com");
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&svc),
            Some(one.clone()),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    let (status, _) = stack
        .call(Method::POST, "/v1/notifications", Some(&svc), Some(one))
        .await
        .unwrap();
    assert_eq!(status, 429);
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        9
    );
}
