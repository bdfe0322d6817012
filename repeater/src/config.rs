//! repeater settings. Every field has a default; see `config/repeater.example.toml`.

use common::{db::DatabaseConfig, events::Channel, http::HttpConfig, kafka::KafkaConfig};
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
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

/// When transient failures are tried again.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Delay before attempt n+1 after attempt n failed; its length is the number of retries.
    pub schedule_secs: Vec<f64>,
    /// ± fraction of random jitter on each delay.
    pub jitter: f64,
    /// A schedule per channel that replaces `schedule_secs` for it (`[retry.channels]
    /// sms = [10, 60]`).
    pub channels: std::collections::BTreeMap<Channel, Vec<f64>>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            schedule_secs: vec![5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0],
            jitter: 0.2,
            channels: Default::default(),
        }
    }
}

impl RetryConfig {
    /// The schedule of `channel` (its own, or the default one).
    pub fn schedule(&self, channel: &str) -> &[f64] {
        Channel::parse(channel)
            .and_then(|c| self.channels.get(&c))
            .unwrap_or(&self.schedule_secs)
    }
}
