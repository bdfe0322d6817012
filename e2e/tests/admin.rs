//! Admin reads: filters, keyset pagination that neither repeats nor skips while new rows
//! arrive, a delivery with every attempt, and stats.

use std::{collections::HashSet, time::Duration};

use common::auth::Role;
use devkit::smtp::Mode;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(stack: &Stack, svc: &str, to: &str, category: &str) -> Value {
    let body = json!({ "recipients": [{ "email": to }], "category": category, "content": { "text": "x" } });
    let (status, view) = stack
        .call(Method::POST, "/v1/notifications", Some(svc), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 202, "{view}");
    view
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_filter_page_and_inspect_every_attempt() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let (admin, svc) = (
        stack.token(Role::Admin, "ops"),
        stack.token(Role::Service, "billing"),
    );

    // One delivery that fails once then is sent, one that dies, a few ordinary ones.
    stack.smtp.set_mode(Mode::FailTransient(1));
    let retried = send(&stack, &svc, "retry@example.com", "billing").await;
    stack
        .wait_settled(
            retried["id"].as_str().unwrap(),
            &svc,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    stack.smtp.set_mode(Mode::RejectAll);
    let dead = send(&stack, &svc, "dead@example.com", "alerts").await;
    stack
        .wait_settled(dead["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();
    stack.smtp.set_mode(Mode::Accept);
    let mut older = Vec::new();
    for i in 0..25 {
        older.push(
            send(&stack, &svc, &format!("p{i}@example.com"), "news").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let get = |path: String| {
        let admin = admin.clone();
        let stack = &stack;
        async move {
            stack
                .call(Method::GET, &path, Some(&admin), None)
                .await
                .unwrap()
        }
    };
    let (status, page) = get("/v1/admin/notifications?status=dead".into()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), vec![dead["id"].as_str().unwrap().to_owned()]);
    let (_, page) = get("/v1/admin/notifications?category=billing&channel=email".into()).await;
    assert_eq!(ids(&page), vec![retried["id"].as_str().unwrap().to_owned()]);
    let (_, page) = get("/v1/admin/notifications?recipient=p3@example.com".into()).await;
    assert_eq!(ids(&page), vec![older[3].clone()]);
    let (_, page) =
        get("/v1/admin/notifications?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z".into())
            .await;
    assert!(ids(&page).is_empty());
    let (status, problem) = get("/v1/admin/notifications?status=lost".into()).await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("status"))
    );

    // Pages of 10 over the 25 "news" notifications, with new ones arriving between pages.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    // Bounded: 25 in pages of 10 end on the third page; a cursor that never ends is a defect
    // to report, not a loop to hang in.
    for round in 0.. {
        assert!(round < 10, "pages never ended: {seen:?}");
        let (status, page) = get(format!(
            "/v1/admin/notifications?category=news&limit=10&cursor={cursor}"
        ))
        .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        send(&stack, &svc, &format!("late{round}@example.com"), "news").await; // newer than every cursor
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut expected = older.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, no duplicates, no gaps");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);

    // One delivery with every attempt.
    let delivery = retried["deliveries"][0]["id"].as_str().unwrap();
    let (status, d) = get(format!("/v1/admin/deliveries/{delivery}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "sent");
    let log: Vec<(i64, String)> = d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        log,
        vec![(1, "transient_failure".to_owned()), (2, "sent".to_owned())]
    );
    assert_eq!(d["attempt_log"][0]["error"]["code"], "smtp_451");

    // Stats: counts per channel × status and latency percentiles.
    for n in &older {
        stack
            .wait_settled(n, &svc, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let (status, stats) = get("/v1/admin/stats?window=1h".into()).await;
    assert_eq!(status, 200, "{stats}");
    assert!(
        stats["counts"]["email"]["sent"].as_i64().unwrap() >= 26,
        "{stats}"
    );
    assert_eq!(stats["counts"]["email"]["dead"], 1);
    assert!(stats["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        stats["latency_ms"]["p99"].as_f64().unwrap()
            >= stats["latency_ms"]["p50"].as_f64().unwrap()
    );
    assert_eq!(get("/v1/admin/stats?window=forever".into()).await.0, 422);
    // Over time: the buckets add up to the window's counts.
    let (status, over_time) = get("/v1/admin/stats?window=1h&bucket=1m".into()).await;
    assert_eq!(status, 200, "{over_time}");
    let buckets = over_time["series"].as_array().unwrap();
    assert!(!buckets.is_empty(), "{over_time}");
    let summed: i64 = buckets
        .iter()
        .map(|b| b["counts"]["email"]["sent"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(
        summed,
        over_time["counts"]["email"]["sent"].as_i64().unwrap()
    );
    assert!(stats.get("series").is_none(), "no series without a bucket");
    assert_eq!(over_time["bucket_secs"], 60, "{over_time}");
    // A bucket longer than the window is narrowed to it; one making more than 500 buckets is
    // widened to 1/500 of the window; the answer says which length was used.
    for (q, used) in [("window=1h&bucket=2h", 3600), ("window=1d&bucket=1s", 173)] {
        let (status, answer) = get(format!("/v1/admin/stats?{q}")).await;
        assert_eq!(
            (status, answer["bucket_secs"].as_i64()),
            (200, Some(used)),
            "{q}: {answer}"
        );
    }
    for bad in ["bucket=soon", "bucket=0s", "bucket=01m", "bucket=32d"] {
        let (status, problem) = get(format!("/v1/admin/stats?{bad}")).await;
        assert_eq!(
            (status, problem["errors"][0]["field"].as_str()),
            (422, Some("bucket")),
            "{bad}: {problem}"
        );
    }

    // The attempts feed: every attempt once, in the order recorded, followed by cursor.
    let mut feed: Vec<(String, i64, String)> = Vec::new();
    let mut recorded = Vec::new();
    let mut cursor = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut notifications = HashSet::new();
    let retried_delivery = retried["deliveries"][0]["id"].as_str().unwrap();
    while !(older.iter().all(|n| notifications.contains(n))
        && feed.iter().filter(|(d, ..)| d == retried_delivery).count() == 2)
    {
        let query = if cursor.is_empty() {
            "since=2000-01-01T00:00:00Z&limit=7".to_owned()
        } else {
            format!("cursor={cursor}&limit=7")
        };
        let (status, page) = get(format!("/v1/admin/attempts?{query}")).await;
        assert_eq!(status, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            notifications.insert(e["notification_id"].as_str().unwrap().to_owned());
            feed.push((
                e["delivery_id"].as_str().unwrap().to_owned(),
                e["attempt"]["attempt"].as_i64().unwrap(),
                e["attempt"]["outcome"].as_str().unwrap().to_owned(),
            ));
            recorded.push(
                e["recorded_at"]
                    .as_str()
                    .unwrap()
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap(),
            );
        }
        cursor = page["cursor"].as_str().unwrap().to_owned();
        assert!(
            std::time::Instant::now() < deadline,
            "the feed stopped at {feed:?}"
        );
        if page["items"].as_array().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let distinct: HashSet<_> = feed.iter().map(|(d, a, _)| (d.clone(), *a)).collect();
    assert_eq!(distinct.len(), feed.len(), "no attempt twice: {feed:?}");
    assert!(recorded.is_sorted(), "oldest first");
    let of_retried: Vec<_> = feed
        .iter()
        .filter(|(d, ..)| d == retried_delivery)
        .map(|(_, a, o)| (*a, o.as_str()))
        .collect();
    assert_eq!(of_retried, [(1, "transient_failure"), (2, "sent")]);
    // What is recorded later comes after the last cursor.
    let later = send(&stack, &svc, "after-feed@example.com", "news").await;
    let later_delivery = later["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    'follow: loop {
        let (_, page) = get(format!("/v1/admin/attempts?cursor={cursor}")).await;
        for e in page["items"].as_array().unwrap() {
            if e["delivery_id"] == later_delivery.as_str() {
                assert_eq!(e["status"], "sent", "{e}");
                break 'follow;
            }
        }
        cursor = page["cursor"].as_str().unwrap().to_owned();
        assert!(
            std::time::Instant::now() < deadline,
            "the later attempt never came"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for bad in [
        "cursor=nope",
        "limit=0",
        "limit=501",
        "since=2000-01-01T00:00:00Z&cursor=1_x_1",
        "since=0000-01-01T00:00:00Z",
    ] {
        let (status, problem) = get(format!("/v1/admin/attempts?{bad}")).await;
        assert_eq!(status, 422, "{bad}: {problem}");
    }

    // Admins only.
    for (path, token) in [
        ("/v1/admin/notifications", &svc),
        ("/v1/admin/stats", &svc),
        ("/v1/admin/attempts", &svc),
    ] {
        assert_eq!(
            stack
                .call(Method::GET, path, Some(token), None)
                .await
                .unwrap()
                .0,
            403
        );
    }
}
