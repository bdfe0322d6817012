//! bff settings. Every field has a default; see `config/bff.example.toml`.

use common::{auth::JwtConfig, http::HttpConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub jwt: JwtConfig,
    pub upstreams: UpstreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::with_port(8080),
            jwt: JwtConfig::default(),
            upstreams: UpstreamsConfig::default(),
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
