//! The idempotency fast path: completed `POST /v1/notifications` answers cached in Redis for
//! 24 h per (caller, key), so a replay is answered without reaching notification-service.
//! Postgres (in notification-service) stays the source of truth: a cache miss, or Redis being
//! down, simply forwards the request, and notification-service replays or refuses it.

use common::{idempotency::TTL_SECS, redis::RedisConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

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

    pub async fn put(&self, caller: &str, key: &str, entry: &Entry) {
        let Ok(json) = serde_json::to_string(entry) else {
            return;
        };
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
