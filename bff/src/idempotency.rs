//! The idempotency fast path: completed `POST /v1/notifications` answers cached in Redis for
//! 24 h per (caller, key), so a replay is answered without reaching notification-service.
//! Postgres (in notification-service) stays the source of truth: a cache miss, or Redis being
//! down, simply forwards the request, and notification-service replays or refuses it.
//!
//! Only answers up to [`MAX_CACHED_BYTES`] are cached (a 202 carries at most 100 deliveries,
//! ~40 KB): Redis memory is shared with the workers' send claims, and a full Redis stops
//! sending. A larger answer is replayed from Postgres.

use common::{idempotency::TTL_SECS, redis::RedisConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// The largest answer kept in Redis (64 KiB).
pub const MAX_CACHED_BYTES: usize = 64 * 1024;

pub struct IdempotencyCache {
    redis: redis::aio::ConnectionManager,
    keys: RedisConfig,
}

/// A completed request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub hash: String,
    pub body: serde_json::Value,
}

impl IdempotencyCache {
    pub fn new(redis: redis::aio::ConnectionManager, keys: RedisConfig) -> Self {
        Self { redis, keys }
    }

    fn key(&self, caller: &str, key: &str) -> String {
        self.keys.key(&format!("idem:{caller}:{key}"))
    }

    pub async fn get(&self, caller: &str, key: &str) -> Option<Entry> {
        match self
            .redis
            .clone()
            .get::<_, Option<String>>(self.key(caller, key))
            .await
        {
            Ok(hit) => hit.and_then(|json| serde_json::from_str(&json).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "idempotency cache unavailable");
                None
            }
        }
    }

    /// Caches `entry` for 24 h, unless it is larger than [`MAX_CACHED_BYTES`].
    pub async fn put(&self, caller: &str, key: &str, entry: &Entry) {
        let Ok(json) = serde_json::to_string(entry) else {
            return;
        };
        if json.len() > MAX_CACHED_BYTES {
            tracing::debug!(
                bytes = json.len(),
                "idempotent answer too large to cache; Postgres replays it"
            );
            return;
        }
        if let Err(e) = self
            .redis
            .clone()
            .set_ex::<_, _, ()>(self.key(caller, key), json, TTL_SECS)
            .await
        {
            tracing::warn!(error = %e, "could not cache an idempotent response");
        }
    }
}
