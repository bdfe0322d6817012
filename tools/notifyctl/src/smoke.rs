//! `notifyctl smoke`: sends through a running stack (nginx → bff → … → SMTP), waits until
//! every delivery is `sent`, prints accept→sent latency and the RSS of every process.

use std::{path::PathBuf, time::Duration};

use crate::stack::StackFile;

#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    /// Notifications to send.
    #[arg(long, default_value_t = 50)]
    pub count: usize,
    #[arg(long, default_value = ".dev/stack.json")]
    pub stack: PathBuf,
    /// Give up waiting for `sent` after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn run(args: SmokeArgs) -> anyhow::Result<()> {
    let stack = StackFile::read(&args.stack)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut ids = Vec::with_capacity(args.count);
        for i in 0..args.count {
            let resp = http
                .post(format!("{}/v1/notifications", stack.url))
                .bearer_auth(&stack.tokens.service)
                .json(&serde_json::json!({
                    "recipients": [{ "user_id": stack.user_id }],
                    "category": "smoke",
                    "content": { "subject": format!("smoke {i}"), "text": "notifyctl smoke" }
                }))
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await?;
            anyhow::ensure!(status.as_u16() == 202, "send answered {status}: {body}");
            ids.push(body["id"].as_str().unwrap_or_default().to_owned());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        let mut latencies_ms = Vec::new();
        for id in &ids {
            loop {
                let view: serde_json::Value = http
                    .get(format!("{}/v1/notifications/{id}", stack.url))
                    .bearer_auth(&stack.tokens.service)
                    .send()
                    .await?
                    .json()
                    .await?;
                let d = &view["deliveries"][0];
                if d["status"] == "sent" {
                    let created = chrono::DateTime::parse_from_rfc3339(
                        view["created_at"].as_str().unwrap_or_default(),
                    )?;
                    let sent = chrono::DateTime::parse_from_rfc3339(
                        d["sent_at"].as_str().unwrap_or_default(),
                    )?;
                    latencies_ms.push((sent - created).num_milliseconds());
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{id} not sent in time: {view}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        latencies_ms.sort_unstable();
        let pct = |p: f64| latencies_ms[((latencies_ms.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "{} notifications sent; accept→sent ms: p50 {} p95 {} max {}",
            ids.len(),
            pct(0.5),
            pct(0.95),
            latencies_ms.last().copied().unwrap_or_default()
        );
        Ok::<_, anyhow::Error>(())
    })?;
    println!("RSS after the run:");
    for (name, pid) in &stack.processes {
        match rss_kib(*pid) {
            Some(kib) => println!("  {name:<22} {:>6.1} MiB", kib as f64 / 1024.0),
            None => println!("  {name:<22} (not running)"),
        }
    }
    Ok(())
}
