//! Shared plumbing for every service of the notification platform.
//!
//! Nothing in here knows a business rule. It holds what each service would otherwise write
//! again: layered configuration ([`config`]), JSON logging and the request context
//! ([`telemetry`]), the problem+json error ([`problem`]), the HTTP edge helpers ([`http`]),
//! JWT verification ([`auth`]), the Postgres pool and database bootstrap ([`db`]), Kafka
//! client setup with the settings that do not lose messages ([`kafka`]), the transactional
//! outbox and its relay ([`outbox`]), group commit for concurrent writers ([`group_commit`]),
//! the wire types that travel over Kafka ([`events`]), the syntax of values that cross
//! process boundaries — addresses, names, language tags, one parser each ([`address`]) — the
//! one SSRF guard for every outbound call a caller can steer ([`ssrf`]), and the shutdown
//! signal ([`shutdown`]). HTTP bodies are the `api` crate's; the delivery
//! lifecycle is the `delivery` crate's.

pub mod address;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod events;
pub mod group_commit;
pub mod http;
pub mod idempotency;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod problem;
pub mod redis;
pub mod retention;
pub mod shutdown;
pub mod signing;
pub mod ssrf;
pub mod telemetry;
