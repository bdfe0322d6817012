//! Firebase Cloud Messaging, HTTP v1: `POST {base}/v1/projects/{project}/messages:send` with an
//! OAuth2 bearer token from the service account (`gcp_auth`: JWT-bearer grant at the key's
//! `token_uri`, cached until shortly before it expires).
//!
//! Classification (from the `FcmError` detail's `errorCode`, else the HTTP status):
//! `UNREGISTERED`, `SENDER_ID_MISMATCH` and `INVALID_ARGUMENT` about `message.token` → invalid
//! address (the device is removed); `QUOTA_EXCEEDED`/429, `UNAVAILABLE`, `INTERNAL`/5xx and 401
//! (credentials being rotated) → transient with `Retry-After`; anything else → permanent.

use std::{path::PathBuf, sync::Arc, time::Duration};

use common::events::{DispatchMessage, Lane, Outcome};
use gcp_auth::{CustomServiceAccount, TokenProvider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{http_provider, provider::ProviderResult, push::data_strings};

const SCOPES: &[&str] = &["https://www.googleapis.com/auth/firebase.messaging"];

/// FCM settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FcmConfig {
    pub base_url: String,
    /// The Firebase project; defaults to the service account's `project_id`.
    pub project_id: Option<String>,
    /// The service-account key file (JSON, as the Firebase console downloads it).
    pub service_account_path: Option<PathBuf>,
    /// Or the same JSON inline (e.g. from a secret in the environment).
    pub service_account_json: Option<SecretString>,
    pub timeout_ms: u64,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self {
            base_url: "https://fcm.googleapis.com".into(),
            project_id: None,
            service_account_path: None,
            service_account_json: None,
            timeout_ms: 10_000,
        }
    }
}

pub struct FcmProvider {
    http: reqwest::Client,
    url: String,
    auth: CustomServiceAccount,
    /// One token fetch at a time: concurrent sends at start-up wait for the first fetch
    /// instead of each asking the token endpoint.
    token_lock: tokio::sync::Mutex<()>,
    /// The provider timeout, also the longest wait for the OAuth token.
    timeout: Duration,
}

impl FcmProvider {
    pub fn new(cfg: &FcmConfig) -> anyhow::Result<Self> {
        let auth = match (&cfg.service_account_json, &cfg.service_account_path) {
            (Some(json), _) => CustomServiceAccount::from_json(json.expose_secret()),
            (None, Some(path)) => CustomServiceAccount::from_file(path),
            (None, None) => {
                anyhow::bail!("push.fcm needs service_account_path or service_account_json")
            }
        }
        .map_err(|e| anyhow::anyhow!("push.fcm service account: {e}"))?;
        let project = cfg
            .project_id
            .clone()
            .or_else(|| auth.project_id().map(str::to_owned))
            .ok_or_else(|| {
                anyhow::anyhow!("push.fcm.project_id is not set and the service account has none")
            })?;
        Ok(Self {
            http: http_provider::client(Duration::from_millis(cfg.timeout_ms))?,
            url: format!(
                "{}/v1/projects/{project}/messages:send",
                cfg.base_url.trim_end_matches('/')
            ),
            auth,
            token_lock: tokio::sync::Mutex::new(()),
            timeout: Duration::from_millis(cfg.timeout_ms),
        })
    }

    /// The OAuth token (cached by `gcp_auth`, fetched at most once at a time), waiting at most
    /// the provider timeout: a token endpoint that never answers fails the send (transient)
    /// instead of holding it, and every send queued behind it, forever.
    async fn token(&self) -> Result<Arc<gcp_auth::Token>, String> {
        let fetch = async {
            let _one_at_a_time = self.token_lock.lock().await;
            self.auth.token(SCOPES).await
        };
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    pub async fn send(&self, msg: &DispatchMessage, device_token: &str) -> ProviderResult {
        let token = match self.token().await {
            Ok(t) => t,
            Err(e) => {
                return ProviderResult::failed(
                    Outcome::TransientFailure,
                    "fcm_auth",
                    format!("fetching the OAuth token: {e}"),
                );
            }
        };
        let resp = match self
            .http
            .post(&self.url)
            .bearer_auth(token.as_str())
            .json(&body(msg, device_token))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return http_provider::unreachable("fcm", e),
        };
        let status = resp.status().as_u16();
        let retry_after = http_provider::retry_after_ms(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            let name = serde_json::from_str::<Sent>(&text).ok().map(|s| s.name);
            return ProviderResult::sent(name);
        }
        classify(status, retry_after, &text)
    }
}

