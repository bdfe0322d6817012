//! `notifyctl dashboard`: a Grafana dashboard's panels drawn from a Prometheus without Grafana
//! (decision 0023). Reads the dashboard JSON (`deploy/grafana/dashboards/*.json`), runs each
//! panel's queries over the last minutes with `query_range`, and writes one HTML page of SVG
//! charts laid out as the dashboard's grid — plus a PNG of it when Debian's chromium is
//! installed. The queries are the dashboard's own, so what the page shows is what Grafana
//! would plot from the same Prometheus.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context;
use serde_json::Value;

use crate::report::{Series, line_chart};

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// The Prometheus to query (`make up` starts one on 9091).
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    pub prometheus: String,
    /// The Grafana dashboard to draw.
    #[arg(long, default_value = "deploy/grafana/dashboards/notify-overview.json")]
    pub dashboard: PathBuf,
    /// How far back to plot, in minutes.
    #[arg(long, default_value_t = 15)]
    pub minutes: u32,
    /// Where `dashboard.html` (and `dashboard.png`) go.
    #[arg(long, default_value = ".dev/dashboard")]
    pub out: PathBuf,
}

/// One panel's query as the dashboard states it.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub expr: String,
    pub legend: String,
}

/// One graph panel: title, unit, queries and where it sits on the 24-column grid.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub queries: Vec<Query>,
    pub x: u64,
    pub y: u64,
    pub w: u64,
}

/// The graph panels of a dashboard (rows flattened), in grid order.
pub fn panels(dashboard: &Value) -> Vec<Panel> {
    fn walk(panels: &Value, out: &mut Vec<Panel>) {
        for p in panels.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
                continue;
            }
            let queries: Vec<Query> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    Some(Query {
                        expr: t["expr"].as_str()?.to_owned(),
                        legend: t["legendFormat"].as_str().unwrap_or_default().to_owned(),
                    })
                })
                .collect();
            if queries.is_empty() {
                continue;
            }
            out.push(Panel {
                title: p["title"].as_str().unwrap_or_default().to_owned(),
                unit: p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("short")
                    .to_owned(),
                queries,
                x: p["gridPos"]["x"].as_u64().unwrap_or(0),
                y: p["gridPos"]["y"].as_u64().unwrap_or(0),
                w: p["gridPos"]["w"].as_u64().unwrap_or(12),
            });
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out.sort_by_key(|p| (p.y, p.x));
    out
}

/// Grafana's `{{label}}` legend with a series' labels (an empty legend is the label set).
pub fn legend(format: &str, labels: &serde_json::Map<String, Value>) -> String {
    if format.is_empty() {
        let parts: Vec<String> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        return format!("{{{}}}", parts.join(", "));
    }
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                out.push_str(labels.get(key).and_then(Value::as_str).unwrap_or_default());
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a unit's values are divided by to plot, and the axis label.
fn scale(unit: &str) -> (f64, &'static str) {
    match unit {
        "bytes" => (1024.0 * 1024.0, "MiB"),
        "s" => (0.001, "ms"),
        "percentunit" => (0.01, "%"),
        "reqps" => (1.0, "requests/s"),
        "ops" => (1.0, "per second"),
        _ => (1.0, ""),
    }
}

/// At most this many lines per chart (the largest); the rest are counted under the chart.
const MAX_SERIES: usize = 10;

/// One panel's chart: every query over `[start, end]`, all-zero series left out.
async fn chart(
    http: &reqwest::Client,
    prometheus: &str,
    panel: &Panel,
    (start, end, step): (f64, f64, f64),
) -> anyhow::Result<String> {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut hidden = 0;
    let (div, y_label) = scale(&panel.unit);
    for q in &panel.queries {
        let answer: Value = http
            .get(format!("{prometheus}/api/v1/query_range"))
            .query(&[
                ("query", q.expr.as_str()),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
                ("step", &step.to_string()),
            ])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            answer["status"] == "success",
            "`{}`: {}",
            q.expr,
            answer["error"]
        );
        for r in answer["data"]["result"].as_array().into_iter().flatten() {
            let labels = r["metric"].as_object().cloned().unwrap_or_default();
            let points: Vec<(f64, f64)> = r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| {
                    let t = v[0].as_f64()?;
                    let y = v[1].as_str()?.parse::<f64>().ok()?;
                    Some(((t - start) / 60.0, y / div))
                })
                .collect();
            if points.iter().all(|(_, y)| *y == 0.0 || !y.is_finite()) {
                hidden += 1;
                continue;
            }
            lines.push((legend(&q.legend, &labels), points));
        }
    }
    let peak = |p: &[(f64, f64)]| p.iter().map(|(_, y)| *y).fold(0.0, f64::max);
    lines.sort_by(|a, b| peak(&b.1).total_cmp(&peak(&a.1)));
    if lines.len() > MAX_SERIES {
        hidden += lines.len() - MAX_SERIES;
        lines.truncate(MAX_SERIES);
    }
    let series: Vec<Series> = lines
        .iter()
        .map(|(name, points)| Series {
            name,
            points: points.clone(),
        })
        .collect();
    let mut html = line_chart(&panel.title, "minutes", y_label, &series);
    if hidden > 0 {
        let _ = write!(
            html,
            r#"<p class="note">{hidden} series not drawn (all zero, or beyond the {MAX_SERIES} largest)</p>"#
        );
    }
    Ok(html)
}

