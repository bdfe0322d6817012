//! `.dev/stack.json`: what `notifyctl up` started, for scripts and the other subcommands.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// The dev-only signing settings (scripts mint their own tokens with them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtInfo {
    pub alg: String,
    pub secret: String,
    pub iss: String,
    pub aud: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub user: String,
    pub service: String,
    pub admin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackFile {
    pub url: String,
    /// The gRPC API (`notify.v1`): nginx's gRPC port, or the single bff's public port.
    #[serde(default)]
    pub grpc_url: String,
    /// Each bff instance's own public address (behind nginx), in order.
    #[serde(default)]
    pub bff_urls: Vec<String>,
    pub tokens: Tokens,
    pub user_id: String,
    pub jwt: JwtInfo,
    /// Process ids of what the launcher started, by name.
    #[serde(default)]
    pub processes: BTreeMap<String, u32>,
    #[serde(default)]
    pub kafka_bootstrap_servers: String,
    #[serde(default)]
    pub smtp: String,
    #[serde(default)]
    pub mail_dir: String,
    /// Where the HTTP provider sink records requests (`<dir>/<channel>/*.json`).
    #[serde(default)]
    pub sinks_dir: String,
    /// The sink's webhook endpoint: a webhook recipient pointed here is recorded too.
    #[serde(default)]
    pub webhook_sink: String,
    /// The notify database (`notifyctl load` reads its accounting there).
    #[serde(default)]
    pub notify_database_url: String,
    /// The users database (`notifyctl load --scenario topic` seeds its subscribers there).
    #[serde(default)]
    pub users_database_url: String,
    /// Each process's `/metrics`, by process name.
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
    /// The Prometheus `make up` started, if it did.
    #[serde(default)]
    pub prometheus_url: Option<String>,
}

impl StackFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e} (is `make up` running?)", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn jwt_config(&self) -> common::auth::JwtConfig {
        common::auth::JwtConfig {
            secret: self.jwt.secret.clone().into(),
            issuer: self.jwt.iss.clone(),
            audience: self.jwt.aud.clone(),
            ..Default::default()
        }
    }
}