/// The v1 request body.
pub fn body(msg: &DispatchMessage, device_token: &str) -> serde_json::Value {
    let mut notification = serde_json::json!({ "body": msg.content.text });
    if let Some(subject) = &msg.content.subject {
        notification["title"] = subject.clone().into();
    }
    let mut android = serde_json::json!({
        "priority": match msg.lane { Lane::Urgent => "HIGH", Lane::Bulk => "NORMAL" },
    });
    if let Some(not_after) = msg.not_after {
        let secs = (not_after - chrono::Utc::now()).num_seconds().max(0);
        android["ttl"] = format!("{secs}s").into();
    }
    serde_json::json!({
        "message": {
            "token": device_token,
            "notification": notification,
            "data": data_strings(msg),
            "android": android,
        }
    })
}

#[derive(Deserialize)]
struct Sent {
    name: String,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<GoogleError>,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

fn classify(status: u16, retry_after: Option<u64>, text: &str) -> ProviderResult {
    let err = serde_json::from_str::<ErrorBody>(text)
        .unwrap_or_default()
        .error;
    let message = err
        .as_ref()
        .map(|e| e.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("HTTP {status}"));
    // The FCM-specific code, else Google's canonical status.
    let fcm_code = err.as_ref().and_then(|e| {
        e.details.iter().find_map(|d| {
            d.get("errorCode")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
    });
    let code = fcm_code
        .or_else(|| err.as_ref().map(|e| e.status.clone()))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| status.to_string());
    let about_token = err.as_ref().is_some_and(|e| {
        e.details.iter().any(|d| {
            d.get("fieldViolations")
                .and_then(|v| v.as_array())
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| v.get("field").and_then(|f| f.as_str()) == Some("message.token"))
                })
        }) || e.message.contains("registration token")
    });
    let wire_code = format!("fcm_{}", code.to_ascii_lowercase());
    match (code.as_str(), status) {
        ("UNREGISTERED" | "SENDER_ID_MISMATCH", _) => {
            ProviderResult::failed(Outcome::InvalidAddress, wire_code, message)
        }
        ("INVALID_ARGUMENT", _) if about_token => {
            ProviderResult::failed(Outcome::InvalidAddress, wire_code, message)
        }
        ("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL", _) | (_, 401 | 429 | 500..=599) => {
            ProviderResult {
                retry_after_ms: retry_after,
                ..ProviderResult::failed(Outcome::TransientFailure, wire_code, message)
            }
        }
        _ => ProviderResult::failed(Outcome::PermanentFailure, wire_code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_classified() {
        let unregistered = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
            "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        let r = classify(404, None, unregistered);
        assert_eq!(r.outcome, Outcome::InvalidAddress);
        assert_eq!(r.error.unwrap().code, "fcm_unregistered");

        let bad_payload = r#"{"error":{"code":400,"message":"Invalid value at 'message.data[0].value'","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.data[0].value"}]}]}}"#;
        assert_eq!(
            classify(400, None, bad_payload).outcome,
            Outcome::PermanentFailure
        );
        let quota = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"quota",
            "details":[{"errorCode":"QUOTA_EXCEEDED"}]}}"#;
        let r = classify(429, Some(30_000), quota);
        assert_eq!(
            (r.outcome, r.retry_after_ms),
            (Outcome::TransientFailure, Some(30_000))
        );
        assert_eq!(
            classify(502, None, "<html>bad gateway</html>").outcome,
            Outcome::TransientFailure
        );
    }
}
