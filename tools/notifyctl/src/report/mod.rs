//! The load report: one self-contained HTML page (inline SVG plots, no script, nothing loaded
//! from anywhere) built from every `<name>.json` result of a directory, plus `main.svg` — the
//! throughput plot of the first result — for the docs.

use std::{fmt::Write as _, path::Path};

mod chart;

use chart::esc;
pub use chart::{Series, line_chart};

use crate::scenario::{Scenario, ScenarioResult};

/// pgbench's figure, measured in the same run (`make bench` writes it as `pgbench.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    pub tps: f64,
    pub command: String,
}

fn by_second<T: Copy + Into<f64>>(values: &[T]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64, (*v).into()))
        .collect()
}

fn as_f64(values: &[i64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v >= 0)
        .map(|(i, v)| (i as f64, *v as f64))
        .collect()
}

/// The throughput plot of one result (the docs' main figure).
pub fn throughput_chart(r: &ScenarioResult) -> String {
    let accepted: Vec<f64> = r
        .accepted_by_second
        .iter()
        .map(|a| (*a * r.recipients_per_request as u64) as f64)
        .collect();
    line_chart(
        &format!("{}: deliveries accepted and sent per second", r.name),
        "seconds since the load started",
        "deliveries / s",
        &[
            Series {
                name: "accepted",
                points: by_second(&accepted),
            },
            Series {
                name: "sent",
                points: by_second(
                    &r.sent_by_second
                        .iter()
                        .map(|v| *v as f64)
                        .collect::<Vec<_>>(),
                ),
            },
        ],
    )
}

fn section(r: &ScenarioResult) -> String {
    let mut s = String::new();
    let d = &r.deliveries;
    let _ = write!(
        s,
        "<section><h2 id=\"{id}\">{name}</h2><p>{scenario:?} on {channel:?}, {rate} requests/s × {recips} recipient(s) for {dur} s{paused}.</p>",
        id = esc(&r.name),
        name = esc(&r.name),
        scenario = r.scenario,
        channel = r.channel,
        rate = r.rate,
        recips = r.recipients_per_request,
        dur = r.duration_s,
        paused = if r.pause_workers {
            ", workers paused"
        } else {
            ""
        },
    );
    let lost_class = if d.lost == 0 { "ok" } else { "bad" };
    let _ = write!(
        s,
        "<table><tr><th>accepted</th><th>refused</th><th>unanswered</th><th>skipped</th><th>accept p50 / p99 / max</th><th>deliveries expected</th><th>terminal</th><th>lost</th><th>dispatched twice+</th><th>sent / s (load; overall)</th><th>accept → sent p50 / p99 / max</th><th>settled after</th></tr>\
         <tr><td>{} ({:.0}/s)</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} / {:.1} / {:.1} ms</td><td>{}</td><td>{}</td><td class=\"{lost_class}\">{}</td><td>{}</td><td>{:.0}; {:.0}</td><td>{:.1} / {:.1} / {:.1} ms</td><td>{}</td></tr></table>",
        r.accepted,
        r.accepted_per_s,
        r.refused,
        r.unanswered,
        r.skipped,
        r.accept_ms.p50,
        r.accept_ms.p99,
        r.accept_ms.max,
        d.expected,
        d.terminal,
        d.lost,
        d.redispatched,
        r.sent_per_s_during_load,
        r.sent_per_s_overall,
        r.accept_to_sent_ms.p50,
        r.accept_to_sent_ms.p99,
        r.accept_to_sent_ms.max,
        d.settled_after_s
            .map_or("not settled".to_owned(), |s| format!("{s:.1} s")),
    );
    if let Some(b) = &r.backlog {
        let _ = write!(
            s,
            "<p>Backlog: {} bulk deliveries accepted in {:.1} s (slowest request {:.0} ms), drained {}; bulk accept → sent p50 {:.0} ms, p99 {:.0} ms. The table's latency is the urgent notifications'.</p>",
            b.deliveries,
            b.accepted_in_s,
            b.max_request_ms,
            b.drained_in_s
                .map_or("—".to_owned(), |d| format!("{d:.1} s after it began")),
            b.accept_to_sent_ms.p50,
            b.accept_to_sent_ms.p99
        );
    }
    if !d.lost_notifications.is_empty() {
        let _ = write!(
            s,
            "<p class=\"bad\">Notifications with a lost delivery: {}</p>",
            esc(&d.lost_notifications.join(", "))
        );
    }
    s.push_str("<div class=\"plots\">");
    s.push_str(&throughput_chart(r));
    s.push_str(&line_chart(
        "accept latency by second (open loop, from when each request was due)",
        "seconds since the load started",
        "ms",
        &[
            Series {
                name: "p50",
                points: by_second(&r.accept_p50_by_second),
            },
            Series {
                name: "p99",
                points: by_second(&r.accept_p99_by_second),
            },
        ],
    ));
    s.push_str(&line_chart(
        "accept → sent distribution",
        "percentile",
        "ms",
        &[Series {
            name: "accept → sent",
            points: r
                .accept_to_sent_cdf
                .iter()
                .map(|(q, ms)| (q * 100.0, *ms))
                .collect(),
        }],
    ));
    s.push_str(&line_chart(
        "accept → sent p99 of the deliveries accepted in each second",
        "seconds since the load started",
        "ms",
        &[Series {
            name: "p99",
            points: by_second(&r.accept_to_sent_p99_by_second),
        }],
    ));
    s.push_str(&line_chart(
        "backlogs",
        "seconds since the run started",
        "rows",
        &[
            Series {
                name: "outbox unpublished",
                points: as_f64(&r.outbox_unpublished_by_second),
            },
            Series {
                name: "open deliveries",
                points: as_f64(&r.open_deliveries_by_second),
            },
        ],
    ));
    let cpu: Vec<Series> = r
        .processes
        .iter()
        .map(|(n, p)| Series {
            name: n,
            points: by_second(&p.cpu_percent),
        })
        .collect();
    s.push_str(&line_chart(
        "CPU per process (100 % = one core)",
        "seconds since the run started",
        "%",
        &cpu,
    ));
    let rss: Vec<Series> = r
        .processes
        .iter()
        .map(|(n, p)| Series {
            name: n,
            points: by_second(&p.rss_mib),
        })
        .collect();
    s.push_str(&line_chart(
        "RSS per process",
        "seconds since the run started",
        "MiB",
        &rss,
    ));
    s.push_str("</div><table><tr><th>process</th><th>mean CPU</th><th>max RSS</th></tr>");
    for (n, p) in &r.processes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.0} %</td><td>{:.1} MiB</td></tr>",
            esc(n),
            p.mean_cpu_percent(),
            p.max_rss_mib()
        );
    }
    s.push_str("</table></section>");
    s
}

