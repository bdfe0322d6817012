//! `notifyctl tail`: every provider attempt as it is recorded, one line each, until Ctrl-C
//! (or `--count`). Follows `GET /v1/admin/attempts` by its cursor, so nothing is printed
//! twice or skipped, and keeps following through a deployment's restart.

use std::time::Duration;

use api::admin::{AttemptEvent, AttemptFeed};
use chrono::{DateTime, Utc};

use super::{As, Target, error_text, parse_time, query, status::is_unreachable, table};

#[derive(clap::Args, Debug, Clone)]
pub struct TailArgs {
    /// Start this far back (RFC 3339 or an age: 90s, 15m, 2h) instead of now.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Only attempts that did not succeed (any outcome but `sent`).
    #[arg(long)]
    pub failures: bool,
    /// Stop after this many attempts.
    #[arg(long)]
    pub count: Option<usize>,
    /// How often to ask when nothing new came, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &TailArgs) -> anyhow::Result<()> {
    let client = args.target.client(As::Admin)?;
    super::block_on(async {
        let mut cursor: Option<String> = None;
        let mut printed = 0usize;
        if !args.target.json {
            println!("{}", header());
        }
        loop {
            let q = match &cursor {
                Some(c) => query(&[("cursor", Some(c.clone())), ("limit", Some("500".into()))]),
                None => query(&[
                    ("since", args.since.map(|t| t.to_rfc3339())),
                    ("limit", Some("500".into())),
                ]),
            };
            let feed: AttemptFeed = match client.get(&format!("/v1/admin/attempts{q}")).await {
                Ok(f) => f,
                Err(e) if is_unreachable(&e) => {
                    eprintln!("notifyctl: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let full = feed.items.len() == 500;
            for e in feed.items.iter().filter(|e| wanted(args, e)) {
                if args.target.json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!("{}", line(e));
                }
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
            cursor = Some(feed.cursor);
            if !full {
                tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
            }
        }
    })
}

fn wanted(args: &TailArgs, e: &AttemptEvent) -> bool {
    args.channel.as_ref().is_none_or(|c| *c == e.channel)
        && (!args.failures || e.attempt.outcome != "sent")
}

const WIDTHS: [usize; 7] = [12, 8, 36, 3, 17, 8, 7];

fn header() -> String {
    row(&[
        "TIME",
        "CHANNEL",
        "DELIVERY",
        "#",
        "OUTCOME",
        "PROVIDER",
        "MS",
        "STATUS NOW / ERROR",
    ])
}

/// Fixed columns (the lines come one at a time, so widths cannot be measured).
fn row(cells: &[&str]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        out.push_str(cell);
        if let Some(w) = WIDTHS.get(i) {
            out.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()) + 2,
            ));
        }
    }
    out.trim_end().to_owned()
}

pub fn line(e: &AttemptEvent) -> String {
    let err = error_text(e.attempt.error.as_ref());
    let last = if err.is_empty() {
        format!("{} {}", e.status, e.address.as_deref().unwrap_or(""))
    } else {
        format!("{}  {err}", e.status)
    };
    row(&[
        &e.attempt.at.format("%H:%M:%S%.3f").to_string(),
        &e.channel,
        &e.delivery_id.to_string(),
        &e.attempt.attempt.to_string(),
        &e.attempt.outcome,
        &table::shorten(&e.attempt.provider, 8),
        &e.attempt.duration_ms.to_string(),
        last.trim_end(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_attempt_in_fixed_columns() {
        let e: AttemptEvent = serde_json::from_value(serde_json::json!({
            "delivery_id": "00000000-0000-0000-0000-000000000001",
            "notification_id": "00000000-0000-0000-0000-000000000002",
            "channel": "email",
            "address": "a@example.com",
            "status": "retrying",
            "recorded_at": "2026-12-02T10:00:00.5Z",
            "attempt": {
                "attempt": 1, "outcome": "transient_failure", "provider": "smtp",
                "error": { "code": "smtp_451", "message": "try later" },
                "duration_ms": 12, "at": "2026-12-02T10:00:00.25Z"
            }
        }))
        .unwrap();
        assert_eq!(
            line(&e),
            "10:00:00.250  email     00000000-0000-0000-0000-000000000001  1    transient_failure  smtp      12       retrying  smtp_451: try later"
        );
        assert!(header().starts_with("TIME          CHANNEL   DELIVERY"));
    }
}
