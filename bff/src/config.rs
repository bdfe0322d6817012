//! bff settings. Every field has a default; see `config/bff.example.toml`.

use common::{auth::JwtConfig, http::HttpConfig, redis::RedisConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub jwt: JwtConfig,
    pub upstreams: UpstreamsConfig,
    /// Shared by every bff instance: rate-limit state.
    pub redis: RedisConfig,
    pub rate_limits: RateLimitConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::with_port(8080),
            jwt: JwtConfig::default(),
            upstreams: UpstreamsConfig::default(),
            redis: RedisConfig::default(),
            rate_limits: RateLimitConfig::default(),
        }
    }
}

/// Where the services behind the bff are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpstreamsConfig {
    pub users_url: String,
    pub notifications_url: String,
    /// Per upstream call.
    pub timeout_ms: u64,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            users_url: "http://127.0.0.1:8081".into(),
            notifications_url: "http://127.0.0.1:8082".into(),
            timeout_ms: 15_000,
        }
    }
}

/// Requests per principal (token `sub` + role), shared across bff instances through Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub user: Limit,
    pub service: Limit,
    pub admin: Limit,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            user: Limit {
                requests: 120,
                period_secs: 60,
            },
            service: Limit {
                requests: 6000,
                period_secs: 60,
            },
            admin: Limit {
                requests: 600,
                period_secs: 60,
            },
        }
    }
}

/// `requests` per `period_secs`, smoothly (GCRA): a burst of `requests` is allowed after a
/// quiet period, then one request every `period / requests`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Limit {
    pub requests: u32,
    pub period_secs: u64,
}
