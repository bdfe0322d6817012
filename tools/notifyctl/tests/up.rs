//! `notifyctl up` (what `make up` runs) for real: the whole stack as processes, a notification
//! through nginx that lands in `.dev/mail` as `.eml` and shows `sent`, then SIGINT stops every
//! process it started. Needs the service binaries next to `notifyctl` (`make test` builds them
//! first with `cargo build --workspace --bins`).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use devkit::process::{alive, children};

mod support;

#[test]
fn up_serves_the_whole_path_and_ctrl_c_stops_everything() {
    // Reserved for this test process: no other test or tool can take them meanwhile.
    let port = devkit::free_port();
    let grpc_port = devkit::free_port();
    let prometheus_port = devkit::free_port();
    let mut launched = support::up(
        &[
            "--port",
            &port.to_string(),
            "--grpc-port",
            &grpc_port.to_string(),
            "--prometheus-port",
            &prometheus_port.to_string(),
        ],
        &[],
    );
    let (stack, bin, dir) = (
        launched.stack.clone(),
        launched.bin.clone(),
        launched.dir.0.clone(),
    );
    assert_eq!(stack.url, format!("http://127.0.0.1:{port}"));
    assert_eq!(stack.grpc_url, format!("http://127.0.0.1:{grpc_port}"));
    assert_eq!(stack.jwt.alg, "HS256");
    let names: Vec<&str> = stack.processes.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bff-1",
            "bff-2",
            "nginx",
            "notification-service",
            "prometheus",
            "repeater",
            "users-service",
            "workers"
        ]
    );
    assert_eq!(
        stack.prometheus_url.as_deref(),
        Some(format!("http://127.0.0.1:{prometheus_port}").as_str())
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, sent) = rt.block_on(support::send_until_sent(
        &stack,
        serde_json::json!({
            "recipients": [{ "user_id": stack.user_id }],
            "category": "welcome",
            "content": { "subject": "Hi from up", "text": "Hello!" }
        }),
    ));
    assert_eq!(sent["deliveries"][0]["status"], "sent", "{sent}");
    // Every service keeps its Redis keys under the stack's prefix (deleted when the test ends):
    // the bff's rate-limit budget and the workers' claims here (the profile cache too, but its
    // entries expire). Before, only the workers had it, so stacks shared budgets with each
    // other and with a developer's `make up`.
    let prefix = launched.redis_prefix().to_owned();
    for kind in ["rl:", "dispatch:"] {
        assert!(
            !support::redis_keys(&format!("{prefix}{kind}*")).is_empty(),
            "no {kind} key under {prefix}"
        );
    }

    // Prometheus scrapes every process: each service's job has `notify_*` series.
    let jobs = rt.block_on(async {
        let http = reqwest::Client::new();
        let query = r#"count by (job) ({__name__=~"notify_.+"})"#;
        let want = [
            "notify-bff",
            "notify-notification-service",
            "notify-repeater",
            "notify-users-service",
            "notify-workers",
        ];
        let started = Instant::now();
        loop {
            let answer: serde_json::Value = http
                .get(format!("http://127.0.0.1:{prometheus_port}/api/v1/query"))
                .query(&[("query", query)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut jobs: Vec<String> = answer["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["metric"]["job"].as_str().map(str::to_owned))
                .collect();
            jobs.sort();
            // Scraped every 2 s; the deadline is against hanging, not a speed target.
            if jobs == want || started.elapsed() > Duration::from_secs(60) {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    assert_eq!(
        jobs,
        [
            "notify-bff",
            "notify-notification-service",
            "notify-repeater",
            "notify-users-service",
            "notify-workers"
        ],
        "see {}/logs/prometheus.log",
        dir.display()
    );
    let eml: Vec<String> = std::fs::read_dir(dir.join("mail"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        eml.iter()
            .any(|m| m.contains("Subject: Hi from up") && m.contains("To: demo@example.com")),
        "{eml:?}"
    );

    // Every HTTP channel goes to the provider sink, which records what it received.
    let (_, view) = rt.block_on(support::send_until_sent(
        &stack,
        serde_json::json!({
            "recipients": [
                { "phone": "+49 30 1234567" },
                { "device": { "platform": "fcm", "token": "fcm-dev-token" } },
                { "device": { "platform": "apns", "token": "a1b2c3d4" } },
                { "webhook": { "url": stack.webhook_sink } },
                { "telegram": { "chat_id": 4242 } }
            ],
            "category": "ops",
            "content": { "subject": "Sink check", "text": "Hello sinks" }
        }),
    ));
    let statuses: Vec<String> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}={}", d["channel"], d["status"]))
        .collect();
    assert_eq!(statuses.len(), 5, "{view}");
    assert!(
        statuses.iter().all(|s| s.ends_with("\"sent\"")),
        "{statuses:?}"
    );
    let recorded = |channel: &str| -> Vec<serde_json::Value> {
        std::fs::read_dir(dir.join("sinks").join(channel))
            .map(|entries| {
                entries
                    .map(|e| {
                        serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let sms = recorded("sms");
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert!(
        sms[0]["body"]
            .as_str()
            .unwrap()
            .contains("To=%2B49301234567")
    );
    assert_eq!(
        recorded("fcm")[0]["body"]["message"]["token"],
        "fcm-dev-token"
    );
    assert_eq!(recorded("apns")[0]["path"], "/apns/3/device/a1b2c3d4");
    assert_eq!(recorded("telegram")[0]["body"]["chat_id"], "4242");
    let hook = recorded("webhook");
    assert!(
        hook[0]["headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,")
    );

    // The load tool against this stack: every accepted notification accounted as sent, the
    // report written.
    let out = dir.join("load");
    let log_path = dir.join("load.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut load = Command::new(&bin);
    load.args([
        "load",
        "--scenario",
        "e2e",
        "--channel",
        "webhook",
        "--rate",
        "20",
        "--duration-secs",
        "3",
        "--settle-secs",
        "60",
    ])
    .arg("--stack")
    .arg(dir.join("stack.json"))
    .arg("--out")
    .arg(&out)
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    // Guarded and bounded: stopped if this test fails, given up on long before nextest's kill.
    let mut load = devkit::process::Guarded::spawn("notifyctl load", load).unwrap();
    let status = load.wait_timeout(Duration::from_secs(45));
    let said = std::fs::read_to_string(&log_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("notifyctl load did not end in 45 s:\n{said}"));
    assert!(status.success(), "{said}");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("e2e-webhook.json")).unwrap()).unwrap();
    assert_eq!(result["accepted"], 60, "{said}");
    assert_eq!(result["deliveries"]["lost"], 0, "{said}");
    assert_eq!(result["deliveries"]["by_status"]["sent"], 60, "{said}");
    assert!(
        result["processes"]["workers"]["rss_mib"][0]
            .as_f64()
            .unwrap()
            > 1.0
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("e2e-webhook") && html.contains("<svg"));

    // Everything the launcher started, including nginx's worker processes.
    let mut pids: Vec<u32> = stack.processes.values().copied().collect();
    for pid in stack.processes.values() {
        pids.extend(children(*pid));
    }
    assert!(
        pids.len() > stack.processes.len(),
        "nginx has worker processes"
    );

    // Ctrl-C.
    launched.process.signal(libc::SIGINT);
    let status = launched
        .process
        .wait_timeout(Duration::from_secs(30))
        .expect("notifyctl did not stop within 30 s of Ctrl-C");
    assert!(status.success(), "notifyctl up exited with {status}");
    // Its children were reaped by it; nginx's workers exit right after their master.
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        left.is_empty(),
        "still running after Ctrl-C: {left:?} (of {:?})",
        stack.processes
    );
}
