//! What the bff answers when a service does not answer as it should: a write that is not
//! answered in time may have been carried out, so the caller is told exactly that (504
//! `upstream_timeout`, retry with the same Idempotency-Key) — never a plain "unavailable,
//! retry" that invites a duplicate; an answer larger than the bff passes on is a 502, never
//! buffered whole.

use std::{net::SocketAddr, time::Duration};

use common::auth::{JwtConfig, Role};
use devkit::{redis::TestPrefix, tasks::TaskGroup};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

/// A bff in front of `upstream` (both services), with its own Redis prefix.
struct Bff {
    addr: SocketAddr,
    /// `http.metrics_listen`: the admin port.
    admin: SocketAddr,
    token: String,
    http: reqwest::Client,
    services: TaskGroup,
    _keys: TestPrefix,
}

impl Bff {
    async fn start(upstream: &MockServer, timeout_ms: u64) -> Self {
        let keys = TestPrefix::local();
        let jwt = JwtConfig::with_random_secret();
        let admin: SocketAddr = ([127, 0, 0, 1], devkit::ports::reserve()).into();
        let cfg = bff::Config {
            http: common::http::HttpConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                metrics_listen: Some(admin),
                ..Default::default()
            },
            jwt: jwt.clone(),
            upstreams: bff::config::UpstreamsConfig {
                users_url: upstream.uri(),
                notifications_url: upstream.uri(),
                timeout_ms,
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
        Self {
            addr,
            admin,
            token,
            http,
            services,
            _keys: keys,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }
}

const SOME_ID: &str = "0190a6b4-0000-7000-8000-000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_service_is_slow_to_answer_is_504_saying_it_may_have_happened() {
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let bff = Bff::start(&slow, 500).await;

    let post = bff
        .http
        .post(format!("http://{}/v1/notifications", bff.addr))
        .bearer_auth(&bff.token)
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
    let get = bff.get(&format!("/v1/notifications/{SOME_ID}")).await;
    assert_eq!(get.status(), 503);
    bff.services.stop(Duration::from_secs(10)).await.unwrap();
}

/// Before, the bff buffered any answer whole (3 MB for one page of the list was seen); now
/// one over [`bff::upstream::MAX_ANSWER_BYTES`] is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_cap_is_a_502_not_a_buffer() {
    let upstream = MockServer::start().await;
    let huge = format!(
        "{{\"items\": \"{}\"}}",
        "x".repeat(bff::upstream::MAX_ANSWER_BYTES)
    );
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .mount(&upstream)
        .await;
    let bff = Bff::start(&upstream, 5_000).await;
    let resp = bff.get(&format!("/v1/notifications/{SOME_ID}")).await;
    assert_eq!(resp.status(), 502);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "upstream_answer_too_large", "{problem}");
    // Just under the cap passes.
    upstream.reset().await;
    let fits = format!(
        "{{\"items\": \"{}\"}}",
        "x".repeat(bff::upstream::MAX_ANSWER_BYTES - 100)
    );
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_raw(fits, "application/json"))
        .mount(&upstream)
        .await;
    assert_eq!(
        bff.get(&format!("/v1/notifications/{SOME_ID}"))
            .await
            .status(),
        200
    );
    bff.services.stop(Duration::from_secs(10)).await.unwrap();
}

/// Readiness on the public port says ready or not, nothing more: the upstreams' errors name
/// internal hosts and ports (before, `/readyz` through nginx echoed them). The details are on
/// the admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_readiness_names_no_internal_host() {
    let upstream = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let bff = Bff::start(&upstream, 5_000).await;
    let public = bff.get("/readyz").await;
    assert_eq!(public.status(), 503);
    let body: serde_json::Value = public.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "status": "not_ready" }));
    let detailed = bff
        .http
        .get(format!("http://{}/readyz", bff.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(detailed.status(), 503);
    let body: serde_json::Value = detailed.json().await.unwrap();
    assert_eq!(
        body["checks"]["users-service"], "answered 500 Internal Server Error",
        "{body}"
    );
    bff.services.stop(Duration::from_secs(10)).await.unwrap();
}

/// A service that sheds load answers 503 with `Retry-After`: the bff passes both on (a client
/// told when to retry, with the same Idempotency-Key), never a generic error of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_503_and_retry_after_reach_the_caller() {
    let upstream = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "7")
                .set_body_raw(
                    r#"{"type":"overloaded","title":"Service Unavailable","status":503,"detail":"busy"}"#,
                    "application/problem+json",
                ),
        )
        .mount(&upstream)
        .await;
    let bff = Bff::start(&upstream, 5_000).await;
    let resp = bff
        .http
        .post(format!("http://{}/v1/notifications", bff.addr))
        .bearer_auth(&bff.token)
        .json(
            &serde_json::json!({ "recipients": [{ "email": "a@example.com" }],
                                   "category": "news", "content": { "text": "x" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "overloaded", "{problem}");
    bff.services.stop(Duration::from_secs(10)).await.unwrap();
}
