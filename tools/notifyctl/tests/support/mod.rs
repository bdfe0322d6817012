//! `notifyctl up` started by a test: its own directory, databases and Redis keys, removed
//! when the test ends, passed or failed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use devkit::{pg::TestDatabase, process::Guarded};
use notifyctl::stack::StackFile;

/// Removes the launcher's directory when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deletes the Redis keys under its prefix when dropped.
struct ForgetKeys(String);

impl Drop for ForgetKeys {
    fn drop(&mut self) {
        if let Err(e) = notifyctl::launcher::forget_redis_keys("redis://127.0.0.1:6379", &self.0) {
            eprintln!("could not delete the Redis keys under {}: {e:#}", self.0);
        }
    }
}

/// A running `notifyctl up` and what it owns.
/// (Each test binary including this module reads a different subset of the fields.) Dropping it stops the launcher (SIGTERM, which
/// stops everything it started), then drops the databases and keys.
#[allow(dead_code)]
pub struct Up {
    pub process: Guarded,
    pub stack: StackFile,
    pub bin: PathBuf,
    // Dropped after `process`, in this order.
    _redis_keys: ForgetKeys,
    _databases: [TestDatabase; 2],
    pub dir: TempDir,
}

#[allow(dead_code)]
impl Up {
    /// The Redis key prefix of every service of this stack.
    pub fn redis_prefix(&self) -> &str {
        &self._redis_keys.0
    }
}

/// The keys under `pattern` in the machine's Redis (SCAN, never KEYS).
#[allow(dead_code)]
pub fn redis_keys(pattern: &str) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args([
            "-u",
            "redis://127.0.0.1:6379",
            "--scan",
            "--pattern",
            pattern,
        ])
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `notifyctl up` on free ports with `args` added and `env` set, and waits for its
/// stack file. The public ports (`--port`, `--grpc-port`, `--prometheus-port`) are reserved
/// free ones unless `args` names them: two tests on the launcher's defaults would meet on
/// each other's nginx.
pub fn up(args: &[&str], env: &[(&str, &str)]) -> Up {
    let mut ports = Vec::new();
    for flag in ["--port", "--grpc-port", "--prometheus-port"] {
        if !args.contains(&flag) {
            ports.push(flag.to_owned());
            ports.push(devkit::free_port().to_string());
        }
    }
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
    let dir = TempDir(std::env::temp_dir().join(format!("notifyctl-up-{id}")));
    std::fs::create_dir_all(&dir.0).unwrap();
    // The databases the launcher creates are dropped when the test ends, however it ends.
    let db_prefix = format!("t_up_{}_", &id[..8]);
    let databases = [
        TestDatabase::adopt(&format!("{db_prefix}users")),
        TestDatabase::adopt(&format!("{db_prefix}notify")),
    ];
    // So are its Redis keys: every service of the stack has the prefix (the workers' dedupe
    // keys are kept 7 days otherwise; the bff's rate-limit budgets would be shared with other
    // stacks and a developer's `make up`).
    let redis_keys = ForgetKeys(notifyctl::launcher::redis_prefix(&db_prefix));
    let log = std::fs::File::create(dir.0.join("up.log")).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(["up", "--smtp-port", "0", "--db-prefix", &db_prefix])
        .args(args)
        .args(&ports)
        .arg("--dir")
        .arg(&dir.0)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Stopped (SIGTERM, which stops everything it started) if an assertion fails.
    let mut process = Guarded::spawn("notifyctl up", cmd)
        .unwrap()
        .with_grace(Duration::from_secs(30));
    let stack = wait_for_stack(&mut process, &dir.0);
    Up {
        process,
        stack,
        bin,
        _redis_keys: redis_keys,
        _databases: databases,
        dir,
    }
}

/// Waits for `notifyctl up`'s stack file, failing at once if the launcher exits.
fn wait_for_stack(up: &mut Guarded, dir: &Path) -> StackFile {
    // Inside nextest's 120 s kill, so this test's own message is what a failure shows.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(s) = StackFile::read(&dir.join("stack.json")) {
            return s;
        }
        if let Some(status) = up.try_wait() {
            let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
            panic!("notifyctl up exited early ({status}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "no stack.json after 90 s; see {}/logs",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Posts `body` through the stack's public URL as its service and polls the notification as
/// its admin until every delivery is `sent` (or 60 s pass: a deadline against hanging, not a
/// speed target — a freshly started stack on a loaded machine can take a while). Returns the
/// request id the answer carried and the last view; the caller asserts on the statuses.
#[allow(dead_code)] // Not every test binary including this module sends.
pub async fn send_until_sent(
    stack: &StackFile,
    body: serde_json::Value,
) -> (String, serde_json::Value) {
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/notifications", stack.url))
        .bearer_auth(&stack.tokens.service)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
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
        let all_sent = view["deliveries"]
            .as_array()
            .is_some_and(|ds| !ds.is_empty() && ds.iter().all(|d| d["status"] == "sent"));
        if all_sent || started.elapsed() > Duration::from_secs(60) {
            return (request_id, view);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
