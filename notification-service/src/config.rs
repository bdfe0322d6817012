//! notification-service settings. Every field has a default; see
//! `config/notification-service.example.toml`.

use common::{
    auth::JwtConfig, db::DatabaseConfig, http::HttpConfig, kafka::KafkaConfig, outbox::RelayConfig,
    redis::RedisConfig,
};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub jwt: JwtConfig,
    pub kafka: KafkaConfig,
    /// Publishes the `notify` outbox (dispatches from intake and retries from the repeater).
    pub relay: RelayConfig,
    pub users: UsersClientConfig,
    pub planning: crate::planning::PlanningConfig,
    /// The profile cache.
    pub redis: RedisConfig,
    /// The notification every new user gets (`user.registered`).
    pub welcome: WelcomeConfig,
    /// What each calling service may send (categories, privileged categories, high priority).
    pub permissions: crate::permissions::PermissionsConfig,
    /// How accepted requests are written (group commit).
    pub intake: crate::intake::IntakeConfig,
    /// How sends to topics are fanned out.
    pub fanout: crate::fanout::FanoutConfig,
    /// The in-app inbox: retention, how many in-app dispatches are stored at once.
    pub inbox: crate::inbox::InboxConfig,
    /// Delivery receipts from providers (Twilio status callbacks).
    pub receipts: crate::routes::receipts::ReceiptsConfig,
    /// Bounce and complaint reports that fill the suppression list.
    pub bounces: crate::routes::bounces::BouncesConfig,
    /// Trace export over OTLP (off unless `otlp_endpoint` is set).
    pub telemetry: common::telemetry::TelemetryConfig,
    /// How long receipts, bounce report ids and skipped events are kept.
    pub retention: crate::db::retention::RetentionSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            telemetry: Default::default(),
            http: HttpConfig::with_port(8082),
            database: DatabaseConfig::new("postgres://postgres@127.0.0.1:5432/notify"),
            jwt: JwtConfig::default(),
            kafka: KafkaConfig::default(),
            relay: RelayConfig::default(),
            users: UsersClientConfig::default(),
            planning: Default::default(),
            redis: RedisConfig::default(),
            welcome: WelcomeConfig::default(),
            permissions: Default::default(),
            intake: Default::default(),
            fanout: Default::default(),
            inbox: Default::default(),
            receipts: Default::default(),
            bounces: Default::default(),
            retention: Default::default(),
        }
    }
}

/// Where users-service is.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UsersClientConfig {
    pub base_url: String,
    pub timeout_ms: u64,
    /// The token this service presents when it calls users-service on its own behalf (the
    /// welcome flow). Unset with HS256: a short-lived service token is minted with the shared
    /// secret.
    pub service_token: Option<SecretString>,
    /// How long a fetched delivery profile is cached in Redis; `preferences.updated` events
    /// evict it sooner. 0 disables the cache.
    pub cache_ttl_secs: u64,
}

impl Default for UsersClientConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8081".into(),
            timeout_ms: 5_000,
            service_token: None,
            cache_ttl_secs: 60,
        }
    }
}

/// The `welcome` notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WelcomeConfig {
    pub enabled: bool,
    /// The template it is rendered from (seeded by migration; edit it with the admin API).
    pub template: String,
}

impl Default for WelcomeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            template: "welcome".into(),
        }
    }
}
