//! The providers of a local stack (every HTTP provider is the sink) and the workers' Redis keys.

use std::{path::Path, process::Command};

use anyhow::Context;
use devkit::http_sink::HttpSink;
use rand::Rng;

/// Every channel runs on the local stack; HTTP providers are the sink.
pub(super) const ALL_CHANNELS: &str = "[email,sms,push,telegram,webhook]";
/// What notification-service plans: every worker's channel and the in-app inbox, which it
/// stores itself.
pub(super) const PLANNED_CHANNELS: &str = "[email,sms,push,telegram,webhook,in_app]";

/// Worker settings pointing every HTTP provider at the sink, with dev credentials (the FCM
/// service account and the APNs key are the repository's test keys, written under `dir`).
pub(super) fn fake_providers(dir: &Path, sink: &HttpSink) -> anyhow::Result<Vec<(String, String)>> {
    let config = std::path::absolute(dir.join("config"))?;
    std::fs::create_dir_all(&config)?;
    let fcm_key = config.join("fcm-service-account.json");
    std::fs::write(
        &fcm_key,
        serde_json::to_vec_pretty(&serde_json::json!({
            "type": "service_account",
            "project_id": "notify-dev",
            "private_key": devkit::fixtures::RSA_PRIVATE_PEM,
            "client_email": "dev@notify-dev.iam.gserviceaccount.com",
            "token_uri": format!("{}/token", sink.url("fcm")),
        }))?,
    )?;
    let apns_key = config.join("apns-dev.p8");
    std::fs::write(&apns_key, devkit::fixtures::EC_P256_PRIVATE_PEM)?;
    let webhook_secret = {
        use base64::Engine as _;
        let bytes: [u8; 24] = rand::rng().random();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let env = [
        ("NOTIFY_SMS__BASE_URL", sink.url("sms")),
        ("NOTIFY_SMS__ACCOUNT_SID", "ACdev".into()),
        ("NOTIFY_SMS__AUTH_TOKEN", "dev".into()),
        // Quoted: figment reads an unquoted `+1500…` from the environment as a number.
        ("NOTIFY_SMS__FROM", "\"+15005550006\"".into()),
        ("NOTIFY_TELEGRAM__BASE_URL", sink.url("telegram")),
        ("NOTIFY_TELEGRAM__BOT_TOKEN", "dev".into()),
        ("NOTIFY_PUSH__FCM__BASE_URL", sink.url("fcm")),
        (
            "NOTIFY_PUSH__FCM__SERVICE_ACCOUNT_PATH",
            fcm_key.display().to_string(),
        ),
        ("NOTIFY_PUSH__APNS__BASE_URL", sink.url("apns")),
        ("NOTIFY_PUSH__APNS__TOPIC", "dev.notify.app".into()),
        ("NOTIFY_PUSH__APNS__KEY_ID", "DEVKEY0001".into()),
        ("NOTIFY_PUSH__APNS__TEAM_ID", "DEVTEAM001".into()),
        (
            "NOTIFY_PUSH__APNS__KEY_PATH",
            apns_key.display().to_string(),
        ),
        ("NOTIFY_WEBHOOK__SECRET", webhook_secret),
        ("NOTIFY_WEBHOOK__ALLOW_LOOPBACK", "true".into()),
    ];
    Ok(env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The Redis key prefix of every service of a stack (the workers' per-delivery dedupe keys,
/// kept 7 days; the bff's rate-limit budgets and idempotency answers; the profile cache):
/// `notify:dev:` for `make up`, one of its own for a stack with a database prefix, so two
/// stacks never share a budget and a test's or a benchmark's keys can be removed with it
/// ([`forget_redis_keys`]) instead of filling the shared Redis.
pub fn redis_prefix(db_prefix: &str) -> String {
    format!("notify:{db_prefix}dev:")
}

/// Deletes every key under `prefix` (SCAN + UNLINK in batches, without blocking Redis).
pub fn forget_redis_keys(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args([
            "-c",
            "redis-cli -u \"$1\" --scan --pattern \"$2*\" | xargs -r -n 1000 redis-cli -u \"$1\" unlink >/dev/null",
            "sh",
            redis_url,
            prefix,
        ])
        .status()
        .context("running redis-cli")?;
    anyhow::ensure!(
        status.success(),
        "deleting the Redis keys under {prefix} failed"
    );
    Ok(())
}
