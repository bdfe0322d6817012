//! Circuit breakers per provider, shared by every worker instance through Redis.
//!
//! A breaker is **closed** (the provider is tried), **open** (it is skipped until `open_secs`
//! have passed) or **half-open** (one probe at a time is let through; its success closes the
//! breaker, its failure opens it again). It opens after `consecutive_failures` transient
//! failures in a row (a timeout, a refused connection, 429, 5xx); any answer that shows the
//! provider is up — sent, or a refusal of this one message — resets the count. The state and
//! the clock are Redis's (one Lua script per decision, `TIME` for now), so every instance
//! agrees on it. When Redis cannot be asked, the breaker lets the request through: the
//! workers do not send without Redis anyway (decision 0004), and a breaker must never be what
//! stops a healthy provider.

use serde::Deserialize;

/// Breaker settings (`[breaker]`), the same for every provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Transient failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// How long an open breaker skips its provider before a probe may go through.
    pub open_secs: f64,
    /// How long a probe holds the half-open slot (longer than a provider's timeout).
    pub probe_timeout_secs: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            open_secs: 30.0,
            probe_timeout_secs: 15.0,
        }
    }
}

/// What a breaker says about the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: send.
    Closed,
    /// Half-open: this request is the probe.
    Probe,
    /// Open (or another probe is in flight): skip this provider.
    Open,
}

/// A breaker's state as a gauge value: 0 closed, 1 open, 2 half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

const ALLOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' then
  local untilms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if now < untilms then return 'open' end
  redis.call('HSET', KEYS[1], 'state', 'half')
  state = 'half'
end
if state == 'half' then
  local probe = tonumber(redis.call('HGET', KEYS[1], 'probe') or '0')
  if probe > now then return 'busy' end
  redis.call('HSET', KEYS[1], 'probe', now + tonumber(ARGV[1]))
  return 'probe'
end
return 'closed'
"#;

const RECORD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == 'ok' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'fails', 0, 'probe', 0)
  return 'closed'
end
if state == 'half' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[3]), 'fails', 0, 'probe', 0)
  return 'open'
end
if state == 'open' then return 'open' end
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
if fails >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[3]), 'fails', 0)
  return 'open'
end
return 'closed'
"#;

/// The breakers of one channel's providers.
#[derive(Clone)]
pub struct Breakers {
    redis: redis::aio::ConnectionManager,
    keys: common::redis::RedisConfig,
    cfg: BreakerConfig,
    allow: std::sync::Arc<redis::Script>,
    record: std::sync::Arc<redis::Script>,
}

impl Breakers {
    pub fn new(
        redis: redis::aio::ConnectionManager,
        keys: common::redis::RedisConfig,
        cfg: BreakerConfig,
    ) -> Self {
        Self {
            redis,
            keys,
            cfg,
            allow: std::sync::Arc::new(redis::Script::new(ALLOW)),
            record: std::sync::Arc::new(redis::Script::new(RECORD)),
        }
    }

    fn key(&self, provider: &str) -> String {
        self.keys.key(&format!("breaker:{provider}"))
    }

    /// Whether `provider` may be tried now (a probe when half-open).
    pub async fn allow(&self, provider: &str) -> Permit {
        let answer: redis::RedisResult<String> = self
            .allow
            .key(self.key(provider))
            .arg((self.cfg.probe_timeout_secs * 1000.0) as u64)
            .invoke_async(&mut self.redis.clone())
            .await;
        match answer.as_deref() {
            Ok("open" | "busy") => Permit::Open,
            Ok("probe") => Permit::Probe,
            Ok(_) => Permit::Closed,
            Err(e) => {
                tracing::warn!(error = %e, provider, "circuit breaker unavailable; trying the provider");
                Permit::Closed
            }
        }
    }

    /// Records what `provider` answered: `up` when it answered at all (sent, or refused this
    /// message), not when it failed transiently. Returns the state it left the breaker in.
    pub async fn record(&self, provider: &str, up: bool) -> State {
        let answer: redis::RedisResult<String> = self
            .record
            .key(self.key(provider))
            .arg(if up { "ok" } else { "fail" })
            .arg(self.cfg.consecutive_failures.max(1))
            .arg((self.cfg.open_secs * 1000.0) as u64)
            .invoke_async(&mut self.redis.clone())
            .await;
        match answer.as_deref() {
            Ok("open") => State::Open,
            Ok(_) => State::Closed,
            Err(e) => {
                tracing::warn!(error = %e, provider, "circuit breaker unavailable; outcome not counted");
                State::Closed
            }
        }
    }
}
