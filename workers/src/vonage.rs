//! SMS through Vonage's SMS API (the second SMS gateway, for failover): form POST to
//! `{base}/sms/json` with `api_key` / `api_secret`, the number in E.164 without its `+`.
//!
//! Vonage answers 200 with a `status` per message part. Classification: `"0"` sent (the
//! `message-id` is the provider message id); `"1"` throttled and `"5"` internal error
//! transient, like HTTP 429 and 5xx; `"7"` number barred, `"33"` number de-activated, and
//! `"3"` invalid parameters naming the number → invalid address; anything else permanent.

use std::time::Duration;

use common::events::{DispatchMessage, Outcome};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    http_provider,
    provider::{Provider, ProviderResult},
};

/// Gateway settings (`[sms.vonage]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VonageConfig {
    pub base_url: String,
    pub api_key: String,
    pub api_secret: SecretString,
    /// Sender number or alphanumeric sender id.
    pub from: String,
    pub timeout_ms: u64,
}

impl Default for VonageConfig {
    fn default() -> Self {
        Self {
            base_url: "https://rest.nexmo.com".into(),
            api_key: String::new(),
            api_secret: SecretString::from(""),
            from: String::new(),
            timeout_ms: 10_000,
        }
    }
}

pub struct VonageProvider {
    http: reqwest::Client,
    url: String,
    cfg: VonageConfig,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

impl VonageProvider {
    pub fn new(cfg: &VonageConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !cfg.api_key.is_empty(),
            "sms.vonage.api_key must be set to use Vonage"
        );
        Ok(Self {
            http: http_provider::client(Duration::from_millis(cfg.timeout_ms))?,
            url: format!("{}/sms/json", cfg.base_url.trim_end_matches('/')),
            cfg: cfg.clone(),
        })
    }
}

/// What Vonage's `status` of the first failed part means.
fn classify(status: &str, text: &str) -> Outcome {
    match status {
        "1" | "5" => Outcome::TransientFailure,
        "7" | "33" => Outcome::InvalidAddress,
        "3" if text.to_ascii_lowercase().contains("number") => Outcome::InvalidAddress,
        _ => Outcome::PermanentFailure,
    }
}

impl Provider for VonageProvider {
    fn name(&self) -> &'static str {
        "vonage"
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        let to = msg.recipient.address.trim_start_matches('+');
        let form = [
            ("api_key", self.cfg.api_key.as_str()),
            ("api_secret", self.cfg.api_secret.expose_secret()),
            ("from", self.cfg.from.as_str()),
            ("to", to),
            ("text", msg.content.text.as_str()),
        ];
        let resp = match self.http.post(&self.url).form(&form).send().await {
            Ok(r) => r,
            Err(e) => return http_provider::unreachable("vonage", e),
        };
        let status = resp.status().as_u16();
        let retry_after = http_provider::retry_after_ms(resp.headers());
        if status == 429 || status >= 500 {
            return http_provider::transient(
                "vonage",
                status,
                retry_after,
                format!("HTTP {status}"),
            );
        }
        let answer: Option<Answer> = resp.json().await.ok();
        let Some(parts) = answer.map(|a| a.messages).filter(|m| !m.is_empty()) else {
            return ProviderResult::failed(
                Outcome::PermanentFailure,
                format!("vonage_{status}"),
                format!("HTTP {status} without a message status"),
            );
        };
        match parts.iter().find(|p| p.status != "0") {
            None => ProviderResult::sent(parts.into_iter().find_map(|p| p.message_id)),
            Some(p) => {
                let text = p.error_text.clone().unwrap_or_else(|| "refused".into());
                ProviderResult::failed(
                    classify(&p.status, &text),
                    format!("vonage_{}", p.status),
                    text,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify("1", "Throttled"), Outcome::TransientFailure);
        assert_eq!(classify("5", "Internal Error"), Outcome::TransientFailure);
        assert_eq!(classify("7", "Number barred."), Outcome::InvalidAddress);
        assert_eq!(classify("3", "Invalid to number"), Outcome::InvalidAddress);
        assert_eq!(
            classify("3", "Invalid from param"),
            Outcome::PermanentFailure
        );
        assert_eq!(classify("4", "Bad Credentials"), Outcome::PermanentFailure);
    }
}
