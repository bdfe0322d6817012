//! repeater settings. Every field has a default; see `config/repeater.example.toml`.

use common::{db::DatabaseConfig, http::HttpConfig, kafka::KafkaConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Health and readiness endpoint.
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub retry: RetryConfig,
    /// The scan that re-drives deliveries whose dispatch message was lost.
    pub stuck: crate::stuck::StuckConfig,
    /// Status events handled at once.
    pub max_in_flight: usize,
    /// How status events are written (group commit).
    pub apply: crate::status::ApplyConfig,
    /// Trace export over OTLP (off unless `otlp_endpoint` is set).
    pub telemetry: common::telemetry::TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            telemetry: Default::default(),
            http: HttpConfig::with_port(8085),
            database: DatabaseConfig::new("postgres://postgres@127.0.0.1:5432/notify"),
            kafka: KafkaConfig::default(),
            retry: RetryConfig::default(),
            stuck: crate::stuck::StuckConfig::default(),
            max_in_flight: 32,
            apply: crate::status::ApplyConfig::default(),
        }
    }
}

pub use delivery::retry::RetryConfig;
