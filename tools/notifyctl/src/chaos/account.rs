//! After the load: wait until every accepted notification is terminal, then account — lost,
//! duplicates (and whether a kill explains each), how sending came back after each fault.

use std::{collections::HashMap, path::Path, time::Duration};

use tokio::time::Instant;

use super::{ChaosArgs, ChaosReport, FaultRecord, rig::Rig};
use crate::load;

/// The report of a finished load.
pub(super) async fn account(
    args: &ChaosArgs,
    rig: &std::sync::Arc<tokio::sync::Mutex<Rig>>,
    report: &load::Report,
    fault_log: Vec<(String, f64, f64)>,
    load_started: chrono::DateTime<chrono::Utc>,
    notify_url: &str,
) -> anyhow::Result<ChaosReport> {
    // Accounting.
    eprintln!("chaos: load done; waiting until every accepted notification is terminal …");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(notify_url)
        .await?;
    let ids: Vec<uuid::Uuid> = report
        .accepted
        .iter()
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    let settle_start = Instant::now();
    let settle_deadline = settle_start + Duration::from_secs(args.settle_secs);
    let terminal = loop {
        let terminal: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications n
             WHERE n.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id
                               AND d.status IN ('pending', 'queued', 'sending', 'retrying'))",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        if terminal as usize >= ids.len() || Instant::now() > settle_deadline {
            break terminal as u64;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settled_after_s = settle_start.elapsed().as_secs_f64();
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.status, count(*) FROM deliveries d WHERE d.notification_id = ANY($1) GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    let count = |s: &str| {
        counts
            .iter()
            .find(|(k, _)| k == s)
            .map_or(0, |(_, n)| *n as u64)
    };
    let sends_per_second: Vec<(f64, i64)> = sqlx::query_as(
        "SELECT extract(epoch FROM date_trunc('second', sent_at))::float8, count(*)
         FROM deliveries WHERE notification_id = ANY($1) AND sent_at IS NOT NULL GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;

    let rig = rig.lock().await;
    let mut per_delivery: HashMap<String, u32> = HashMap::new();
    for m in rig.smtp.mails() {
        let text = m.text();
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|rest| rest.split('.').next())
        {
            *per_delivery.entry(id.to_owned()).or_default() += 1;
        }
    }
    for (id, n) in rig.hooks.received.lock().expect("hooks").iter() {
        *per_delivery.entry(id.clone()).or_default() += *n;
    }
    let duplicates: u64 = per_delivery
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    let duplicates_unexplained = per_delivery
        .iter()
        .filter(|(id, n)| **n > 1 && !rig.in_flight_at_kills.contains(*id))
        .map(|(_, n)| u64::from(n - 1))
        .sum();
    // What the platform recorded about each delivery a provider got more than once: its
    // attempts and re-drives, to tell a kill's duplicate from a defect.
    let twice: Vec<uuid::Uuid> = per_delivery
        .iter()
        .filter(|(_, n)| **n > 1)
        .filter_map(|(id, _)| id.parse().ok())
        .take(100)
        .collect();
    let duplicated: Vec<(uuid::Uuid, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT d.id,
                COALESCE((SELECT json_agg(json_build_object('attempt', a.attempt, 'outcome', a.outcome,
                    'provider_message_id', a.provider_message_id, 'at', a.at) ORDER BY a.attempt)
                  FROM attempts a WHERE a.delivery_id = d.id), '[]'::json),
                COALESCE((SELECT json_agg(json_build_object('from', r.from_attempt, 'to', r.to_attempt,
                    'kind', r.kind, 'detail', r.detail, 'at', r.at) ORDER BY r.id)
                  FROM redrives r WHERE r.delivery_id = d.id), '[]'::json)
         FROM deliveries d WHERE d.id = ANY($1)",
    )
    .bind(&twice)
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    let duplicated: Vec<serde_json::Value> = duplicated
        .into_iter()
        .map(|(id, attempts, redrives)| {
            serde_json::json!({
                "delivery_id": id,
                "received": per_delivery.get(&id.to_string()).copied().unwrap_or(0),
                "in_flight_at_a_kill": rig.in_flight_at_kills.contains(&id.to_string()),
                "attempts": attempts,
                "redrives": redrives,
            })
        })
        .collect();

    let load_start_epoch = load_started.timestamp_millis() as f64 / 1000.0;
    // Deliveries sent in each second since the load started (by `sent_at`).
    let mut sent_by_second: Vec<u64> = Vec::new();
    for (t, n) in &sends_per_second {
        let rel = (t - load_start_epoch).floor();
        if rel >= 0.0 {
            let i = rel as usize;
            if sent_by_second.len() <= i {
                sent_by_second.resize(i + 1, 0);
            }
            sent_by_second[i] += *n as u64;
        }
    }
    // Seconds from a fault's end until a second sends at least half what the 10 s before
    // the fault sent per second (none when little was being sent before it).
    let recovered_after = |at: f64, lasted: f64| -> Option<f64> {
        let start = at.floor() as usize;
        let before: u64 = sent_by_second
            .iter()
            .skip(start.saturating_sub(10))
            .take(start.min(10))
            .sum();
        let before_rate = before as f64 / start.clamp(1, 10) as f64;
        if before_rate < 10.0 {
            return None;
        }
        let end = (at + lasted).ceil() as usize;
        sent_by_second
            .iter()
            .enumerate()
            .skip(end)
            .find(|(_, n)| **n as f64 >= before_rate / 2.0)
            .map(|(i, _)| (i - end) as f64)
    };
    let faults = fault_log
        .into_iter()
        .map(|(fault, at, lasted)| {
            let window = |from: f64, to: f64| -> (u64, u64, u64, f64) {
                let (mut acc, mut bad, mut n, mut max) = (0, 0, 0, 0.0f64);
                for (i, s) in report.seconds.iter().enumerate() {
                    let t = i as f64;
                    if t >= from.floor() && t < to.ceil().max(from.floor() + 1.0) {
                        acc += s.accepted;
                        bad += s.refused + s.failed + s.skipped;
                        n += 1;
                        max = max.max(s.max_ms);
                    }
                }
                (acc, bad, n.max(1), max)
            };
            let (acc, bad, secs, max) = window(at, at + lasted);
            let (before, _, before_secs, _) = window((at - 10.0).max(0.0), at);
            let sent: i64 = sends_per_second
                .iter()
                .filter(|(t, _)| {
                    let rel = t - load_start_epoch;
                    rel >= at.floor() && rel < (at + lasted).ceil().max(at.floor() + 1.0)
                })
                .map(|(_, n)| *n)
                .sum();
            FaultRecord {
                fault,
                at_s: at,
                lasted_s: lasted,
                accepted_per_s: acc as f64 / secs as f64,
                accepted_per_s_before: before as f64 / before_secs as f64,
                sent_per_s: sent as f64 / secs as f64,
                sent_recovered_after_s: recovered_after(at, lasted),
                refused: bad,
                max_accept_ms: max,
            }
        })
        .collect();
    let accepted = ids.len() as u64;
    let out = ChaosReport {
        rate: args.rate,
        duration_s: args.duration_secs,
        failure_percent: rig.failure_percent,
        accepted,
        refused: report.refused,
        unanswered: report.failed,
        skipped: report.skipped,
        terminal,
        lost: accepted - terminal.min(accepted),
        sent: count("sent"),
        dead: count("dead"),
        expired: count("expired"),
        duplicates,
        kills: rig.kills,
        in_flight_at_kills: rig.in_flight_at_kills.len() as u64,
        duplicates_unexplained,
        accept_p50_ms: report.quantile_ms(0.5),
        accept_p99_ms: report.quantile_ms(0.99),
        settled_after_s,
        faults,
        sent_by_second,
        duplicated,
    };
    std::fs::write(
        args.dir.join("report.json"),
        serde_json::to_vec_pretty(&out)?,
    )?;
    print_report(&out, &args.dir.join("report.json"));
    Ok(out)
}

