//! Redis connection setup. Every key a service writes starts with the configured prefix, so
//! tests (and deployments sharing one Redis) never see each other's keys.

use serde::Deserialize;

/// Redis settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    pub url: String,
    /// Prepended to every key.
    pub key_prefix: String,
    /// How long one command (and one connection attempt) may take. Every use of Redis here
    /// has a fallback or fails visibly, so during an outage a request must learn that Redis is
    /// gone in about this long — not hang in the client's reconnect loop (its default retries
    /// for ~13 s per command, and without a timeout a silent network waits forever).
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "notify:".into(),
            timeout_ms: 1_000,
        }
    }
}

impl RedisConfig {
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.key_prefix)
    }
}

/// A multiplexed connection that reconnects by itself, with bounded waits: a command or a
/// connection attempt gives up after `timeout_ms`, and a reconnect tries twice (100 ms and
/// 200 ms apart) before the command fails.
pub async fn connect(cfg: &RedisConfig) -> anyhow::Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(cfg.url.as_str())?;
    let timeout = std::time::Duration::from_millis(cfg.timeout_ms.max(1));
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_factor(50)
        .set_max_delay(500)
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    Ok(redis::aio::ConnectionManager::new_with_config(client, config).await?)
}

/// Readiness check.
pub async fn ping(conn: &mut redis::aio::ConnectionManager) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
