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
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "notify:".into(),
        }
    }
}

impl RedisConfig {
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.key_prefix)
    }
}

/// A multiplexed connection that reconnects by itself.
pub async fn connect(cfg: &RedisConfig) -> anyhow::Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(cfg.url.as_str())?;
    Ok(redis::aio::ConnectionManager::new(client).await?)
}

/// Readiness check.
pub async fn ping(conn: &mut redis::aio::ConnectionManager) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
