//! workers settings. Every field has a default; see `config/workers.example.toml`.

use common::{
    events::{Channel, Lane},
    http::HttpConfig,
    kafka::KafkaConfig,
    redis::RedisConfig,
};

use crate::{push::PushConfig, sms::SmsConfig, telegram::TelegramConfig, webhook::WebhookConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The channels this process sends (one process can run them all; production runs them
    /// separately). Each gets an urgent and a bulk consumer. Not `in_app`: notification-service
    /// stores in-app items.
    pub channels: Vec<Channel>,
    /// Health and readiness endpoint.
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    /// Duplicate-send protection.
    pub redis: RedisConfig,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub push: PushConfig,
    pub telegram: TelegramConfig,
    pub webhook: WebhookConfig,
    pub lanes: LaneConfig,
    /// Circuit breakers of channels with several providers.
    pub breaker: crate::breaker::BreakerConfig,
    /// How long a handled dispatch is remembered (a redelivery within it is not sent again).
    pub dedupe_ttl_secs: u64,
    /// How long a worker's claim on a send lasts. Longer than any provider's timeout; a
    /// redelivery of a message whose worker died mid-send waits this long before sending.
    pub claim_ttl_secs: u64,
    /// Trace export over OTLP (off unless `otlp_endpoint` is set).
    pub telemetry: common::telemetry::TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            telemetry: Default::default(),
            channels: vec![Channel::Email],
            http: HttpConfig::with_port(8084),
            kafka: KafkaConfig::default(),
            redis: RedisConfig::default(),
            email: EmailConfig::default(),
            sms: SmsConfig::default(),
            push: PushConfig::default(),
            telegram: TelegramConfig::default(),
            webhook: WebhookConfig::default(),
            lanes: LaneConfig::default(),
            breaker: crate::breaker::BreakerConfig::default(),
            dedupe_ttl_secs: 7 * 86_400,
            claim_ttl_secs: 60,
        }
    }
}

/// SMTP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmailConfig {
    /// `smtp://host:port` (plaintext, e.g. a local catcher), `smtp://host:587?tls=required`
    /// (STARTTLS) or `smtps://host:465`; credentials as `smtp://user:pass@host`.
    pub smtp_url: String,
    /// The `From:` mailbox.
    pub from: String,
    /// Per-send timeout; a provider that hangs counts as a transient failure.
    pub timeout_ms: u64,
    /// Pooled SMTP connections; sends run concurrently, one per connection.
    pub pool_size: u32,
    /// An extra root certificate (PEM) trusted for STARTTLS / TLS, e.g. an internal relay's
    /// private CA. Public CAs are trusted without it.
    pub tls_ca_path: Option<std::path::PathBuf>,
    /// A second relay (same settings otherwise), tried when the first fails transiently or
    /// its circuit breaker is open (`[breaker]`); attempts it answers record `smtp_secondary`.
    pub secondary_smtp_url: Option<String>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_url: "smtp://127.0.0.1:2525".into(),
            from: "Notify <notify@localhost.localdomain>".into(),
            timeout_ms: 10_000,
            pool_size: 16,
            tls_ca_path: None,
            secondary_smtp_url: None,
        }
    }
}

/// Concurrency per lane.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LaneConfig {
    pub urgent_concurrency: usize,
    pub bulk_concurrency: usize,
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self {
            urgent_concurrency: 16,
            bulk_concurrency: 16,
        }
    }
}

impl LaneConfig {
    pub fn concurrency(&self, lane: Lane) -> usize {
        match lane {
            Lane::Urgent => self.urgent_concurrency,
            Lane::Bulk => self.bulk_concurrency,
        }
        .max(1)
    }
}
