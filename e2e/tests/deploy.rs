//! The deployment files hold against the code, checked here without a Docker engine:
//! docker-compose.yml parses; every `NOTIFY_…` variable it gives a service is a setting of
//! that service (its environment loaded through the service's own config loader, strictly);
//! every service has a health check and depends on what it talks to; images are pinned; the
//! topic-init job creates exactly the platform's topics; deploy/nginx.conf is the template
//! rendered for compose and passes `nginx -t`; Prometheus's config and alert rules pass
//! `promtool`, and each alert fires in `promtool test rules`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use devkit::nginx::{Listen, PerIpLimit};
use serde_yaml::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// docker-compose.yml with its `<<` merge keys applied.
fn compose() -> Value {
    let text = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    doc.apply_merge().unwrap();
    // Merges nested in merged mappings (`environment: { <<: *kafka-env, … }`).
    for (_, svc) in doc["services"].as_mapping_mut().unwrap().iter_mut() {
        svc.apply_merge().unwrap();
    }
    doc
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    doc["services"]
        .as_mapping()
        .expect("a services mapping")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn environment(svc: &Value) -> BTreeMap<String, String> {
    let Some(env) = svc.get("environment").and_then(Value::as_mapping) else {
        return BTreeMap::new();
    };
    env.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("environment value {other:?}"),
            };
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// `${VAR:?message}` / `${VAR:-default}` / `${VAR}` with `vars`' values.
fn interpolate(value: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed ${…}") + start;
        let expr = &rest[start + 2..end];
        let name = expr.split([':', '-', '?']).next().unwrap();
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("compose needs ${{{name}}}"));
        out.push_str(v);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn depends_on(svc: &Value) -> Vec<String> {
    match svc.get("depends_on") {
        None => Vec::new(),
        Some(Value::Sequence(s)) => s.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        Some(Value::Mapping(m)) => m.keys().map(|k| k.as_str().unwrap().to_owned()).collect(),
        Some(other) => panic!("depends_on {other:?}"),
    }
}

/// `binary`'s config loaded strictly from `env` alone.
fn load_as(binary: &str, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use common::config::load_strict_from;
    let vars = env.clone();
    match binary {
        "bff" => load_strict_from::<bff::Config>(None, vars).map(drop),
        "users-service" => load_strict_from::<users_service::Config>(None, vars).map(drop),
        "notification-service" => {
            load_strict_from::<notification_service::Config>(None, vars).map(drop)
        }
        "workers" => load_strict_from::<workers::Config>(None, vars).map(drop),
        "repeater" => load_strict_from::<repeater::Config>(None, vars).map(drop),
        other => panic!("not a binary of this workspace: {other}"),
    }
}

const BINARIES: [&str; 5] = [
    "bff",
    "users-service",
    "notification-service",
    "workers",
    "repeater",
];

#[test]
fn every_service_in_compose_is_configured_checked_and_ordered() {
    let doc = compose();
    let services = services(&doc);
    let vars = BTreeMap::from([(
        "NOTIFY_JWT__SECRET",
        "a-32-byte-secret-for-the-compose-test",
    )]);
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for required in [
        "nginx",
        "bff-1",
        "bff-2",
        "users-service",
        "notification-service",
        "workers",
        "repeater",
        "migrate-users",
        "migrate-notify",
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "kafka-init",
        "postgres",
        "redis",
        "redis-cache",
        "smtp",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    ] {
        assert!(names.contains(required), "compose has no {required}");
    }

    for (name, svc) in &services {
        // Pinned: a versioned image (never `latest`), or this repository's build.
        let image = svc["image"].as_str().unwrap_or_default();
        let built = svc.get("build").is_some();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            built
                || (!tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit())),
            "{name}: image {image:?} is not pinned to a version"
        );
        // A health check.
        let test = &svc["healthcheck"]["test"];
        assert!(
            test.as_sequence().is_some_and(|t| t.len() >= 2),
            "{name}: no health check"
        );
        // Every dependency exists.
        for dep in depends_on(svc) {
            assert!(
                names.contains(dep.as_str()),
                "{name} depends on unknown {dep}"
            );
        }
    }

    // Each service talks only to what it (transitively) depends on.
    let reachable = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(s) = todo.pop() {
            for d in depends_on(&services[&s]) {
                if seen.insert(d.clone()) {
                    todo.push(d);
                }
            }
        }
        seen
    };
    for (name, svc) in &services {
        let deps = reachable(name);
        for (key, value) in environment(svc) {
            if !key.starts_with("NOTIFY_") {
                continue;
            }
            for host in hosts_in(&value) {
                if names.contains(host.as_str()) && host != *name {
                    assert!(
                        deps.contains(&host),
                        "{name}: {key} names {host}, which it does not depend on"
                    );
                }
            }
        }
    }

    // Every NOTIFY_ variable is a setting of the service it is given to.
    let mut checked = BTreeSet::new();
    for (name, svc) in &services {
        let command: Vec<&str> = svc["command"]
            .as_sequence()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(binary) = command.first().filter(|b| BINARIES.contains(b)) else {
            continue;
        };
        let env: BTreeMap<String, String> = environment(svc)
            .into_iter()
            .map(|(k, v)| (k, interpolate(&v, &vars)))
            .collect();
        assert!(
            env.keys().all(|k| k.starts_with("NOTIFY_")),
            "{name}: {env:?}"
        );
        if let Err(e) = load_as(binary, &env) {
            panic!("{name} ({binary}): {e:#}");
        }
        // Its health check is its own binary's.
        let test: Vec<&str> = svc["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if command.get(1) == Some(&"serve") {
            assert_eq!(test, ["CMD", binary, "healthcheck"], "{name}");
        }
        checked.insert(*binary);
    }
    assert_eq!(checked, BINARIES.into_iter().collect(), "every binary runs");

    // Two bff behind nginx, which waits for them.
    let nginx_deps = depends_on(&services["nginx"]);
    assert!(nginx_deps.contains(&"bff-1".to_owned()) && nginx_deps.contains(&"bff-2".to_owned()));
}

