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
    /// The inbox streams (`GET /v1/me/inbox/stream`): caps and heartbeats.
    pub inbox: StreamConfig,
    /// Trace export over OTLP (off unless `otlp_endpoint` is set).
    pub telemetry: common::telemetry::TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            telemetry: Default::default(),
            http: HttpConfig {
                request_timeout_ms: 30_000,
                ..HttpConfig::with_port(8080)
            },
            jwt: JwtConfig::default(),
            upstreams: UpstreamsConfig::default(),
            redis: RedisConfig::default(),
            rate_limits: RateLimitConfig::default(),
            inbox: Default::default(),
        }
    }
}

/// Where the services behind the bff are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpstreamsConfig {
    pub users_url: String,
    pub notifications_url: String,
    /// Per upstream call. Ordered: the services' own request timeout (20 s) < this (25 s) <
    /// the bff's request timeout (30 s) < nginx's `proxy_read_timeout` (35 s), so a service
    /// answers (even "503, nothing was written") before anyone in front of it gives up.
    pub timeout_ms: u64,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            users_url: "http://127.0.0.1:8081".into(),
            notifications_url: "http://127.0.0.1:8082".into(),
            timeout_ms: 25_000,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller must never be told "retry" by a layer in front while the service behind it
    /// is still working (and may commit): each layer waits longer than the one behind it.
    #[test]
    fn timeouts_are_ordered_from_the_services_to_nginx() {
        let service = HttpConfig::default().request_timeout_ms;
        let bff = Config::default();
        let nginx_ms = devkit_free_nginx_read_timeout_ms();
        assert!(
            service < bff.upstreams.timeout_ms,
            "{service} vs {}",
            bff.upstreams.timeout_ms
        );
        assert!(bff.upstreams.timeout_ms < bff.http.request_timeout_ms);
        assert!(
            bff.http.request_timeout_ms < nginx_ms,
            "nginx waits {nginx_ms} ms"
        );
    }

    /// `proxy_read_timeout` from the repository's nginx template.
    fn devkit_free_nginx_read_timeout_ms() -> u64 {
        let template = include_str!("../../nginx/nginx.conf.template");
        let line = template
            .lines()
            .find(|l| l.trim_start().starts_with("proxy_read_timeout"))
            .expect("the template sets proxy_read_timeout");
        let secs: u64 = line
            .trim()
            .trim_start_matches("proxy_read_timeout")
            .trim()
            .trim_end_matches(';')
            .trim_end_matches('s')
            .parse()
            .unwrap();
        secs * 1000
    }
}

/// `[inbox]`: the real-time streams.
/// (`crate::inbox_stream`.)
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Open streams one user may hold across every bff (tabs, devices).
    pub max_streams_per_user: u32,
    /// Open streams this bff holds at most.
    pub max_streams: usize,
    /// A comment this often on an idle stream.
    pub heartbeat_secs: u64,
    /// Changes a stream may fall behind before it is dropped.
    pub buffer: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_streams_per_user: 10,
            max_streams: 20_000,
            heartbeat_secs: 15,
            buffer: 32,
        }
    }
}
