//! Telegram through the Bot API: `POST {base}/bot{token}/sendMessage` `{chat_id, text}`.
//!
//! Classification: `ok: true` sent (`message_id`); 429 transient with `parameters.retry_after`;
//! 5xx transient; 403 (the user blocked the bot) permanent; 400 "chat not found" invalid address;
//! other 4xx permanent.

use std::time::Duration;

use common::events::{DispatchMessage, Outcome};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    http_provider,
    provider::{Provider, ProviderResult},
};

/// Bot settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelegramConfig {
    pub base_url: String,
    pub bot_token: SecretString,
    pub timeout_ms: u64,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.telegram.org".into(),
            bot_token: SecretString::from(""),
            timeout_ms: 10_000,
        }
    }
}

pub struct TelegramProvider {
    http: reqwest::Client,
    url: String,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    result: Option<serde_json::Value>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

impl TelegramProvider {
    pub fn new(cfg: &TelegramConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !cfg.bot_token.expose_secret().is_empty(),
            "telegram.bot_token must be set to run the telegram channel"
        );
        Ok(Self {
            http: http_provider::client(Duration::from_millis(cfg.timeout_ms))?,
            url: format!(
                "{}/bot{}/sendMessage",
                cfg.base_url.trim_end_matches('/'),
                cfg.bot_token.expose_secret()
            ),
        })
    }
}

impl Provider for TelegramProvider {
    fn name(&self) -> &'static str {
        "telegram"
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        let body =
            serde_json::json!({ "chat_id": msg.recipient.address, "text": msg.content.text });
        let resp = match self.http.post(&self.url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return http_provider::unreachable("telegram", e),
        };
        let status = resp.status().as_u16();
        let header_retry = http_provider::retry_after_ms(resp.headers());
        let answer: Option<Answer> = resp.json().await.ok();
        let description = answer
            .as_ref()
            .and_then(|a| a.description.clone())
            .unwrap_or_else(|| format!("HTTP {status}"));
        match (status, answer) {
            (200..=299, Some(a)) if a.ok => ProviderResult::sent(
                a.result
                    .and_then(|r| r.get("message_id").map(|id| id.to_string())),
            ),
            (429, a) => {
                let retry = a
                    .and_then(|a| a.parameters)
                    .and_then(|p| p.retry_after)
                    .map(|s| s * 1000)
                    .or(header_retry);
                http_provider::transient("telegram", status, retry, description)
            }
            (500..=599, _) => {
                http_provider::transient("telegram", status, header_retry, description)
            }
            (400, _) if description.to_ascii_lowercase().contains("chat not found") => {
                ProviderResult::failed(
                    Outcome::InvalidAddress,
                    "telegram_chat_not_found",
                    description,
                )
            }
            _ => ProviderResult::failed(
                Outcome::PermanentFailure,
                format!("telegram_{status}"),
                description,
            ),
        }
    }
}
