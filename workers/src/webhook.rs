//! Webhooks: POST JSON signed per the Standard Webhooks spec, refusing internal targets.
//!
//! Signature: `webhook-id` (the delivery id, stable across retries), `webhook-timestamp` (unix
//! seconds), `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` where
//! the key is the base64 part of a `whsec_…` secret — any Standard Webhooks library verifies it.
//!
//! SSRF: every address a target resolves to must be public. The resolver the HTTP client uses
//! drops loopback, private, link-local (cloud metadata), CGNAT, unique-local and unspecified
//! addresses, so the connection goes to an address that was checked (no rebinding window);
//! literal IPs in URLs, which skip the resolver, are checked before sending. Loopback can be
//! allowed explicitly (tests, `make up`).
//!
//! Classification: 2xx sent; 410 permanent (the endpoint is gone); 429, 5xx, timeouts and
//! connection errors transient with `Retry-After`; refused target or other 4xx permanent.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use common::events::{DispatchMessage, Outcome};
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
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: SecretString::from(""),
            timeout_ms: 10_000,
            allow_loopback: false,
        }
    }
}

/// Whether a target address may be called.
pub fn is_forbidden(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (v4.is_loopback() && !allow_loopback)
                || v4.is_private()
                || v4.is_link_local() // 169.254.0.0/16, cloud metadata included
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..=127).contains(&o[1])) // CGNAT 100.64.0.0/10
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4), allow_loopback);
            }
            let first = v6.segments()[0];
            (v6.is_loopback() && !allow_loopback)
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link local fe80::/10
        }
    }
}

type Lookup = dyn Fn(
        String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>,
    > + Send
    + Sync;

/// A resolver that only ever returns addresses that may be called.
pub struct GuardedResolver {
    allow_loopback: bool,
    lookup: Arc<Lookup>,
}

impl GuardedResolver {
    pub fn new(allow_loopback: bool) -> Self {
        Self::with_lookup(allow_loopback, |host| {
            Box::pin(
                async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) },
            )
        })
    }

    /// With a stand-in for DNS (tests: a hostname that resolves to a private address).
    pub fn with_lookup(
        allow_loopback: bool,
        lookup: impl Fn(
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>,
        > + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            allow_loopback,
            lookup: Arc::new(lookup),
        }
    }

    /// The callable addresses of `host`, or an error naming why there are none.
    pub async fn allowed(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let all = (self.lookup)(host.to_owned())
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let ok: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| !is_forbidden(a.ip(), self.allow_loopback))
            .collect();
        if ok.is_empty() {
            Err(format!(
                "{host} resolves only to internal addresses; refused"
            ))
        } else {
            Ok(ok)
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (lookup, allow_loopback) = (self.lookup.clone(), self.allow_loopback);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let guard = GuardedResolver {
                allow_loopback,
                lookup,
            };
            match guard.allowed(&host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(e.into()),
            }
        })
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .dns_resolver(Arc::new(GuardedResolver::new(cfg.allow_loopback)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
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
        if !matches!(url.scheme(), "https" | "http") {
            return ProviderResult::failed(
                Outcome::InvalidAddress,
                "webhook_bad_url",
                "only http(s) targets",
            );
        }
        // Literal IPs never reach the resolver.
        match url.host() {
            Some(url::Host::Ipv4(ip)) if is_forbidden(IpAddr::V4(ip), self.allow_loopback) => {
                return refused(format!("{ip} is an internal address"));
            }
            Some(url::Host::Ipv6(ip)) if is_forbidden(IpAddr::V6(ip), self.allow_loopback) => {
                return refused(format!("{ip} is an internal address"));
            }
            None => {
                return ProviderResult::failed(
                    Outcome::InvalidAddress,
                    "webhook_bad_url",
                    "no host",
                );
            }
            _ => {}
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
            Err(e)
                if format!("{e:?}").contains("refused")
                    && format!("{e:?}").contains("internal addresses") =>
            {
                return refused(http_provider::describe(e));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden_and_public_ones_allowed() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(
                is_forbidden(ip.parse().unwrap(), false),
                "{ip} must be refused"
            );
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(
                !is_forbidden(ip.parse().unwrap(), false),
                "{ip} must be allowed"
            );
        }
        assert!(
            !is_forbidden("127.0.0.1".parse().unwrap(), true),
            "loopback when allow-listed"
        );
        assert!(
            is_forbidden("10.0.0.1".parse().unwrap(), true),
            "the allow-list is loopback only"
        );
    }

    #[tokio::test]
    async fn a_hostname_resolving_to_a_private_address_is_refused_without_connecting() {
        let resolver = GuardedResolver::with_lookup(false, |host| {
            Box::pin(async move {
                Ok(match host.as_str() {
                    "internal.example" => vec!["10.0.0.5:0".parse().unwrap()],
                    "metadata.example" => vec!["169.254.169.254:0".parse().unwrap()],
                    "mixed.example" => vec![
                        "10.0.0.5:0".parse().unwrap(),
                        "93.184.216.34:0".parse().unwrap(),
                    ],
                    _ => vec![],
                })
            })
        });
        assert!(resolver.allowed("internal.example").await.is_err());
        assert!(resolver.allowed("metadata.example").await.is_err());
        assert_eq!(
            resolver.allowed("mixed.example").await.unwrap(),
            vec!["93.184.216.34:0".parse().unwrap()]
        );
    }
}