/// The whole page for `results` (and pgbench's figure from the same run, when measured).
pub fn html(results: &[ScenarioResult], baseline: Option<&Baseline>) -> String {
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>notify load report</title><style>\
         body{font-family:sans-serif;margin:2rem;max-width:1600px;color:#222}table{border-collapse:collapse;margin:.5rem 0}\
         td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}.ok{color:#2a7a2a;font-weight:bold}\
         .bad{color:#b00;font-weight:bold}.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots svg{max-width:100%;height:auto}</style></head><body>\
         <h1>notify load report</h1><p>Made by <code>notifyctl load</code> / <code>make bench</code>; every figure comes from the run's JSON next to this file. \
         Accept latency is measured open loop from when each request was due; accept → sent is <code>deliveries.sent_at − created_at</code> from the platform's database.</p><ul>",
    );
    for r in results {
        let _ = write!(
            s,
            "<li><a href=\"#{0}\">{0}</a>: {1} accepted, lost {2}, accept p99 {3:.1} ms, accept → sent p99 {4:.1} ms</li>",
            esc(&r.name),
            r.accepted,
            r.deliveries.lost,
            r.accept_ms.p99,
            r.accept_to_sent_ms.p99
        );
    }
    s.push_str("</ul>");
    if let Some(b) = baseline {
        let _ = write!(
            s,
            "<p>Baseline in the same run: <code>{}</code> = <b>{:.0} tps</b> (one ~300-byte jsonb insert per transaction).",
            esc(&b.command),
            b.tps
        );
        for r in results.iter().filter(|r| r.scenario == Scenario::Intake) {
            let _ = write!(
                s,
                " {}: {:.0} accepted/s = <b>{:.2}×</b>.",
                esc(&r.name),
                r.accepted_per_s,
                r.accepted_per_s / b.tps.max(1.0)
            );
        }
        s.push_str("</p>");
    }
    for r in results {
        s.push_str(&section(r));
    }
    s.push_str("</body></html>\n");
    s
}

/// Reads every result in `dir` (oldest first) and writes `report.html` and `main.svg` there.
pub fn write_dir(dir: &Path) -> anyhow::Result<()> {
    let mut results: Vec<ScenarioResult> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(r) = serde_json::from_slice::<ScenarioResult>(&std::fs::read(&path)?)
        {
            results.push(r);
        }
    }
    results.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
    let baseline: Option<Baseline> = std::fs::read(dir.join("pgbench.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    std::fs::write(dir.join("report.html"), html(&results, baseline.as_ref()))?;
    if let Some(main) = results
        .iter()
        .max_by_key(|r| r.deliveries.expected)
        .map(throughput_chart)
    {
        std::fs::write(dir.join("main.svg"), main)?;
    }
    Ok(())
}

/// Renders `svg` (one chart) to `png`; see [`screenshot`].
pub fn png(svg: &Path, png: &Path) -> Option<std::path::PathBuf> {
    screenshot(svg, png, (760, 300))
}

/// Renders the page or image at `src` to `png` at `width` × `height` with Debian's chromium
/// when it is installed (headless, no sandbox, no background networking); `None` when it is
/// not or the render failed.
pub fn screenshot(
    src: &Path,
    png: &Path,
    (width, height): (u32, u32),
) -> Option<std::path::PathBuf> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).is_file())?;
    let src = std::path::absolute(src).ok()?;
    let png = std::path::absolute(png).ok()?;
    let status = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", src.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    (status.success() && png.is_file()).then_some(png)
}

#[cfg(test)]
mod tests {
    use super::{
        chart::{fmt_tick, nice_step},
        *,
    };

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(1_800.0, 5.0), 500.0);
        assert_eq!(nice_step(7.0, 5.0), 1.0);
        assert_eq!(fmt_tick(25_000.0), "25k");
        assert_eq!(fmt_tick(0.5), "0.5");
    }

    #[test]
    fn a_chart_is_svg_with_a_line_per_series_and_escaped_names() {
        let svg = line_chart(
            "a < b",
            "x",
            "y",
            &[
                Series {
                    name: "one",
                    points: vec![(0.0, 1.0), (1.0, 3.0)],
                },
                Series {
                    name: "two & three",
                    points: vec![(0.0, 2.0), (1.0, f64::NAN)],
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b") && svg.contains("two &amp; three"));
        assert!(!svg.contains("NaN"));
    }
}
