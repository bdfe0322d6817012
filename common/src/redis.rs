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

/// How full the Redis a service uses is: `INFO memory`'s `used_memory` and `maxmemory`, read
/// every `every`, as `notify_redis_memory_used_bytes` and `notify_redis_memory_max_bytes`
/// (0: no limit), and whether it evicts keys when full (`notify_redis_evicting`: 1 unless
/// `maxmemory-policy` is `noeviction`). A full Redis stops sending (no claim can be written)
/// and an evicting one can drop a claim, so a send goes out twice: the alert
/// `NotifyRedisMemoryHigh` fires at 80 %. Read failures are logged and leave the last values.
pub fn spawn_memory_gauge(
    conn: redis::aio::ConnectionManager,
    registry: &crate::metrics::Registry,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use crate::metrics::Gauge;
    let (used, max, evicting): (Gauge, Gauge, Gauge) = Default::default();
    registry.register(
        "notify_redis_memory_used_bytes",
        "Memory the Redis this service uses holds (INFO memory used_memory)",
        used.clone(),
    );
    registry.register(
        "notify_redis_memory_max_bytes",
        "That Redis's maxmemory (0: no limit)",
        max.clone(),
    );
    registry.register(
        "notify_redis_evicting",
        "1 when that Redis evicts keys when full (maxmemory-policy is not noeviction)",
        evicting.clone(),
    );
    tokio::spawn(async move {
        let mut conn = conn;
        loop {
            match memory(&mut conn).await {
                Ok((u, m, policy)) => {
                    used.set(u);
                    max.set(m);
                    evicting.set(i64::from(policy != "noeviction"));
                }
                Err(e) => tracing::debug!(error = %e, "reading Redis memory failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// `(used_memory, maxmemory, maxmemory_policy)` from `INFO memory`.
async fn memory(
    conn: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<(i64, i64, String)> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .map(str::to_owned)
    };
    let number = |name: &str| field(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((
        number("used_memory"),
        number("maxmemory"),
        field("maxmemory_policy").unwrap_or_default(),
    ))
}