pub(super) fn print_report(r: &ChaosReport, path: &Path) {
    println!();
    println!(
        "{:<86} {:>7} {:>7} {:>9} {:>9} {:>8} {:>10} {:>9}",
        "fault", "at s", "lasted", "acc/s", "acc/s pre", "sent/s", "sends back", "refused"
    );
    for f in &r.faults {
        println!(
            "{:<86} {:>7.1} {:>7.1} {:>9.1} {:>9.1} {:>8.1} {:>10} {:>9}",
            f.fault,
            f.at_s,
            f.lasted_s,
            f.accepted_per_s,
            f.accepted_per_s_before,
            f.sent_per_s,
            f.sent_recovered_after_s
                .map_or_else(|| "-".to_owned(), |s| format!("+{s:.0} s")),
            f.refused
        );
    }
    println!();
    println!(
        "accepted {}  terminal {}  LOST {}  (sent {}, dead {}, expired {})",
        r.accepted, r.terminal, r.lost, r.sent, r.dead, r.expired
    );
    println!(
        "duplicates {} (kills {}, sends in flight at the workers' kills {}; duplicates not in flight at a kill: {})",
        r.duplicates, r.kills, r.in_flight_at_kills, r.duplicates_unexplained
    );
    println!(
        "refused {}  unanswered {}  skipped {}  accept p50 {:.1} ms  p99 {:.1} ms  settled {:.0} s after the load",
        r.refused, r.unanswered, r.skipped, r.accept_p50_ms, r.accept_p99_ms, r.settled_after_s
    );
    println!(
        "the guarantee {}; report: {}",
        if r.holds() { "HOLDS" } else { "DOES NOT HOLD" },
        path.display()
    );
}
