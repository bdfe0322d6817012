//! The path through Debian's nginx with two bff instances, one stopped mid-test.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;

/// How many requests the bff with metrics port `addr` answered on `route` (its own counter:
/// what reached it past nginx).
async fn bff_answered(stack: &Stack, addr: std::net::SocketAddr, route: &str) -> u64 {
    let text = stack
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let label = format!("route=\"{route}\",");
    text.lines()
        .filter(|l| l.starts_with("notify_http_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_spreads_over_two_bffs_and_loses_no_request_when_one_stops() {
    let mut stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let mut ids = Vec::new();
    for i in 0..40 {
        if i == 15 {
            stack.stop_bff(0).await;
        }
        let resp = stack
            .http
            .post(format!("{}/v1/notifications", stack.url()))
            .bearer_auth(&svc)
            .header("x-request-id", format!("req-{i}"))
            .json(&json!({ "recipients": [{ "email": format!("u{i}@example.com") }], "category": "news", "content": { "text": "hi" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "request {i} failed");
        assert_eq!(
            resp.headers()["x-request-id"],
            format!("req-{i}").as_str(),
            "nginx and the bff keep the caller's request id"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Both instances served traffic (round robin). nginx flushes its access log up to 1 s
    // late: poll it until all 40 requests are in.
    let (a, b) = (
        stack.bffs[0].addr.to_string(),
        stack.bffs[1].addr.to_string(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let log = loop {
        let log = stack.nginx.as_ref().unwrap().access_log();
        if log.matches("POST /v1/notifications").count() >= 40 {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the access log never showed the 40 requests:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let served_by = |addr: &str| {
        let only = format!("upstream={addr}");
        log.lines().filter(|l| l.ends_with(&only)).count()
    };
    assert!(served_by(&a) > 0 && served_by(&b) > 0, "{log}");
    // After the stop (request 15 on) the stopped instance answered nothing (nginx may still
    // try it first, then `$upstream_addr` lists both and ends with the one that answered).
    let after_stop: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("POST /v1/notifications"))
        .skip(15)
        .collect();
    assert!(
        after_stop.iter().all(|l| l.ends_with(&b)),
        "{after_stop:#?}"
    );

    // Every accepted notification is delivered.
    let last = stack
        .wait_settled(ids.last().unwrap(), &svc, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(last["deliveries"][0]["status"], "sent", "{last}");
    let mails = stack.smtp.wait_for(40, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 40);

    // nginx never routes /metrics: it answers 404 itself (the bff would answer 404 too, so
    // the proof is that no bff saw the request).
    let running = stack.bffs[1].metrics_addr;
    let before = bff_answered(&stack, running, "unmatched").await;
    let (status, _) = stack
        .call(Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(status, 404, "nginx never routes /metrics");
    assert_eq!(
        bff_answered(&stack, running, "unmatched").await,
        before,
        "/metrics reached a bff"
    );
}

/// Sends a request head only (`Expect: 100-continue`) to nginx and returns its answer: nginx
/// decides on the body size from `Content-Length` before any body byte is sent, so the test
/// never races a connection nginx closes while the body is still being written.
fn raw_post_head(addr: std::net::SocketAddr, content_length: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "POST /v1/notifications HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\nExpect: 100-continue\r\nX-Request-Id: too-big-1\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_oversized_bodies_and_floods_from_one_address_as_problem_json() {
    let stack = Stack::start(Options {
        nginx: true,
        // Production allows 5,000 r/s per address with a burst of 5,000; the same directives
        // at 1 r/s with a burst of 5 show the behaviour without sending ten thousand requests.
        nginx_per_ip: devkit::nginx::PerIpLimit { rate: 1, burst: 5 },
        ..Options::default()
    })
    .await
    .unwrap();
    let nginx = stack.nginx.as_ref().unwrap().addr;

    // Over client_max_body_size (1 MiB): 413 from nginx, problem+json, nothing forwarded.
    let (status, answer) = tokio::task::spawn_blocking(move || raw_post_head(nginx, 2 << 20))
        .await
        .unwrap();
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap();
    assert_eq!(
        (body["type"].as_str(), body["request_id"].as_str()),
        (Some("payload_too_large"), Some("too-big-1"))
    );

    // TRACE: nginx refuses it itself, saying what is allowed (a 405 must carry `Allow`).
    let trace = stack
        .http
        .request(Method::TRACE, format!("{}/v1/notifications", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), 405);
    assert_eq!(trace.headers()["allow"], "GET, HEAD, POST, PUT, DELETE");
    assert_eq!(trace.headers()["content-type"], "application/problem+json");

    // A flood from one address: the burst passes, the rest is 429 problem+json with
    // Retry-After — before any bff sees it.
    let healthz_before = bff_answered(&stack, stack.bffs[0].metrics_addr, "/healthz").await;
    let statuses = futures::future::join_all((0..30).map(|_| {
        let stack = &stack;
        async move {
            let resp = stack
                .http
                .get(format!("{}/healthz", stack.url()))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp.headers().contains_key("retry-after");
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (
                status,
                retry,
                ctype,
                body["type"].as_str().map(str::to_owned),
            )
        }
    }))
    .await;
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let limited: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    // The refused ones never reached the bff: it answered exactly the ones that passed.
    assert_eq!(
        bff_answered(&stack, stack.bffs[0].metrics_addr, "/healthz").await - healthz_before,
        ok as u64,
        "{statuses:?}"
    );
    assert_eq!(ok + limited.len(), 30, "{statuses:?}");
    // The burst of 5, plus 1/s while the 30 run: a few more on a slow machine.
    assert!((1..=20).contains(&ok), "{ok} passed: {statuses:?}");
    assert!(!limited.is_empty(), "{statuses:?}");
    for (_, retry, ctype, kind) in limited {
        assert!(*retry);
        assert_eq!(ctype.as_deref(), Some("application/problem+json"));
        assert_eq!(kind.as_deref(), Some("rate_limited"));
    }
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
}
