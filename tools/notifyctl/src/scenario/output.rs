//! A scenario's result as JSON and as a one-paragraph summary.

use std::path::Path;

use super::ScenarioResult;

/// Writes `<out>/<name>.json` and rebuilds `<out>/report.html` from every result there.
pub fn write(out: &Path, result: &ScenarioResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{}.json", result.name)),
        serde_json::to_vec_pretty(result)?,
    )?;
    crate::report::write_dir(out)?;
    Ok(())
}

/// The lines printed after a run.
pub fn summary(r: &ScenarioResult) -> String {
    let mut s = format!(
        "{}: {} accepted ({:.0}/s), {} refused, {} unanswered, {} skipped; accept p50 {:.1} ms, p99 {:.1} ms\n",
        r.name,
        r.accepted,
        r.accepted_per_s,
        r.refused,
        r.unanswered,
        r.skipped,
        r.accept_ms.p50,
        r.accept_ms.p99
    );
    if r.refused > 0 {
        s += &format!(
            "  refused answered in p50 {:.1} ms, p99 {:.1} ms\n",
            r.refuse_ms.p50, r.refuse_ms.p99
        );
    }
    let d = &r.deliveries;
    s += &format!(
        "  deliveries: expected {}, terminal {}, LOST {} ({} open, {} missing), {} dispatched more than once; {:?}\n",
        d.expected, d.terminal, d.lost, d.open, d.missing, d.redispatched, d.by_status
    );
    s += &format!(
        "  sent {:.0}/s during the load, {:.0}/s first accept → last send; accept → sent p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
        r.sent_per_s_during_load,
        r.sent_per_s_overall,
        r.accept_to_sent_ms.p50,
        r.accept_to_sent_ms.p99,
        r.accept_to_sent_ms.max
    );
    if let Some(b) = &r.backlog {
        s += &format!(
            "  backlog: {} bulk deliveries accepted in {:.1} s (slowest request {:.0} ms), drained in {}\n",
            b.deliveries,
            b.accepted_in_s,
            b.max_request_ms,
            b.drained_in_s
                .map_or("—".to_owned(), |d| format!("{d:.1} s"))
        );
    }
    if let Some(b) = &r.backlog
        && let Some(planned) = b.planned_in_s
    {
        let cpu = &b.planning_cpu_percent;
        let total: f64 = cpu.values().sum();
        let pg = cpu.get("postgres").copied().unwrap_or_default();
        s += &format!(
            "  topic: {} subscribers subscribed in {:.1} s, planned in {planned:.1} s ({:.0} deliveries/s); while planning Postgres {pg:.0} % of a core = {:.0} % of the stack's CPU ({})\n",
            b.deliveries,
            b.subscribed_in_s.unwrap_or_default(),
            b.deliveries as f64 / planned.max(0.001),
            100.0 * pg / total.max(0.001),
            cpu.iter()
                .map(|(n, c)| format!("{n} {c:.0} %"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let rss: Vec<String> = r
        .processes
        .iter()
        .map(|(n, p)| {
            format!(
                "{n} {:.0} MiB/{:.0} %",
                p.max_rss_mib(),
                p.mean_cpu_percent()
            )
        })
        .collect();
    s += &format!("  max RSS / mean CPU: {}\n", rss.join(", "));
    s
}
