//! `notifyctl stats [--window 1h]`: deliveries per channel × status and accept → sent
//! latency over a window (`GET /v1/admin/stats`).

use std::collections::BTreeSet;

use api::admin::Stats;

use super::{As, Target, query, table};

#[derive(clap::Args, Debug, Clone)]
pub struct StatsArgs {
    /// How far back: 30s, 15m, 1h, 7d (at most 31d).
    #[arg(long, default_value = "1h")]
    pub window: String,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &StatsArgs) -> anyhow::Result<()> {
    let client = args.target.client(As::Admin)?;
    let stats: Stats = super::block_on(client.get(&format!(
        "/v1/admin/stats{}",
        query(&[("window", Some(args.window.clone()))])
    )))?;
    if args.target.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", render(&stats, &args.window));
    }
    Ok(())
}

/// One row per channel, one column per status that occurs, and a total; then the latency.
pub fn render(stats: &Stats, window: &str) -> String {
    let statuses: BTreeSet<&str> = stats
        .counts
        .values()
        .flat_map(|by_status| by_status.keys().map(String::as_str))
        .collect();
    let mut headers = vec!["CHANNEL"];
    headers.extend(statuses.iter().copied());
    headers.push("TOTAL");
    let headers: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let rows: Vec<Vec<String>> = stats
        .counts
        .iter()
        .map(|(channel, by_status)| {
            let mut row = vec![channel.clone()];
            row.extend(
                statuses
                    .iter()
                    .map(|s| by_status.get(*s).copied().unwrap_or(0).to_string()),
            );
            row.push(by_status.values().sum::<i64>().to_string());
            row
        })
        .collect();
    let mut out = format!("deliveries created in the last {window}\n");
    if rows.is_empty() {
        out.push_str("(none)\n");
    } else {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        out.push_str(&table::render(&headers, &rows));
    }
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
    out.push_str(&format!(
        "accept → sent: p50 {}  p95 {}  p99 {}\n",
        ms(stats.latency_ms.p50),
        ms(stats.latency_ms.p95),
        ms(stats.latency_ms.p99)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_per_status_that_occurs_and_zeros_where_a_channel_has_none() {
        let stats: Stats = serde_json::from_value(serde_json::json!({
            "window_secs": 3600,
            "counts": { "email": { "sent": 120, "dead": 2 }, "sms": { "sent": 7 } },
            "latency_ms": { "p50": 41.2, "p95": 90.0, "p99": null }
        }))
        .unwrap();
        assert_eq!(
            render(&stats, "1h"),
            "deliveries created in the last 1h\n\
             CHANNEL  DEAD  SENT  TOTAL\n\
             email    2     120   122\n\
             sms      0     7     7\n\
             accept → sent: p50 41 ms  p95 90 ms  p99 -\n"
        );
    }
}