/// Host names in a value like `postgres://postgres@postgres:5432/users`,
/// `kafka-1:9092,kafka-2:9092` or `http://users-service:8081`.
fn hosts_in(value: &str) -> Vec<String> {
    value
        .split([',', ' '])
        .filter_map(|part| {
            let part = part.split_once("://").map_or(part, |(_, r)| r);
            let part = part.rsplit_once('@').map_or(part, |(_, r)| r);
            let (host, port) = part.split_once(':')?;
            port.chars()
                .next()
                .filter(char::is_ascii_digit)
                .map(|_| host.to_owned())
        })
        .collect()
}

#[test]
fn the_topic_init_job_creates_every_topic_replicated() {
    let doc = compose();
    let init = &services(&doc)["kafka-init"];
    let topics: BTreeSet<String> = init["environment"]["TOPICS"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = common::events::all_topics().into_iter().collect();
    assert_eq!(topics, expected);
    let script = init["command"][0].as_str().unwrap();
    assert!(script.contains("--replication-factor 3"), "{script}");
    assert!(script.contains("min.insync.replicas=2"), "{script}");
    for broker in ["kafka-1", "kafka-2", "kafka-3"] {
        let env = &services(&doc)[broker]["environment"];
        assert_eq!(
            env["KAFKA_MIN_INSYNC_REPLICAS"].as_u64(),
            Some(2),
            "{broker}"
        );
        assert_eq!(
            env["KAFKA_DEFAULT_REPLICATION_FACTOR"].as_u64(),
            Some(3),
            "{broker}"
        );
    }
}

/// deploy/nginx.conf as the template renders it for compose.
fn compose_nginx_conf() -> String {
    devkit::nginx::render(
        Listen {
            http: "0.0.0.0:8080".parse().unwrap(),
            grpc: "0.0.0.0:9090".parse().unwrap(),
        },
        &["bff-1:8080", "bff-2:8080"],
        Path::new("/tmp/nginx"),
        PerIpLimit::default(),
    )
}

#[test]
fn deploy_nginx_conf_is_the_rendered_template_and_passes_nginx_t() {
    let path = repo("deploy/nginx.conf");
    let expected = compose_nginx_conf();
    if std::env::var_os("UPDATE_DEPLOY").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "deploy/nginx.conf is not the template rendered for compose: run \
         `UPDATE_DEPLOY=1 cargo nextest run -p e2e --test deploy` and commit it"
    );
    // nginx -t resolves upstream names: check it with them on loopback (the rest is the same).
    let dir = std::env::temp_dir().join(format!("notify-nginx-t-{}", uuid::Uuid::now_v7()));
    let local = expected
        .replace("server bff-1:8080", "server 127.0.0.1:18080")
        .replace("server bff-2:8080", "server 127.0.0.1:18081")
        .replace("/tmp/nginx", &dir.display().to_string())
        .replace("0.0.0.0:", "127.0.0.1:");
    let checked = devkit::nginx::check(&local, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    checked.unwrap();
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool_and_each_alert_fires() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
    // Every alert of alerts.yml is fired by a test.
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    let tests = std::fs::read_to_string(repo("deploy/prometheus/alerts_test.yml")).unwrap();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
    }
}

/// Prometheus scrapes each process that serves the API where its `/metrics` is: a compose
/// service, on the port of its `http.metrics_listen` (or `http.listen` without one); and every
/// service running one of the platform's binaries is scraped.
#[test]
fn prometheus_scrapes_every_service_where_its_metrics_are() {
    let services = services(&compose());
    let config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let mut scraped = BTreeSet::new();
    for job in config["scrape_configs"].as_sequence().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        if !name.starts_with("notify-") {
            continue;
        }
        for target in job["static_configs"][0]["targets"].as_sequence().unwrap() {
            let target = target.as_str().unwrap();
            let (host, port) = target.rsplit_once(':').unwrap();
            let svc = services
                .get(host)
                .unwrap_or_else(|| panic!("{name} scrapes {target}: no such compose service"));
            let env = environment(svc);
            let metrics_at = env
                .get("NOTIFY_HTTP__METRICS_LISTEN")
                .or_else(|| env.get("NOTIFY_HTTP__LISTEN"))
                .unwrap_or_else(|| panic!("{host} sets no NOTIFY_HTTP__LISTEN"));
            assert!(
                metrics_at.ends_with(&format!(":{port}")),
                "{name} scrapes {target}, but {host} serves /metrics on {metrics_at}"
            );
            scraped.insert(host.to_owned());
        }
    }
    for (name, svc) in &services {
        let binary = svc["command"][0].as_str().unwrap_or_default();
        let serves = svc["command"][1].as_str() == Some("serve");
        if serves
            && [
                "bff",
                "users-service",
                "notification-service",
                "workers",
                "repeater",
            ]
            .contains(&binary)
        {
            assert!(
                scraped.contains(name),
                "{name} runs `{binary} serve` but Prometheus does not scrape it"
            );
        }
    }
}
