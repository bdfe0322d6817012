//! `notifyctl up` (what `make up` runs) for real: the whole stack as processes, a notification
//! through nginx that lands in `.dev/mail` as `.eml` and shows `sent`, then SIGINT stops every
//! process it started. Needs the service binaries next to `notifyctl` (`make test` builds them
//! first with `cargo build --workspace --bins`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use notifyctl::stack::StackFile;

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn up_serves_the_whole_path_and_ctrl_c_stops_everything() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_notifyctl"));
    let siblings = bin.parent().unwrap();
    for name in [
        "users-service",
        "notification-service",
        "workers",
        "repeater",
        "bff",
    ] {
        assert!(
            siblings.join(name).is_file(),
            "{name} is not built next to notifyctl: run `cargo build --workspace --bins` first (make test does)"
        );
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("notifyctl-up-{id}"));
    let port = devkit::free_port();
    let mut child = Command::new(&bin)
        .args([
            "up",
            "--port",
            &port.to_string(),
            "--smtp-port",
            "0",
            "--db-prefix",
            &format!("t_up_{}_", &id[..8]),
        ])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let stack_path = dir.join("stack.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    let stack = loop {
        if let Ok(s) = StackFile::read(&stack_path) {
            break s;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "notifyctl up exited early; see {}/logs",
            dir.display()
        );
        assert!(Instant::now() < deadline, "no stack.json after 90 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stack.url, format!("http://127.0.0.1:{port}"));
    assert_eq!(stack.jwt.alg, "HS256");
    let names: Vec<&str> = stack.processes.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bff-1",
            "bff-2",
            "nginx",
            "notification-service",
            "repeater",
            "users-service",
            "workers"
        ]
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sent = rt.block_on(async {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{}/v1/notifications", stack.url))
            .bearer_auth(&stack.tokens.service)
            .json(&serde_json::json!({
                "recipients": [{ "user_id": stack.user_id }],
                "category": "welcome",
                "content": { "subject": "Hi from up", "text": "Hello!" }
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let started = Instant::now();
        loop {
            let view: serde_json::Value = http
                .get(format!("{}/v1/notifications/{id}", stack.url))
                .bearer_auth(&stack.tokens.admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if view["deliveries"][0]["status"] == "sent"
                || started.elapsed() > Duration::from_secs(5)
            {
                return view["deliveries"][0]["status"] == "sent";
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(sent, "not sent within 5 s");
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
    let all_sent = rt.block_on(async {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{}/v1/notifications", stack.url))
            .bearer_auth(&stack.tokens.service)
            .json(&serde_json::json!({
                "recipients": [
                    { "phone": "+49 30 1234567" },
                    { "device": { "platform": "fcm", "token": "fcm-dev-token" } },
                    { "device": { "platform": "apns", "token": "a1b2c3d4" } },
                    { "webhook": { "url": stack.webhook_sink } },
                    { "telegram": { "chat_id": 4242 } }
                ],
                "category": "ops",
                "content": { "subject": "Sink check", "text": "Hello sinks" }
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let started = Instant::now();
        loop {
            let view: serde_json::Value = http
                .get(format!("{}/v1/notifications/{id}", stack.url))
                .bearer_auth(&stack.tokens.admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let statuses: Vec<String> = view["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| format!("{}={}", d["channel"], d["status"]))
                .collect();
            if statuses.iter().all(|s| s.ends_with("\"sent\"")) {
                return Ok(statuses);
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(statuses);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(all_sent.is_ok(), "{all_sent:?}");
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

    // Everything the launcher started, including nginx's worker processes.
    let mut pids: Vec<u32> = stack.processes.values().copied().collect();
    for pid in stack.processes.values() {
        let out = Command::new("pgrep")
            .arg("-P")
            .arg(pid.to_string())
            .output()
            .unwrap();
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok()),
        );
    }
    assert!(
        pids.len() > stack.processes.len(),
        "nginx has worker processes"
    );

    // Ctrl-C.
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "notifyctl did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<u32> = pids.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(
        left.is_empty(),
        "still running after Ctrl-C: {left:?} (of {:?})",
        stack.processes
    );
    let _ = std::fs::remove_dir_all(&dir);
}
