//! SMS through an HTTP gateway speaking Twilio's Messages API: form POST to
//! `{base}/2010-04-01/Accounts/{sid}/Messages.json` with basic auth.
//!
//! Classification: 2xx sent (`sid` is the provider message id); 429 and 5xx transient (with
//! `Retry-After`); 4xx with Twilio's invalid-number codes (21211, 21614, 21217) invalid address;
//! other 4xx permanent.

use std::time::Duration;

use common::events::{DispatchMessage, Outcome};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    http_provider,
    provider::{Provider, ProviderResult},
};

/// Gateway settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SmsConfig {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    /// Sender number (E.164) or alphanumeric sender id.
    pub from: String,
    pub timeout_ms: u64,
    /// A second gateway (Vonage's SMS API), tried when this one fails transiently or its
    /// circuit breaker is open. Either gateway alone is enough to run the channel.
    pub vonage: Option<crate::vonage::VonageConfig>,
    /// The order to try them in (`twilio`, `vonage`); a gateway without settings is left out.
    pub order: Vec<String>,
    /// Sent as Twilio's `StatusCallback`: where Twilio posts delivery receipts (the public
    /// `/v1/receipts/twilio`; notification-service's `receipts.twilio.url`).
    pub status_callback_url: Option<String>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: SecretString::from(""),
            from: String::new(),
            timeout_ms: 10_000,
            vonage: None,
            order: vec!["twilio".into(), "vonage".into()],
            status_callback_url: None,
        }
    }
}

/// One SMS gateway.
pub enum SmsGateway {
    Twilio(SmsProvider),
    Vonage(crate::vonage::VonageProvider),
}

impl SmsGateway {
    /// The configured gateways in `cfg.order`.
    pub fn all(cfg: &SmsConfig) -> anyhow::Result<Vec<Self>> {
        let mut out = Vec::new();
        for name in &cfg.order {
            match name.as_str() {
                "twilio" if !cfg.account_sid.is_empty() => {
                    out.push(Self::Twilio(SmsProvider::new(cfg)?))
                }
                "vonage" => {
                    if let Some(v) = &cfg.vonage {
                        out.push(Self::Vonage(crate::vonage::VonageProvider::new(v)?));
                    }
                }
                "twilio" => {}
                other => {
                    anyhow::bail!("sms.order names an unknown gateway `{other}` (twilio, vonage)")
                }
            }
        }
        anyhow::ensure!(
            !out.is_empty(),
            "the sms channel needs a gateway: set sms.account_sid (Twilio) or [sms.vonage]"
        );
        Ok(out)
    }
}

impl Provider for SmsGateway {
    fn name(&self) -> &'static str {
        match self {
            Self::Twilio(p) => p.name(),
            Self::Vonage(p) => p.name(),
        }
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        match self {
            Self::Twilio(p) => p.send(msg).await,
            Self::Vonage(p) => p.send(msg).await,
        }
    }
}

/// Twilio error codes meaning the number itself is unusable.
const INVALID_NUMBER_CODES: [i64; 3] = [21211, 21614, 21217];

pub struct SmsProvider {
    http: reqwest::Client,
    url: String,
    cfg: SmsConfig,
}

#[derive(Deserialize)]
struct TwilioAnswer {
    sid: Option<String>,
    code: Option<i64>,
    message: Option<String>,
}

impl SmsProvider {
    pub fn new(cfg: &SmsConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !cfg.account_sid.is_empty(),
            "sms.account_sid must be set to run the sms channel"
        );
        Ok(Self {
            http: http_provider::client(Duration::from_millis(cfg.timeout_ms))?,
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                cfg.base_url.trim_end_matches('/'),
                cfg.account_sid
            ),
            cfg: cfg.clone(),
        })
    }
}

impl Provider for SmsProvider {
    fn name(&self) -> &'static str {
        common::events::SMS_GATEWAY_PROVIDER
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        let mut form = vec![
            ("To", msg.recipient.address.as_str()),
            ("From", self.cfg.from.as_str()),
            ("Body", msg.content.text.as_str()),
        ];
        if let Some(url) = &self.cfg.status_callback_url {
            form.push(("StatusCallback", url.as_str()));
        }
        let resp = match self
            .http
            .post(&self.url)
            .basic_auth(
                &self.cfg.account_sid,
                Some(self.cfg.auth_token.expose_secret()),
            )
            .form(&form)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return http_provider::unreachable("sms", e),
        };
        let status = resp.status().as_u16();
        let retry_after = http_provider::retry_after_ms(resp.headers());
        let answer: Option<TwilioAnswer> = resp.json().await.ok();
        let message = answer
            .as_ref()
            .and_then(|a| a.message.clone())
            .unwrap_or_else(|| format!("HTTP {status}"));
        match status {
            200..=299 => ProviderResult::sent(answer.and_then(|a| a.sid)),
            429 | 500..=599 => http_provider::transient("sms", status, retry_after, message),
            _ => match answer.and_then(|a| a.code) {
                Some(code) if INVALID_NUMBER_CODES.contains(&code) => {
                    ProviderResult::failed(Outcome::InvalidAddress, format!("sms_{code}"), message)
                }
                Some(code) => ProviderResult::failed(
                    Outcome::PermanentFailure,
                    format!("sms_{code}"),
                    message,
                ),
                None => ProviderResult::failed(
                    Outcome::PermanentFailure,
                    format!("sms_{status}"),
                    message,
                ),
            },
        }
    }
}
