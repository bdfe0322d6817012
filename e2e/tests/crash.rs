//! The workers process SIGKILLed in the middle of a batch of SMS: every delivery of the batch
//! still ends terminal (`sent`) once a new workers process runs — through Kafka redelivery of
//! the uncommitted messages and the dispatch claims expiring — and none is sent twice unless
//! the gateway had already accepted it.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use common::{auth::Role, events::Channel};
use devkit::process::Guarded;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123/Messages.json";

/// The `workers` binary next to this test's directory (`make test` builds the binaries first).
fn workers_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("workers");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// The `workers` binary as a child process, killed when the guard drops (also when an
/// assertion fails) or when this test process dies.
fn spawn_workers(stack: &Stack, gateway: &MockServer) -> Guarded {
    let mut cmd = Command::new(workers_bin());
    cmd.env(
        "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
        &stack.kafka_cfg.bootstrap_servers,
    )
    .env("NOTIFY_KAFKA__TOPIC_PREFIX", &stack.kafka_cfg.topic_prefix)
    .env("NOTIFY_REDIS__KEY_PREFIX", &stack.redis.key_prefix)
    .env("NOTIFY_CHANNELS", "[sms]")
    .env("NOTIFY_SMS__BASE_URL", gateway.uri())
    .env("NOTIFY_SMS__ACCOUNT_SID", "AC0123")
    .env("NOTIFY_SMS__AUTH_TOKEN", "secret")
    .env("NOTIFY_SMS__FROM", "\"+15005550006\"")
    .env("NOTIFY_CLAIM_TTL_SECS", "2")
    .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
    .env("NOTIFY_REDIS__URL", &stack.redis.url)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    Guarded::spawn("workers", cmd).expect("starting the workers binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_leaves_every_delivery_terminal() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({ "sid": "SM1" }))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&gateway)
        .await;
    let stack = Stack::start(Options {
        welcome: false,
        enabled_channels: vec![Channel::Sms],
        // No in-process workers: the workers run as a process this test kills.
        workers: workers::Config {
            channels: vec![],
            ..Default::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();

    const N: usize = 40;
    let service = stack.token(Role::Service, "billing");
    let mut ids = Vec::new();
    for i in 0..N {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/notifications",
                Some(&service),
                Some(
                    json!({ "recipients": [{ "phone": format!("+4930123456{i:02}") }],
                             "category": "billing", "content": { "text": format!("batch {i}") } }),
                ),
            )
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }

    let mut first = spawn_workers(&stack, &gateway);
    // Kill it once the gateway has seen a few sends: the rest of the batch is in flight or
    // not yet consumed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gateway.received_requests().await.unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker never sent"
        );
        assert!(first.try_wait().is_none(), "the first worker exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill(); // SIGKILL
    let before_restart = gateway.received_requests().await.unwrap().len();
    assert!(
        before_restart < N,
        "the whole batch went out before the kill"
    );

    let mut second = spawn_workers(&stack, &gateway);
    let admin = stack.token(Role::Admin, "ops-admin");
    for id in &ids {
        let view = stack
            .wait_settled(id, &admin, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    }
    second.stop();

    // Every number got its message; a second copy only where the kill hit between the
    // gateway accepting and the status being recorded (at most the kill's in-flight sends).
    let requests = gateway.received_requests().await.unwrap();
    for i in 0..N {
        let to = format!("To=%2B4930123456{i:02}");
        let n = requests
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(&to))
            .count();
        assert!(n >= 1, "{to} never reached the gateway");
    }
    let duplicates = requests.len() - N;
    assert!(duplicates <= before_restart, "{duplicates} duplicates");
}
