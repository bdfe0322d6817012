//! Webhooks: POST JSON signed per the Standard Webhooks spec, refusing internal targets.
//!
//! Signature: `webhook-id` (the delivery id, stable across retries), `webhook-timestamp` (unix
//! seconds), `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` where
//! the key is the base64 part of a `whsec_…` secret — any Standard Webhooks library verifies it.
//!
//! SSRF: the one guard, `common::ssrf` — every address a target resolves to must be public
//! (checked by the client's resolver, so the connection goes to the checked address), literal
//! IPs are checked before sending, no proxy from the environment, no redirects. Loopback can
//! be allowed explicitly (tests, `make up`).
//!
//! Classification: 2xx sent; 410 permanent (the endpoint is gone); 429, 5xx, timeouts and
//! connection errors transient with `Retry-After`; refused target or other 4xx permanent.

use std::time::Duration;

use common::{
    events::{DispatchMessage, Outcome},
    ssrf::{self, UrlRefusal},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    http_provider,
    provider::{Provider, ProviderResult},
};

/// Webhook settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Deployment-wide signing secret, `whsec_<base64>`.
    pub secret: SecretString,
    pub timeout_ms: u64,
    /// Allow 127.0.0.0/8 and ::1 targets (local development and tests only).
    pub allow_loopback: bool,
    /// An egress proxy for webhook calls (`http://proxy:3128`), used only when set here —
    /// never from `HTTPS_PROXY`/`ALL_PROXY`. The proxy resolves names itself, so it must
    /// refuse internal targets as `common::ssrf` does.
    pub proxy_url: Option<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: SecretString::from(""),
            timeout_ms: 10_000,
            allow_loopback: false,
            proxy_url: None,
        }
    }
}

pub struct WebhookProvider {
    http: reqwest::Client,
    key: common::signing::SigningKey,
    allow_loopback: bool,
}

impl WebhookProvider {
    pub fn new(cfg: &WebhookConfig) -> anyhow::Result<Self> {
        let key = common::signing::SigningKey::from_secret(cfg.secret.expose_secret())
            .map_err(|e| anyhow::anyhow!("webhook.secret: {e}"))?;
        let http = ssrf::guarded_client(
            &ssrf::GuardConfig {
                allow_loopback: cfg.allow_loopback,
                proxy_url: cfg.proxy_url.clone(),
            },
            Duration::from_millis(cfg.timeout_ms),
        )?;
        Ok(Self {
            http,
            key,
            allow_loopback: cfg.allow_loopback,
        })
    }

    /// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (`common::signing`).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.key.sign(id, timestamp, body)
    }
}

fn refused(message: String) -> ProviderResult {
    ProviderResult::failed(Outcome::PermanentFailure, "webhook_target_refused", message)
}

impl Provider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        let Ok(url) = reqwest::Url::parse(&msg.recipient.address) else {
            return ProviderResult::failed(Outcome::InvalidAddress, "webhook_bad_url", "not a URL");
        };
        match ssrf::check_url(&url, self.allow_loopback) {
            Ok(()) => {}
            Err(UrlRefusal::Invalid(why)) => {
                return ProviderResult::failed(Outcome::InvalidAddress, "webhook_bad_url", why);
            }
            Err(UrlRefusal::Internal(ip)) => {
                return refused(format!("{ip} is an internal address"));
            }
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "notification",
            "notification_id": msg.notification_id,
            "delivery_id": msg.delivery_id,
            "attempt": msg.attempt,
            "content": msg.content,
            "created_at": msg.created_at,
        }))
        .unwrap_or_default();
        let id = msg.delivery_id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.sign(&id, timestamp, &body))
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if ssrf::is_refusal(&e) => return refused(http_provider::describe(e)),
            Err(e) => return http_provider::unreachable("webhook", e),
        };
        let status = resp.status().as_u16();
        let retry_after = http_provider::retry_after_ms(resp.headers());
        match status {
            200..=299 => ProviderResult::sent(None),
            410 => ProviderResult::failed(
                Outcome::PermanentFailure,
                "webhook_410",
                "the endpoint is gone",
            ),
            429 | 500..=599 => {
                http_provider::transient("webhook", status, retry_after, format!("HTTP {status}"))
            }
            _ => ProviderResult::failed(
                Outcome::PermanentFailure,
                format!("webhook_{status}"),
                format!("HTTP {status}"),
            ),
        }
    }
}
