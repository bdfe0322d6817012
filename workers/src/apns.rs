//! Apple Push Notification service: HTTP/2 `POST {base}/3/device/{token}` with a provider
//! token (ES256 JWT `{alg, kid}` / `{iss: team id, iat}` signed with the `.p8` key).
//!
//! Apple rejects provider tokens older than an hour and throttles ones renewed more often than
//! every 20 minutes, so one token is reused and renewed after `token_refresh_secs` (default
//! 50 min), or at once when Apple answers `ExpiredProviderToken`/`InvalidProviderToken`.
//!
//! Classification: 200 sent (`apns-id`); 410 and 400 `BadDeviceToken` /
//! `DeviceTokenNotForTopic` → invalid address (the device is removed); 403 provider-token
//! errors, 429 and 5xx → transient with `Retry-After`; other 4xx → permanent.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use common::events::{DispatchMessage, Lane, Outcome};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{http_provider, provider::ProviderResult, push::data_strings};

/// APNs settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com` (production) or `https://api.sandbox.push.apple.com`.
    pub base_url: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// The key's id (`kid`) and the team it belongs to (`iss`).
    pub key_id: String,
    pub team_id: String,
    /// The `.p8` signing key (PKCS#8 PEM), as a file or inline.
    pub key_path: Option<PathBuf>,
    pub key_pem: Option<SecretString>,
    /// Renew the provider token after this long (Apple: at most 60 min, at least 20 min).
    pub token_refresh_secs: u64,
    pub timeout_ms: u64,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.push.apple.com".into(),
            topic: String::new(),
            key_id: String::new(),
            team_id: String::new(),
            key_path: None,
            key_pem: None,
            token_refresh_secs: 50 * 60,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

/// The provider token, signed once and reused until it is due for renewal.
pub struct ProviderToken {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    refresh_after_secs: i64,
    current: Mutex<Option<(String, i64)>>,
}

impl ProviderToken {
    pub fn new(
        pem: &[u8],
        key_id: &str,
        team_id: &str,
        refresh_after: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            key: EncodingKey::from_ec_pem(pem)
                .map_err(|e| anyhow::anyhow!("push.apns key is not an EC PKCS#8 PEM: {e}"))?,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            refresh_after_secs: refresh_after.as_secs() as i64,
            current: Mutex::new(None),
        })
    }

    /// The token to send at unix time `now`.
    pub fn get(&self, now: i64) -> anyhow::Result<String> {
        let mut current = self.current.lock().expect("token lock poisoned");
        if let Some((token, iat)) = current.as_ref()
            && now - iat < self.refresh_after_secs
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat: now,
            },
            &self.key,
        )?;
        *current = Some((token.clone(), now));
        Ok(token)
    }

    /// Forgets the token after Apple refused it, so the next send signs a new one.
    pub fn reset(&self) {
        *self.current.lock().expect("token lock poisoned") = None;
    }
}

pub struct ApnsProvider {
    http: reqwest::Client,
    base: String,
    topic: String,
    token: ProviderToken,
}

#[derive(Deserialize)]
struct Reason {
    reason: String,
}

