//! users-service settings. Every field has a default; see `config/users-service.example.toml`.

use common::{
    auth::JwtConfig, db::DatabaseConfig, http::HttpConfig, kafka::KafkaConfig, outbox::RelayConfig,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub jwt: JwtConfig,
    pub kafka: KafkaConfig,
    /// Publishes this service's outbox (`user.registered`, `preferences.updated`).
    pub relay: RelayConfig,
    /// Categories that ignore opt-outs (security alerts, OTP). Served with every profile, so
    /// planning and the preferences UI agree.
    pub mandatory_categories: Vec<String>,
    /// The JWT subjects (service role) that may call `/internal/v1/*` — the delivery profiles
    /// carry every user's contacts. Only notification-service, by default.
    pub internal_callers: Vec<String>,
    /// The Telegram bot: linking chats to users, `/stop`, incoming messages.
    pub telegram: crate::routes::telegram::TelegramConfig,
    /// Trace export over OTLP (off unless `otlp_endpoint` is set).
    pub telemetry: common::telemetry::TelemetryConfig,
    /// How long the bot's update ids and link codes are kept.
    pub retention: crate::db::retention::RetentionSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            telemetry: Default::default(),
            http: HttpConfig::with_port(8081),
            database: DatabaseConfig::new("postgres://postgres@127.0.0.1:5432/users"),
            jwt: JwtConfig::default(),
            kafka: KafkaConfig::default(),
            relay: RelayConfig::default(),
            mandatory_categories: vec!["security".into()],
            internal_callers: vec!["notification-service".into()],
            telegram: Default::default(),
            retention: Default::default(),
        }
    }
}
