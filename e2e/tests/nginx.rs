//! The path through Debian's nginx with two bff instances, one stopped mid-test.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;

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

    let (status, _) = stack
        .call(Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(status, 404, "nginx never routes /metrics");
}
