//! What operators look at is what the services export: every metric name in every Grafana
//! panel's query (deploy/grafana/dashboards) and every alert expression
//! (deploy/prometheus/alerts.yml) is in some service's `/metrics` on a running stack; the
//! bff counts intake by route and status on its own metrics port.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::{Options, Service, Stack};
use serde_json::{Value, json};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every `expr` of every panel (rows included) of every dashboard, by dashboard file.
fn dashboard_queries() -> BTreeMap<String, Vec<String>> {
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(repo("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut exprs = Vec::new();
            walk(&doc["panels"], &mut exprs);
            all.insert(path.display().to_string(), exprs);
        }
    }
    all
}

fn alert_expressions() -> Vec<String> {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The metric names a PromQL expression reads: identifiers outside quoted label values that
/// start with the platform's (`notify_`) or the process collector's (`process_`) prefix.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                unquoted.push(' ');
            }
            None => unquoted.push(c),
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("notify_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The sample names an OpenMetrics exposition can hold, from its `# TYPE` lines.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

#[test]
fn names_are_read_outside_label_values() {
    let names = metric_names(
        r#"sum by (le) (rate(notify_a_bucket{route="/notify_not_a_metric", x=~"process_no"}[1m])) / process_cpu_seconds_total"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["notify_a_bucket", "process_cpu_seconds_total"]
    );
    let exported = exported_names("# TYPE notify_x counter\n# TYPE notify_h histogram\n");
    assert!(exported.contains("notify_x_total") && exported.contains("notify_h_bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_dashboard_or_alert_reads_is_exported() {
    let dashboards = dashboard_queries();
    assert!(
        !dashboards.is_empty(),
        "no dashboard in deploy/grafana/dashboards"
    );
    // What each query and alert reads, with where it is read.
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (file, exprs) in &dashboards {
        assert!(exprs.len() >= 10, "{file} has only {} queries", exprs.len());
        for e in exprs {
            let names = metric_names(e);
            assert!(!names.is_empty(), "{file}: `{e}` reads no metric");
            for n in names {
                wanted.entry(n).or_insert_with(|| format!("{file}: {e}"));
            }
        }
    }
    for e in alert_expressions() {
        for n in metric_names(&e) {
            wanted
                .entry(n)
                .or_insert_with(|| format!("alerts.yml: {e}"));
        }
    }
    assert!(wanted.len() >= 15, "{wanted:?}");

    // A deployment with a second SMTP relay: the failover panel's series exist only where
    // a channel has a provider to fail over to.
    let secondary = devkit::smtp::SmtpSink::start(0, None).unwrap();
    let stack = Stack::start(Options {
        workers: workers::Config {
            email: workers::config::EmailConfig {
                secondary_smtp_url: Some(secondary.url()),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    stack
        .send_settled(json!({
            "recipients": [{ "email": "metrics@example.com" }],
            "category": "report",
            "content": { "subject": "Metrics", "text": "counted" }
        }))
        .await
        .unwrap();
    let services = [
        Service::Bff,
        Service::Users,
        Service::Notifications,
        Service::Workers,
        Service::Repeater,
    ];
    // The lag gauges come from the repeater's scan (every 0.5 s here): wait for one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let repeater = stack.metrics(Service::Repeater).await.unwrap();
        if repeater.contains("notify_repeater_dispatch_lag_messages{")
            && repeater.contains("notify_repeater_status_lag_messages{")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repeater's scan set no lag in 30 s:\n{repeater}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut exported = BTreeSet::new();
    for s in services {
        let text = stack.metrics(s).await.unwrap();
        assert!(
            text.contains("process_resident_memory_bytes "),
            "{s:?} exports no RSS:\n{text}"
        );
        exported.extend(exported_names(&text));
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(n, _)| !exported.contains(*n))
        .map(|(n, at)| format!("{n} (read by {at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "read but exported by no service:\n{}",
        missing.join("\n")
    );

    // The intake panels' series: the bff counted the accepted request by its route pattern.
    let bff = stack.metrics(Service::Bff).await.unwrap();
    // Exactly the one request the test sent (a line, not a prefix: `… 1`, not any count).
    assert!(
        bff.lines().any(|l| l
            == r#"notify_http_requests_total{method="POST",route="/v1/notifications",status="202"} 1"#),
        "{bff}"
    );
    // Every channel × outcome of the configured providers is there from the start.
    let workers = stack.metrics(Service::Workers).await.unwrap();
    assert!(
        workers.contains(
            r#"notify_worker_sends_total{channel="email",provider="smtp",outcome="invalid_address"} 0"#
        ),
        "{workers}"
    );
    // The public port does not serve the bff's metrics.
    let (status, _) = stack
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(status, 404);
}
