//! What the bff answers when a service does not answer in time: a write may have been carried
//! out, so the caller is told exactly that (504 `upstream_timeout`, retry with the same
//! Idempotency-Key) — never a plain "unavailable, retry" that invites a duplicate.

use std::time::Duration;

use common::auth::{JwtConfig, Role};
use devkit::{redis::TestPrefix, tasks::TaskGroup};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_service_is_slow_to_answer_is_504_saying_it_may_have_happened() {
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let keys = TestPrefix::local();
    let jwt = JwtConfig::default();
    let cfg = bff::Config {
        http: common::http::HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        jwt: jwt.clone(),
        upstreams: bff::config::UpstreamsConfig {
            users_url: slow.uri(),
            notifications_url: slow.uri(),
            timeout_ms: 500,
        },
        redis: common::redis::RedisConfig {
            key_prefix: keys.prefix().to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut services = TaskGroup::new();
    services.spawn("bff", bff::run(cfg, listener, services.token()));
    let token = common::auth::mint_hs256(&jwt, "billing", Role::Service, 600).unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bff never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let post = http
        .post(format!("http://{addr}/v1/notifications"))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({ "recipients": [{ "email": "a@example.com" }],
                                   "category": "news", "content": { "text": "x" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 504);
    let problem: serde_json::Value = post.json().await.unwrap();
    assert_eq!(problem["type"], "upstream_timeout", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("may have been carried out"),
        "{problem}"
    );
    // A read that times out is plainly unavailable.
    let get = http
        .get(format!(
            "http://{addr}/v1/notifications/0190a6b4-0000-7000-8000-000000000000"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 503);
    services.stop(Duration::from_secs(10)).await.unwrap();
}
