//! The operator's commands as an operator runs them: the `notifyctl` binary against a running
//! `notifyctl up`, through nginx — send and follow, tail, stats, a dead letter found and
//! re-driven, the token taken from the stack file or from `--url`/`NOTIFY_TOKEN`. Needs the
//! service binaries next to `notifyctl` (`make test` builds them first).

use std::{
    fs::File,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use devkit::process::Guarded;
use serde_json::{Value, json};

mod support;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Starts `notifyctl args…` with `env` (and neither NOTIFY_URL nor NOTIFY_TOKEN otherwise).
fn start(up: &support::Up, args: &[&str], env: &[(&str, &str)]) -> (Guarded, String) {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out = up.dir.0.join(format!("ctl-{n}"));
    let mut cmd = Command::new(&up.bin);
    cmd.args(args)
        .env_remove("NOTIFY_URL")
        .env_remove("NOTIFY_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(File::create(out.with_extension("out")).unwrap())
        .stderr(File::create(out.with_extension("err")).unwrap());
    (
        Guarded::spawn("notifyctl", cmd).unwrap(),
        out.display().to_string(),
    )
}

/// Waits for a started command (at most 90 s: a deadline against hanging, not a target).
fn finish((mut p, out): (Guarded, String), what: &str) -> Run {
    let status = p
        .wait_timeout(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("`notifyctl {what}` did not finish in 90 s"));
    Run {
        ok: status.success(),
        stdout: std::fs::read_to_string(format!("{out}.out")).unwrap(),
        stderr: std::fs::read_to_string(format!("{out}.err")).unwrap(),
    }
}

/// `notifyctl args… --stack <the test's stack>`.
fn ctl(up: &support::Up, args: &[&str]) -> Run {
    let stack = up.dir.0.join("stack.json");
    let mut all = args.to_vec();
    all.extend(["--stack", stack.to_str().unwrap()]);
    finish(start(up, &all, &[]), &args.join(" "))
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn an_operator_sends_follows_tails_and_redrives_from_the_command_line() {
    let up = support::up(&["--no-prometheus"], &[]);

    // Sent, and followed until settled: one JSON view per change, the last one completed.
    let sent = ctl(
        &up,
        &[
            "send",
            "--email",
            "ops@example.com",
            "--text",
            "hello",
            "--wait",
            "--json",
        ],
    );
    assert!(sent.ok, "{}", sent.stderr);
    let views = json_lines(&sent.stdout);
    let last = views.last().unwrap();
    assert_eq!(last["status"], "completed", "{}", sent.stdout);
    let id = last["id"].as_str().unwrap().to_owned();
    let delivery = last["deliveries"][0]["id"].as_str().unwrap().to_owned();

    // The table names the delivery and its status.
    let status = ctl(&up, &["status", &id]);
    assert!(status.ok, "{}", status.stderr);
    assert!(status.stdout.contains(&delivery), "{}", status.stdout);
    assert!(status.stdout.contains("completed"), "{}", status.stdout);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.contains("email") && l.contains("sent")),
        "{}",
        status.stdout
    );

    // Many from a JSON Lines file, through the batch route in batches of 100: one result per
    // item (a blank line skipped, a bad item refused alone, exit 1); again, every keyed item
    // replayed.
    let file = up.dir.0.join("items.jsonl");
    let mut items: Vec<String> = (0..248)
        .map(|i| {
            json!({ "recipients": [{ "email": format!("bulk{i}@example.com") }],
                    "category": "ops", "content": { "text": "bulk" },
                    "idempotency_key": format!("bulk-{i}") })
            .to_string()
        })
        .collect();
    items.insert(100, String::new());
    items.insert(
        150,
        json!({ "recipients": [], "category": "ops", "content": { "text": "x" } }).to_string(),
    );
    std::fs::write(&file, items.join("\n")).unwrap();
    let file = file.to_str().unwrap();
    let sent = ctl(&up, &["send", "--file", file, "--json"]);
    assert!(!sent.ok, "a refused item exits non-zero: {}", sent.stderr);
    let results = json_lines(&sent.stdout);
    assert_eq!(results.len(), 249, "{}", sent.stdout);
    let refused: Vec<&Value> = results.iter().filter(|r| r["status"] != 202).collect();
    assert_eq!(refused.len(), 1, "{}", sent.stdout);
    assert_eq!(refused[0]["line"], 151, "{}", sent.stdout);
    assert_eq!(refused[0]["problem"]["type"], "validation_failed");
    let again = ctl(&up, &["send", "--file", file, "--batch-size", "1000"]);
    assert!(
        again
            .stdout
            .contains("249 items: 0 accepted, 248 replayed, 1 refused"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("line 151: 422 validation_failed"),
        "{}",
        again.stdout
    );

    // tail from now shows the next failure as it happens (the stack's own welcome email to
    // its demo user may be recorded meanwhile: --failures leaves it out).
    let stack = up.dir.0.join("stack.json");
    let live = start(
        &up,
        &[
            "tail",
            "--failures",
            "--count",
            "1",
            "--stack",
            stack.to_str().unwrap(),
        ],
        &[],
    );
    // A webhook the sink does not serve: 404, a permanent failure, so a dead letter at once.
    let gone = up.stack.webhook_sink.replace("/webhook/hook", "/gone");
    let failed = ctl(
        &up,
        &[
            "send",
            "--webhook",
            &gone,
            "--text",
            "x",
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(
        !failed.ok,
        "a failed notification exits non-zero: {}",
        failed.stdout
    );
    assert!(failed.stderr.contains("ended failed"), "{}", failed.stderr);
    assert!(failed.stdout.contains("dead"), "{}", failed.stdout);
    assert!(
        failed.stdout.starts_with("request "),
        "the request id, to find the trace: {}",
        failed.stdout
    );
    let live = finish(live, "tail");
    assert!(live.ok, "{}", live.stderr);
    let mut lines = live.stdout.lines();
    assert!(lines.next().unwrap().starts_with("TIME"), "{}", live.stdout);
    let line = lines.next().unwrap();
    assert!(
        line.contains("webhook")
            && line.contains("permanent_failure")
            && line.contains("webhook_404"),
        "{line}"
    );

    // tail from the past shows it too, as JSON.
    let past = ctl(
        &up,
        &[
            "tail",
            "--since",
            "10m",
            "--failures",
            "--count",
            "1",
            "--json",
        ],
    );
    assert!(past.ok, "{}", past.stderr);
    let e = &json_lines(&past.stdout)[0];
    assert_eq!(
        (
            e["channel"].as_str(),
            e["status"].as_str(),
            e["attempt"]["error"]["code"].as_str()
        ),
        (Some("webhook"), Some("dead"), Some("webhook_404"))
    );

    // Found by its error code, then re-driven: not without consent, then with it.
    let dead = ctl(
        &up,
        &[
            "dead-letters",
            "list",
            "--error-code",
            "webhook_404",
            "--json",
        ],
    );
    assert!(dead.ok, "{}", dead.stderr);
    let dead: Vec<Value> = serde_json::from_str(&dead.stdout).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead_id = dead[0]["id"].as_str().unwrap().to_owned();
    let table = ctl(&up, &["dead-letters", "list", "--channel", "webhook"]);
    assert!(
        table.stdout.contains(&dead_id) && table.stdout.contains("webhook_404"),
        "{}",
        table.stdout
    );
    let nothing = ctl(&up, &["dead-letters", "redrive"]);
    assert!(
        !nothing.ok && nothing.stderr.contains("say which"),
        "{}",
        nothing.stderr
    );
    let asked = ctl(
        &up,
        &["dead-letters", "redrive", "--error-code", "webhook_404"],
    );
    assert!(
        !asked.ok && asked.stderr.contains("pass --yes"),
        "{}",
        asked.stderr
    );
    let dry = ctl(
        &up,
        &[
            "dead-letters",
            "redrive",
            "--error-code",
            "webhook_404",
            "--dry-run",
        ],
    );
    assert!(
        dry.ok && dry.stdout.contains("1 dead letters match"),
        "{}",
        dry.stdout
    );
    let redriven = ctl(
        &up,
        &[
            "dead-letters",
            "redrive",
            "--error-code",
            "webhook_404",
            "--yes",
            "--json",
        ],
    );
    assert!(redriven.ok, "{}", redriven.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&redriven.stdout).unwrap()["redriven"],
        1
    );
    // The new attempt fails the same way: attempt 2, dead again.
    let notification = dead[0]["notification_id"].as_str().unwrap();
    let again = ctl(
        &up,
        &[
            "status",
            notification,
            "--follow",
            "--timeout",
            "60",
            "--json",
        ],
    );
    assert!(!again.ok, "{}", again.stdout);
    let view = json_lines(&again.stdout).pop().unwrap();
    assert_eq!(view["deliveries"][0]["attempts"], 2, "{view}");

    // Stats from the stack file's admin token, and from --url with NOTIFY_TOKEN minted from the
    // deployment's secret (no stack file).
    let stats = ctl(&up, &["stats", "--window", "1h", "--json"]);
    assert!(stats.ok, "{}", stats.stderr);
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    assert!(
        stats["counts"]["email"]["sent"].as_i64() >= Some(1),
        "{stats}"
    );
    assert_eq!(stats["counts"]["webhook"]["dead"], 1, "{stats}");
    let minted = finish(
        start(
            &up,
            &[
                "token",
                "--role",
                "admin",
                "--sub",
                "ops",
                "--stack",
                "/nonexistent",
            ],
            &[("NOTIFY_JWT__SECRET", &up.stack.jwt.secret)],
        ),
        "token",
    );
    assert!(minted.ok, "{}", minted.stderr);
    let by_url = finish(
        start(
            &up,
            &["stats", "--url", &up.stack.url, "--stack", "/nonexistent"],
            &[("NOTIFY_TOKEN", minted.stdout.trim())],
        ),
        "stats --url",
    );
    assert!(by_url.ok, "{}", by_url.stderr);
    assert!(
        by_url.stdout.contains("CHANNEL") && by_url.stdout.contains("webhook"),
        "{}",
        by_url.stdout
    );

    // What goes wrong says what to do.
    let no_token = finish(start(&up, &["stats", "--url", &up.stack.url], &[]), "stats");
    assert!(
        !no_token.ok && no_token.stderr.contains("--url needs a token"),
        "{}",
        no_token.stderr
    );
    let bad_token = finish(
        start(
            &up,
            &["stats", "--url", &up.stack.url, "--token", "junk"],
            &[],
        ),
        "stats",
    );
    assert!(
        !bad_token.ok && bad_token.stderr.contains("401"),
        "{}",
        bad_token.stderr
    );
    let bad_window = ctl(&up, &["stats", "--window", "forever"]);
    assert!(
        !bad_window.ok && bad_window.stderr.contains("422") && bad_window.stderr.contains("window"),
        "{}",
        bad_window.stderr
    );
    // A service may send but not read the admin API.
    let as_service = finish(
        start(
            &up,
            &["dead-letters", "list", "--url", &up.stack.url],
            &[("NOTIFY_TOKEN", &up.stack.tokens.service)],
        ),
        "dead-letters list",
    );
    assert!(
        !as_service.ok && as_service.stderr.contains("403"),
        "{}",
        as_service.stderr
    );

    let completions = finish(start(&up, &["completions", "bash"], &[]), "completions");
    assert!(completions.ok, "{}", completions.stderr);
    assert!(
        completions.stdout.contains("dead-letters"),
        "completions name every command"
    );
}