/// Draws the dashboard; returns the HTML file (and the PNG when chromium made one).
pub fn run(args: &DashboardArgs) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let doc: Value = serde_json::from_slice(
        &std::fs::read(&args.dashboard)
            .with_context(|| format!("reading {}", args.dashboard.display()))?,
    )?;
    let title = doc["title"].as_str().unwrap_or("dashboard").to_owned();
    let panels = panels(&doc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let end = chrono::Utc::now().timestamp() as f64;
    let start = end - f64::from(args.minutes.max(1)) * 60.0;
    let step = ((end - start) / 180.0).max(1.0).round();
    let prometheus = args.prometheus.trim_end_matches('/');
    let charts: Vec<String> = rt.block_on(async {
        let mut out = Vec::new();
        for p in &panels {
            out.push(
                chart(&http, prometheus, p, (start, end, step))
                    .await
                    .with_context(|| format!("panel \"{}\" from {prometheus}", p.title))?,
            );
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    std::fs::create_dir_all(&args.out)?;
    let html_path = args.out.join("dashboard.html");
    std::fs::write(
        &html_path,
        page(&title, &panels, &charts, args.minutes, prometheus),
    )?;
    let png_path = args.out.join("dashboard.png");
    let rows = panels
        .iter()
        .map(|p| p.y)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let png = crate::report::screenshot(&html_path, &png_path, (1560, 90 + 350 * rows as u32));
    Ok((html_path, png))
}

fn page(title: &str, panels: &[Panel], charts: &[String], minutes: u32, source: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let mut rows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, c) in panels.iter().zip(charts) {
        rows.entry(p.y).or_default().push(format!(
            r#"<figure style="flex: {w} 1 0">{c}</figure>"#,
            w = p.w
        ));
    }
    let mut body = String::new();
    for figures in rows.values() {
        let _ = write!(body, r#"<div class="row">{}</div>"#, figures.join(""));
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body {{ font-family: sans-serif; margin: 16px; background: #f4f5f5; }}
h1 {{ font-size: 18px; margin: 0 0 12px; }} .src {{ color: #555; font-size: 12px; }}
.row {{ display: flex; gap: 12px; margin-bottom: 12px; }}
figure {{ margin: 0; background: #fff; border: 1px solid #ddd; padding: 4px; min-width: 0; }}
figure svg {{ width: 100%; height: auto; max-height: 320px; }} .note {{ color: #666; font-size: 11px; margin: 2px 6px; }}
</style></head><body><h1>{t}</h1><p class="src">last {minutes} min from {s}; the panels and queries of the Grafana dashboard, drawn by notifyctl dashboard</p>{body}</body></html>
"#,
        t = esc(title),
        s = esc(source)
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn legends_take_labels_and_panels_come_in_grid_order() {
        let labels = serde_json::json!({ "channel": "email", "outcome": "sent" });
        let labels = labels.as_object().unwrap();
        assert_eq!(legend("{{channel}} {{ outcome }}", labels), "email sent");
        assert_eq!(legend("", labels), "{channel=email, outcome=sent}");
        let doc = serde_json::json!({ "panels": [
            { "type": "timeseries", "title": "b", "gridPos": { "x": 12, "y": 1, "w": 12 },
              "targets": [{ "expr": "up", "legendFormat": "{{job}}" }] },
            { "type": "row", "title": "r", "panels": [
                { "type": "timeseries", "title": "a", "gridPos": { "x": 0, "y": 1, "w": 12 },
                  "fieldConfig": { "defaults": { "unit": "bytes" } },
                  "targets": [{ "expr": "x" }] } ] }
        ] });
        let p = panels(&doc);
        assert_eq!(
            p.iter().map(|p| p.title.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(p[0].unit, "bytes");
    }

    /// The repository's dashboard: every panel has a query and a title.
    #[test]
    fn the_overview_dashboard_has_titled_panels_with_queries() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/grafana/dashboards/notify-overview.json");
        let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let p = panels(&doc);
        assert!(p.len() >= 12, "{}", p.len());
        assert!(
            p.iter()
                .all(|p| !p.title.is_empty() && !p.queries.is_empty())
        );
    }
}
