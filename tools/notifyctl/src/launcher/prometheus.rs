//! Prometheus for `notifyctl up`: Debian's `prometheus` scraping every process of the stack
//! every 2 s, with the alert rules of `deploy/prometheus/alerts.yml` (the ones compose runs).
//! Its job names are compose's (`notify-<service>`, both bff in `notify-bff`), so a query or a
//! dashboard works against either.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context;

/// The rules compose's Prometheus loads, relative to the repository root (where `make up`
/// runs).
pub const ALERT_RULES: &str = "deploy/prometheus/alerts.yml";

/// Debian's `prometheus` (the `prometheus` package; `make deps` installs it), if installed.
pub fn find_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// The scrape job of a process the launcher names `name` (`bff-1` → `notify-bff`).
pub fn job(name: &str) -> String {
    let service = match name.rsplit_once('-') {
        Some((base, n)) if n.chars().all(|c| c.is_ascii_digit()) => base,
        _ => name,
    };
    format!("notify-{service}")
}

/// `prometheus.yml` scraping each `/metrics` URL of `metrics` (process name → URL), with
/// `alerts.yml` beside it when `rules` is true.
pub fn config(metrics: &BTreeMap<String, String>, rules: bool) -> String {
    let mut jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, url) in metrics {
        let target = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        jobs.entry(job(name)).or_default().push(target);
    }
    let mut out = String::from(
        "# Written by `notifyctl up`: every process of the stack (see deploy/prometheus for compose).\n\
         global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n",
    );
    if rules {
        out.push_str("rule_files:\n  - alerts.yml\n");
    }
    out.push_str("scrape_configs:\n");
    for (job, targets) in jobs {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let _ = writeln!(
            out,
            "  - job_name: {job}\n    static_configs: [{{ targets: [{}] }}]",
            targets.join(", ")
        );
    }
    out
}

/// Starts Prometheus on `listen` with its config and data under `dir`, logging to
/// `<logs>/prometheus.log`. It stops with the launcher.
pub fn start(
    bin: &Path,
    dir: &Path,
    listen: SocketAddr,
    metrics: &BTreeMap<String, String>,
    logs: &Path,
) -> anyhow::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let rules = Path::new(ALERT_RULES);
    let with_rules = rules.is_file();
    if with_rules {
        std::fs::copy(rules, dir.join("alerts.yml"))?;
    }
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config(metrics, with_rules))?;
    let log = std::fs::File::create(logs.join("prometheus.log"))?;
    let mut cmd = Command::new(bin);
    devkit::die_with_parent(&mut cmd);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--storage.tsdb.retention.time=2d")
        .arg(format!("--web.listen-address={listen}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn().context("starting prometheus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bff_are_one_job_and_every_service_its_own() {
        let metrics: BTreeMap<String, String> = [
            ("bff-1", "http://127.0.0.1:7001/metrics"),
            ("bff-2", "http://127.0.0.1:7002/metrics"),
            ("users-service", "http://127.0.0.1:7003/metrics"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let text = config(&metrics, true);
        assert!(
            text.contains(
                "job_name: notify-bff\n    static_configs: [{ targets: [\"127.0.0.1:7001\", \"127.0.0.1:7002\"] }]"
            ),
            "{text}"
        );
        assert!(text.contains("job_name: notify-users-service\n"), "{text}");
        assert!(text.contains("rule_files:\n  - alerts.yml"), "{text}");
        assert_eq!(job("notification-service"), "notify-notification-service");
    }
}