impl ApnsProvider {
    pub fn new(cfg: &ApnsConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !cfg.topic.is_empty() && !cfg.key_id.is_empty() && !cfg.team_id.is_empty(),
            "push.apns needs topic, key_id and team_id"
        );
        let pem = match (&cfg.key_pem, &cfg.key_path) {
            (Some(pem), _) => pem.expose_secret().as_bytes().to_vec(),
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("push.apns.key_path {}: {e}", path.display()))?,
            (None, None) => anyhow::bail!("push.apns needs key_path or key_pem"),
        };
        // APNs speaks only HTTP/2; over TLS ALPN would choose it anyway, and test servers
        // and local sinks speak it in cleartext (h2c), which needs prior knowledge.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .http2_prior_knowledge()
            .build()?;
        Ok(Self {
            http,
            base: cfg.base_url.trim_end_matches('/').to_owned(),
            topic: cfg.topic.clone(),
            token: ProviderToken::new(
                &pem,
                &cfg.key_id,
                &cfg.team_id,
                Duration::from_secs(cfg.token_refresh_secs),
            )?,
        })
    }

    pub async fn send(&self, msg: &DispatchMessage, device_token: &str) -> ProviderResult {
        // The token goes into the URL path: only hex may (planning and device registration
        // check it too; a message from elsewhere must not choose the request's path).
        if let Err(rule) =
            common::address::check_push_token(common::events::Platform::Apns, device_token)
        {
            return ProviderResult::failed(Outcome::InvalidAddress, "apns_bad_token", rule);
        }
        let jwt = match self.token.get(chrono::Utc::now().timestamp()) {
            Ok(t) => t,
            Err(e) => {
                return ProviderResult::failed(
                    Outcome::PermanentFailure,
                    "apns_signing",
                    e.to_string(),
                );
            }
        };
        let mut req = self
            .http
            .post(format!("{}/3/device/{device_token}", self.base))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header(
                "apns-priority",
                match msg.lane {
                    Lane::Urgent => "10",
                    Lane::Bulk => "5",
                },
            )
            .header("apns-id", msg.delivery_id.to_string())
            .json(&body(msg));
        if let Some(not_after) = msg.not_after {
            req = req.header("apns-expiration", not_after.timestamp().to_string());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return http_provider::unreachable("apns", e),
        };
        let status = resp.status().as_u16();
        let retry_after = http_provider::retry_after_ms(resp.headers());
        let apns_id = resp
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == 200 {
            return ProviderResult::sent(apns_id);
        }
        let reason = resp
            .json::<Reason>()
            .await
            .map(|r| r.reason)
            .unwrap_or_else(|_| format!("HTTP {status}"));
        if matches!(
            reason.as_str(),
            "ExpiredProviderToken" | "InvalidProviderToken"
        ) {
            self.token.reset();
        }
        classify(status, &reason, retry_after)
    }
}

/// The notification payload.
pub fn body(msg: &DispatchMessage) -> serde_json::Value {
    let mut alert = serde_json::json!({ "body": msg.content.text });
    if let Some(subject) = &msg.content.subject {
        alert["title"] = subject.clone().into();
    }
    let mut payload = serde_json::json!({ "aps": { "alert": alert, "sound": "default" } });
    for (k, v) in data_strings(msg) {
        if k != "aps" {
            payload[k] = v;
        }
    }
    payload
}

fn classify(status: u16, reason: &str, retry_after: Option<u64>) -> ProviderResult {
    let code = format!("apns_{reason}");
    let message = format!("APNs answered {status} {reason}");
    match (status, reason) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            ProviderResult::failed(Outcome::InvalidAddress, code, message)
        }
        (403, "ExpiredProviderToken" | "InvalidProviderToken") | (429 | 500..=599, _) => {
            ProviderResult {
                retry_after_ms: retry_after,
                ..ProviderResult::failed(Outcome::TransientFailure, code, message)
            }
        }
        _ => ProviderResult::failed(Outcome::PermanentFailure, code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = include_bytes!("../../tools/devkit/fixtures/ec_p256_private.pem");

    #[test]
    fn the_provider_token_is_reused_then_renewed_before_an_hour() {
        let t = ProviderToken::new(KEY, "KEY123", "TEAM42", Duration::from_secs(50 * 60)).unwrap();
        let first = t.get(1_000_000).unwrap();
        assert_eq!(t.get(1_000_000 + 49 * 60).unwrap(), first);
        let renewed = t.get(1_000_000 + 50 * 60).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(t.get(1_000_000 + 99 * 60).unwrap(), renewed);
        t.reset();
        assert_ne!(t.get(1_000_000 + 99 * 60 + 1).unwrap(), renewed);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(410, "Unregistered", None).outcome,
            Outcome::InvalidAddress
        );
        assert_eq!(
            classify(400, "BadDeviceToken", None).outcome,
            Outcome::InvalidAddress
        );
        assert_eq!(
            classify(400, "PayloadTooLarge", None).outcome,
            Outcome::PermanentFailure
        );
        let r = classify(429, "TooManyRequests", Some(5_000));
        assert_eq!(
            (r.outcome, r.retry_after_ms),
            (Outcome::TransientFailure, Some(5_000))
        );
        assert_eq!(
            classify(403, "ExpiredProviderToken", None).outcome,
            Outcome::TransientFailure
        );
        assert_eq!(
            classify(503, "ServiceUnavailable", None).outcome,
            Outcome::TransientFailure
        );
    }
}
