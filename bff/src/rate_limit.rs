//! Per-principal rate limits in Redis with GCRA, in one atomic script.
//!
//! The script reads Redis's own clock (`TIME`), so every bff instance agrees on time and the
//! limit holds across instances. If Redis is unreachable the request is let through (logged):
//! an outage of the limiter must not become an outage of the API.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{HeaderValue, StatusCode, header, request::Parts},
};
use common::{
    auth::{Principal, Role},
    problem::ApiError,
    redis::RedisConfig,
};

use crate::{
    AppState,
    config::{Limit, RateLimitConfig},
};

/// ARGV: the period (ms), the requests it allows, and what this request costs (1, or a
/// batch's item count, at most the limit).
const GCRA: &str = r#"
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval * cost
local diff = new_tat - now
if diff > period then
  return {0, math.ceil(diff - period)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(diff))
return {1, math.floor((period - diff) / interval)}
"#;

pub struct RateLimiter {
    redis: redis::aio::ConnectionManager,
    script: redis::Script,
    cfg: RateLimitConfig,
    keys: RedisConfig,
}

/// The verdict for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed { remaining: u64 },
    Limited { retry_after: Duration },
}

impl RateLimiter {
    pub fn new(
        redis: redis::aio::ConnectionManager,
        cfg: RateLimitConfig,
        keys: RedisConfig,
    ) -> Self {
        Self {
            redis,
            script: redis::Script::new(GCRA),
            cfg,
            keys,
        }
    }

    fn limit(&self, role: Role) -> Limit {
        match role {
            Role::User => self.cfg.user,
            Role::Service => self.cfg.service,
            Role::Admin => self.cfg.admin,
        }
    }

    /// Counts `cost` requests of `principal` at once (a batch of that many notifications); a
    /// cost above the limit counts as the limit, so a batch larger than the burst still passes
    /// after a quiet period.
    pub async fn charge(&self, principal: &Principal, cost: u64) -> redis::RedisResult<Verdict> {
        let limit = self.limit(principal.role());
        let key = self.keys.key(&format!(
            "rl:{}:{}",
            principal.role().as_str(),
            principal.subject()
        ));
        let (allowed, value): (i64, i64) = self
            .script
            .key(key)
            .arg(limit.period_secs.saturating_mul(1000))
            .arg(limit.requests.max(1))
            .arg(cost.clamp(1, u64::from(limit.requests.max(1))))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(if allowed == 1 {
            Verdict::Allowed {
                remaining: value.max(0) as u64,
            }
        } else {
            Verdict::Limited {
                retry_after: Duration::from_millis(value.max(0) as u64),
            }
        })
    }
}

/// An authenticated caller within their rate limit. Handlers take this instead of
/// [`Principal`].
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        admit(state, &principal, 1).await?;
        Ok(Caller(principal))
    }
}

/// Counts `cost` requests of `principal` against its limit (when limits are on): 429 with
/// `Retry-After` over it. If Redis is unreachable the request passes (logged).
pub async fn admit(state: &AppState, principal: &Principal, cost: u64) -> Result<(), ApiError> {
    let Some(limiter) = &state.limiter else {
        return Ok(());
    };
    match limiter.charge(principal, cost).await {
        Ok(Verdict::Allowed { .. }) => Ok(()),
        Ok(Verdict::Limited { retry_after }) => Err(too_many(retry_after)),
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
            Ok(())
        }
    }
}

fn too_many(retry_after: Duration) -> ApiError {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests for this principal; retry in {secs} s"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
}

/// Shared limiter handle.
pub type SharedLimiter = Option<Arc<RateLimiter>>;
